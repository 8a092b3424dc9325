"""Expanding 1x1 NCHW convolutions with a bias, residual or ReLU on the
package's own kernel (stride 1, no padding or groups, at most 128 input
channels and at least twice as many outputs, CPUs with AVX-512F), against
the stock layers: ConvBNReLU in eval (outputs, dx, dresidual), odd planes
whose pixels end mid-panel, output channels that end mid-tile, bias,
residual, with and without ReLU, outputs large enough for streaming stores;
that the kernel is really what runs those shapes (PADDLE_FASTCONV_CONV1X1=0
gives oneDNN's sgemm result, different in the last bits) and only those;
and random qualifying shapes (hypothesis, derandomized)."""
import numpy as np
import paddle
import pytest
from hypothesis import given
from hypothesis import strategies as st

import paddle_fastconv as pf
from helpers import input_shape, leaf, make_pair, stock_forward
from test_properties import _check_conv_case
from tolerances import assert_close

ON = pf.conv1x1_status() == "on"
needs_kernel = pytest.mark.skipif(not ON, reason="1x1 kernel off here: %s"
                                  % pf.conv1x1_status())

# cin, cout, conv bias, batch, (H, W). The kernel works on panels of 64
# pixels and tiles of 6 output channels: 5x7 is one partial panel, 9x9 a
# full one plus 17 pixels, 13x11 two plus 15; 40 and 70 outputs end
# mid-tile; batch 3 splits an image between the two threads' pixel shares.
CASES = [
    (16, 32, False, 2, (5, 7)),
    (3, 40, True, 1, (9, 9)),
    (32, 70, False, 3, (13, 11)),
    (64, 256, True, 2, (8, 8)),
    (128, 256, False, 1, (6, 5)),
]
VARIANTS = [("relu", False), ("relu", True), ("none", False), ("none", True)]


def _ids(case):
    cin, cout, b, n, hw = case
    return "c%d-%d%s_n%d_%dx%d" % (cin, cout, "_bias" if b else "", n, *hw)


def _eval_pair(case, act, with_res, seed=1):
    """Fused and stock NCHW eval outputs and the gradients of both."""
    cin, cout, b, n, hw = case
    fused, conv, bn = make_pair(cin, cout, 1, 1, 0, 1, 1, b, act, "NCHW", seed=seed)
    for m in (fused, conv, bn):
        m.eval()
    rng = np.random.default_rng(seed + 100)
    x_np = rng.normal(0.3, 1.0, input_shape(n, cin, hw, "NCHW")).astype("float32")
    xs = leaf(x_np), leaf(x_np)
    out_shape = [n, cout, *hw]
    rs = (None, None)
    if with_res:
        r_np = rng.normal(0, 1, out_shape).astype("float32")
        rs = leaf(r_np), leaf(r_np)
    y1 = fused(xs[0], rs[0])
    y2 = stock_forward(conv, bn, act, xs[1], rs[1])
    dy = paddle.to_tensor(rng.normal(0, 1, out_shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    return (y1, y2), xs, rs


@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv_bn_act_eval_matches_stock(case, act, with_res):
    ys, xs, rs = _eval_pair(case, act, with_res)
    assert_close(ys[0], ys[1], "out", what="y")
    assert_close(xs[0].grad, xs[1].grad, "grad", what="dx")
    if with_res:
        assert_close(rs[0].grad, rs[1].grad, "grad", what="dresidual")


@pytest.mark.parametrize("hw", [(56, 56), (53, 53)], ids=["streaming", "rows-unaligned"])
def test_large_outputs_match_stock(hw):
    """Outputs of 16 MiB and more are written with streaming stores where
    every row starts 64-byte aligned (56x56); 53x53 rows are not, and take
    plain stores."""
    paddle.seed(3)
    fused, conv, bn = make_pair(32, 256, 1, 1, 0, 1, 1, False, "relu", "NCHW", seed=3)
    for m in (fused, conv, bn):
        m.eval()
    rng = np.random.default_rng(4)
    x = paddle.to_tensor(rng.normal(size=(6, 32, *hw)).astype("float32"))
    r = paddle.to_tensor(rng.normal(size=(6, 256, *hw)).astype("float32"))
    with paddle.no_grad():
        y = fused(x, r)
        assert y.numel() * 4 >= 16 << 20
        assert_close(y, stock_forward(conv, bn, "relu", x, r), "out")


def _run(case, monkeypatch, off):
    if off:
        monkeypatch.setenv("PADDLE_FASTCONV_CONV1X1", "0")
    pf.clear_caches()  # plans read PADDLE_FASTCONV_CONV1X1 when built
    try:
        paddle.seed(12)  # the same filters (Paddle's initializer) every call
        ys, _, _ = _eval_pair(case, "relu", True)
        return ys[0].numpy(), ys[1]
    finally:
        monkeypatch.delenv("PADDLE_FASTCONV_CONV1X1", raising=False)
        pf.clear_caches()


@needs_kernel
def test_qualifying_shapes_run_on_the_kernel(monkeypatch):
    """Both paths match stock, and they differ in the last bits: the shape
    did not silently stay on oneDNN's sgemm."""
    case = CASES[3]
    mine, expected = _run(case, monkeypatch, off=False)
    assert pf.conv1x1_status() == "on"
    monkeypatch.setenv("PADDLE_FASTCONV_CONV1X1", "0")
    assert pf.conv1x1_status() == "off: PADDLE_FASTCONV_CONV1X1=0"
    monkeypatch.delenv("PADDLE_FASTCONV_CONV1X1")
    sgemm, _ = _run(case, monkeypatch, off=True)
    assert_close(paddle.to_tensor(mine), expected, "out", what="kernel")
    assert_close(paddle.to_tensor(sgemm), expected, "out", what="sgemm")
    assert not np.array_equal(mine, sgemm)


# not expanding (64 -> 64, 256 -> 64) or too many inputs (192 -> 384)
OTHERS = [(64, 64, False, 2, (8, 8)), (256, 64, False, 2, (6, 6)),
          (192, 384, False, 1, (6, 6))]


@needs_kernel
@pytest.mark.parametrize("case", OTHERS, ids=_ids)
def test_other_shapes_stay_on_sgemm(case, monkeypatch):
    """Shapes the kernel is not preferred for give the sgemm result bit for
    bit."""
    auto, _ = _run(case, monkeypatch, off=False)
    sgemm, _ = _run(case, monkeypatch, off=True)
    np.testing.assert_array_equal(auto, sgemm)


@st.composite
def _conv1x1_cases(draw):
    """NCHW eval cases the kernel takes: 1x1, stride 1, no padding."""
    cin = draw(st.integers(1, 128))
    return dict(fmt="NCHW", groups=1, cin=cin, cout=draw(st.integers(2 * cin, 2 * cin + 80)),
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
