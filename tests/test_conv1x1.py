"""Expanding 1x1 convolutions on the package's own kernels (stride 1, no
padding or groups, at most 128 input channels and at least twice as many
outputs, CPUs with AVX-512F): NCHW ones with a bias, residual or ReLU, and
NHWC ones with output channels in multiples of 16 in eval plans with cached
weights. Against the stock layers: ConvBNReLU in eval (outputs, dx,
dresidual), odd planes whose pixels end mid-panel or mid-tile, output
channels that end mid-tile, bias, residual, with and without ReLU, outputs
large enough for streaming stores, the bare onednn_conv2d; that the kernels
are really what runs those shapes (PADDLE_FASTCONV_CONV1X1=0 gives oneDNN's
result, different in the last bits) and only those; and random qualifying
shapes (hypothesis, derandomized)."""
import numpy as np
import paddle
import pytest
from hypothesis import given
from hypothesis import strategies as st

import paddle_fastconv as pf
from paddle_fastconv import ops
from helpers import (assert_eval_pair_close, assert_weight_change_seen, eval_pair,
                     input_shape, make_pair, stock_forward)
from test_properties import _check_conv_case
from tolerances import assert_close

ON = pf.conv1x1_status() == "on"
needs_kernel = pytest.mark.skipif(not ON, reason="1x1 kernel off here: %s"
                                  % pf.conv1x1_status())

# cin, cout, conv bias, batch, (H, W). The NCHW kernel works on panels of
# 64 pixels and tiles of 6 output channels: 5x7 is one partial panel, 9x9 a
# full one plus 17 pixels, 13x11 two plus 15; 40 and 70 outputs end
# mid-tile; batch 3 splits an image between the two threads' pixel shares.
# The NHWC one works on blocks of 96 pixels, tiles of 6 pixels and 64
# output channels: 32, 48 and 80 (64 + 16) outputs end mid-tile, as do
# 35, 81 and 429 pixels. 40 and 70 outputs (not multiples of 16) stay on
# oneDNN in NHWC.
CASES = [
    (16, 32, False, 2, (5, 7)),
    (3, 40, True, 1, (9, 9)),
    (32, 70, False, 3, (13, 11)),
    (64, 256, True, 2, (8, 8)),
    (128, 256, False, 1, (6, 5)),
    (24, 48, True, 1, (9, 9)),
    (40, 80, False, 3, (13, 11)),
]
FORMATS = ["NCHW", "NHWC"]
VARIANTS = [("relu", False), ("relu", True), ("none", False), ("none", True)]


def _ids(case):
    cin, cout, b, n, hw = case
    return "c%d-%d%s_n%d_%dx%d" % (cin, cout, "_bias" if b else "", n, *hw)


def _eval_pair(case, act, with_res, fmt, seed=1):
    cin, cout, b, n, hw = case
    return eval_pair(cin, cout, 1, 0, b, n, hw, fmt, act, with_res, seed)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv_bn_act_eval_matches_stock(case, act, with_res, fmt):
    assert_eval_pair_close(_eval_pair(case, act, with_res, fmt), with_res)


@pytest.mark.parametrize("fmt,hw", [("NCHW", (56, 56)), ("NCHW", (53, 53)), ("NHWC", (53, 53))],
                         ids=["NCHW-streaming", "NCHW-rows-unaligned", "NHWC-streaming"])
def test_large_outputs_match_stock(fmt, hw):
    """Outputs of 16 MiB and more are written with streaming stores where
    the vectors are 64-byte aligned: every NCHW row at 56x56, not at 53x53
    (plain stores); NHWC pixels of 256 channels always."""
    paddle.seed(3)
    fused, conv, bn = make_pair(32, 256, 1, 1, 0, 1, 1, False, "relu", fmt, seed=3)
    for m in (fused, conv, bn):
        m.eval()
    rng = np.random.default_rng(4)
    x = paddle.to_tensor(rng.normal(size=input_shape(6, 32, hw, fmt)).astype("float32"))
    r = paddle.to_tensor(rng.normal(size=input_shape(6, 256, hw, fmt)).astype("float32"))
    with paddle.no_grad():
        y = fused(x, r)
        assert y.numel() * 4 >= 16 << 20
        assert_close(y, stock_forward(conv, bn, "relu", x, r), "out")


def _run(case, fmt, monkeypatch, off):
    if off:
        monkeypatch.setenv("PADDLE_FASTCONV_CONV1X1", "0")
    pf.clear_caches()  # plans read PADDLE_FASTCONV_CONV1X1 when built
    try:
        paddle.seed(12)  # the same filters (Paddle's initializer) every call
        ys, _, _ = _eval_pair(case, "relu", True, fmt)
        return ys[0].numpy(), ys[1]
    finally:
        monkeypatch.delenv("PADDLE_FASTCONV_CONV1X1", raising=False)
        pf.clear_caches()


@needs_kernel
@pytest.mark.parametrize("fmt", FORMATS)
def test_qualifying_shapes_run_on_the_kernel(fmt, monkeypatch):
    """Both paths match stock, and they differ in the last bits: the shape
    did not silently stay on oneDNN."""
    case = CASES[3]
    mine, expected = _run(case, fmt, monkeypatch, off=False)
    assert pf.conv1x1_status() == "on"
    monkeypatch.setenv("PADDLE_FASTCONV_CONV1X1", "0")
    assert pf.conv1x1_status() == "off: PADDLE_FASTCONV_CONV1X1=0"
    monkeypatch.delenv("PADDLE_FASTCONV_CONV1X1")
    onednn, _ = _run(case, fmt, monkeypatch, off=True)
    assert_close(paddle.to_tensor(mine), expected, "out", what="kernel")
    assert_close(paddle.to_tensor(onednn), expected, "out", what="oneDNN")
    assert not np.array_equal(mine, onednn)


# not expanding (64 -> 64, 256 -> 64), too many inputs (192 -> 384), and
# for NHWC outputs that are no multiple of 16 (3 -> 40)
OTHERS = [(64, 64, False, 2, (8, 8)), (256, 64, False, 2, (6, 6)),
          (192, 384, False, 1, (6, 6))]


@needs_kernel
@pytest.mark.parametrize("fmt,case", [(f, c) for f in FORMATS for c in OTHERS]
                         + [("NHWC", CASES[1])],
                         ids=lambda v: v if isinstance(v, str) else _ids(v))
def test_other_shapes_stay_on_onednn(fmt, case, monkeypatch):
    """Shapes the kernels are not preferred for give oneDNN's result bit for
    bit."""
    auto, _ = _run(case, fmt, monkeypatch, off=False)
    onednn, _ = _run(case, fmt, monkeypatch, off=True)
    np.testing.assert_array_equal(auto, onednn)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cache_weights", [True, False])
def test_bare_onednn_conv2d_matches_paddle(fmt, cache_weights):
    """Without bias or ReLU: NHWC with cached weights runs the kernel, the
    rest oneDNN (the NCHW kernel only replaces an epilogue pass)."""
    rng = np.random.default_rng(9)
    x = paddle.to_tensor(rng.normal(size=input_shape(2, 16, (9, 7), fmt)).astype("float32"))
    w = paddle.to_tensor(rng.normal(0, 0.2, (48, 16, 1, 1)).astype("float32"))
    with paddle.no_grad():
        y = ops.onednn_conv2d(x, w, 1, 0, data_format=fmt, cache_weights=cache_weights)
        expected = paddle.nn.functional.conv2d(x, w, data_format=fmt)
    assert_close(y, expected, "out")


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_after_a_weight_change_uses_the_new_weights(fmt):
    """The transposed NHWC filters are part of the folded-weight cache: a
    changed filter is seen on the next eval call."""
    assert_weight_change_seen(16, 64, 1, 0, False, 2, (7, 9), fmt)


@st.composite
def _conv1x1_cases(draw):
    """Eval cases the kernels take: 1x1, stride 1, no padding, expanding
    (NHWC: outputs in multiples of 16)."""
    fmt = draw(st.sampled_from(FORMATS))
    cin = draw(st.integers(1, 128))
    if fmt == "NCHW":
        cout = draw(st.integers(2 * cin, 2 * cin + 80))
    else:
        cout = 16 * draw(st.integers((2 * cin + 15) // 16, (2 * cin + 15) // 16 + 5))
    return dict(fmt=fmt, groups=1, cin=cin, cout=cout,
                k=(1, 1), stride=(1, 1), dilation=(1, 1), padding=0,
                batch=draw(st.integers(1, 3)),
                hw=[draw(st.integers(1, 19)), draw(st.integers(1, 19))], training=False,
                act=draw(st.sampled_from(["relu", "none"])), bias=draw(st.booleans()),
                residual=draw(st.booleans()), engine="onednn",
                seed=draw(st.integers(0, 2 ** 16)))


@given(_conv1x1_cases())
def test_random_qualifying_shapes_match_stock(c):
    """Hypothesis over the shapes the kernel takes (the same checks as
    tests/test_properties.py: outputs, every gradient, running statistics,
    against stock and a float64 twin)."""
    _check_conv_case(c)
