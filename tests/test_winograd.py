"""Eval 3x3 convolutions on the Winograd F(4x4, 3x3) kernel (stride 1,
ungrouped, channels multiples of 16, output planes of 14x14 or more, CPUs
with AVX-512F) against the stock layers: ConvBNReLU, the ResNet blocks, the
Inception block and onednn_conv2d, NCHW and NHWC, odd sizes, asymmetric
padding, bias, residual, with and without ReLU; plus that the kernel is
really what runs those shapes (PADDLE_FASTCONV_WINOGRAD=0 gives oneDNN's
direct result, different in the last bits) and only those; and random
qualifying shapes (hypothesis, derandomized)."""
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

ON = pf.winograd_status() == "on"
needs_winograd = pytest.mark.skipif(not ON, reason="Winograd kernel off here: %s"
                                    % pf.winograd_status())

# cin, cout, padding, conv bias, batch, (H, W): every case qualifies.
# 16 -> 80: a 64-channel GEMM pass plus a 16-channel one; 64 -> 80: blocks
# of 6 tiles (C + O > 128), else 12; batches whose tiles end mid-block.
CASES = [
    (16, 32, 1, False, 2, (14, 14)),
    (32, 16, 1, True, 1, (15, 17)),
    (16, 48, [2, 0, 1, 1], False, 2, (15, 16)),
    (48, 16, 0, True, 3, (17, 18)),
    (16, 80, 1, False, 2, (14, 19)),
    (64, 80, 1, True, 1, (21, 14)),
]
VARIANTS = [("relu", False), ("relu", True), ("none", False), ("none", True)]


def _ids(case):
    cin, cout, p, b, n, hw = case
    return "c%d-%d_p%s%s_n%d_%dx%d" % (cin, cout, str(p).replace(" ", ""),
                                       "_bias" if b else "", n, *hw)


def _eval_pair(case, fmt, act, with_res, seed=1):
    cin, cout, p, b, n, hw = case
    return eval_pair(cin, cout, 3, p, b, n, hw, fmt, act, with_res, seed)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_conv_bn_act_eval_matches_stock(case, act, with_res, fmt):
    assert_eval_pair_close(_eval_pair(case, fmt, act, with_res), with_res)


def _fused_eval_output(case, fmt, act="relu", with_res=True):
    pf.clear_caches()  # plans read PADDLE_FASTCONV_WINOGRAD when built
    paddle.seed(12)  # the same filters (Paddle's initializer) every call
    ys, _, _ = _eval_pair(case, fmt, act, with_res)
    return ys[0].numpy(), ys[1]


@needs_winograd
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_qualifying_shapes_run_on_the_winograd_kernel(fmt, monkeypatch):
    """Both algorithms match stock, and they differ in the last bits: the
    shape did not silently stay on oneDNN's kernel."""
    case = CASES[2]
    try:
        wino, expected = _fused_eval_output(case, fmt)
        monkeypatch.setenv("PADDLE_FASTCONV_WINOGRAD", "0")
        assert pf.winograd_status() == "off: PADDLE_FASTCONV_WINOGRAD=0"
        direct, _ = _fused_eval_output(case, fmt)
    finally:
        monkeypatch.delenv("PADDLE_FASTCONV_WINOGRAD", raising=False)
        pf.clear_caches()
    assert_close(paddle.to_tensor(wino), expected, "out", what="winograd")
    assert_close(paddle.to_tensor(direct), expected, "out", what="direct")
    assert not np.array_equal(wino, direct)


# stride 2; 8 channels; a 13-wide output plane; groups; dilation
OTHERS = [
    dict(cin=16, cout=16, s=2, p=1, d=1, g=1, hw=(28, 28)),
    dict(cin=8, cout=16, s=1, p=1, d=1, g=1, hw=(16, 16)),
    dict(cin=16, cout=16, s=1, p=1, d=1, g=1, hw=(16, 13)),
    dict(cin=32, cout=32, s=1, p=1, d=1, g=2, hw=(16, 16)),
    dict(cin=16, cout=16, s=1, p=2, d=2, g=1, hw=(16, 16)),
]


@needs_winograd
@pytest.mark.parametrize("o", OTHERS, ids=["stride2", "c8", "13wide", "groups2", "dil2"])
def test_other_shapes_stay_on_onednn(o, monkeypatch):
    """Shapes the kernel does not take give the direct result bit for bit."""
    def run():
        pf.clear_caches()
        paddle.seed(13)
        fused, conv, bn = make_pair(o["cin"], o["cout"], 3, o["s"], o["p"], o["d"], o["g"],
                                    False, "relu", "NHWC", seed=4)
        fused.eval()
        x = paddle.to_tensor(np.random.default_rng(5).normal(
            size=input_shape(2, o["cin"], o["hw"], "NHWC")).astype("float32"))
        with paddle.no_grad():
            return fused(x).numpy()
    try:
        auto = run()
        monkeypatch.setenv("PADDLE_FASTCONV_WINOGRAD", "0")
        direct = run()
    finally:
        monkeypatch.delenv("PADDLE_FASTCONV_WINOGRAD", raising=False)
        pf.clear_caches()
    np.testing.assert_array_equal(auto, direct)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_eval_after_a_weight_change_uses_the_new_weights(fmt):
    """The transformed filters are part of the folded-weight cache: a changed
    filter is seen on the next eval call."""
    cin, cout, p, b, n, hw = CASES[0]
    assert_weight_change_seen(cin, cout, 3, p, b, n, hw, fmt)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("kind", ["bottleneck", "basic"])
def test_resnet_blocks_in_eval_match_stock(kind, fmt):
    """The blocks' 3x3 stages (a BasicBlock's second one with the residual
    and the final ReLU on it) on 15x15 planes."""
    from test_resnet_block import _blocks, _compare
    inplanes, planes = (64, 16) if kind == "bottleneck" else (16, 16)
    paddle.seed(0)
    stock, fused = _blocks(kind, inplanes, planes, 1)
    fused.data_format = fmt
    stock.eval(), fused.eval()
    x = paddle.to_tensor(np.random.default_rng(8).normal(
        size=(2, inplanes, 15, 15)).astype("float32"))
    _compare(stock, fused, x, fmt == "NHWC", "%s %s eval" % (kind, fmt))


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("style", ["vision", "classic", "bn"])
def test_inception_in_eval_matches_stock(style, fmt):
    """A block whose 3x3 branch (16 -> 32 at 14x15) qualifies."""
    from test_inception import _compare, _input, _pair
    paddle.seed(11)
    channels = (24, 8, 16, 32, 4, 8, 8)
    stock, fused = _pair(style, fmt, channels)
    stock.eval(), fused.eval()
    _compare(stock, fused, _input(fmt, n=2, h=14, w=15, cin=24), "%s %s" % (style, fmt))


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("algorithm", ["auto", "direct"])
def test_onednn_conv2d_algorithms_match_paddle(algorithm, fmt):
    """GoogLeNet's bias-free stem convolutions (paddle.vision style) run
    here; with cached weights "auto" takes the Winograd kernel."""
    rng = np.random.default_rng(9)
    x = paddle.to_tensor(rng.normal(size=input_shape(2, 16, (15, 14), fmt)).astype("float32"))
    w = paddle.to_tensor(rng.normal(0, 0.2, (32, 16, 3, 3)).astype("float32"))
    with paddle.no_grad():
        y = ops.onednn_conv2d(x, w, 1, 1, data_format=fmt, cache_weights=True,
                              algorithm=algorithm)
        expected = paddle.nn.functional.conv2d(x, w, padding=1, data_format=fmt)
    assert_close(y, expected, "out")


def test_onednn_conv2d_rejects_an_unknown_algorithm():
    x = paddle.zeros([1, 16, 14, 14])
    w = paddle.zeros([16, 16, 3, 3])
    with pytest.raises(ValueError, match="fastconv_onednn_conv2d: argument 'algorithm' "
                                         "must be one of 'auto', 'direct', got 'fast'"):
        ops.onednn_conv2d(x, w, 1, 1, algorithm="fast")



@st.composite
def _winograd_cases(draw):
    """Eval cases the kernel takes: 3x3, stride 1, channels multiples of 16,
    output planes of 14x14 and up, any padding form."""
    form = draw(st.sampled_from(["int", "sides", "SAME", "VALID"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
        pads = [padding] * 4
    elif form == "sides":
        padding = pads = [draw(st.integers(0, 2)) for _ in range(4)]  # t, b, l, r
    else:
        padding, pads = form, ([1] * 4 if form == "SAME" else [0] * 4)
    # input size for an output of 14-21 (SAME keeps the size)
    hw = [draw(st.integers(14, 21)) + 2 - pads[2 * a] - pads[2 * a + 1] for a in (0, 1)]
    return dict(fmt=draw(st.sampled_from(["NCHW", "NHWC"])), groups=1,
                cin=16 * draw(st.integers(1, 3)), cout=16 * draw(st.integers(1, 5)),
                k=(3, 3), stride=(1, 1), dilation=(1, 1), padding=padding,
                batch=draw(st.integers(1, 3)), hw=hw, training=False,
                act=draw(st.sampled_from(["relu", "none"])), bias=draw(st.booleans()),
                residual=draw(st.booleans()), engine="onednn",
                seed=draw(st.integers(0, 2 ** 16)))


@given(_winograd_cases())
def test_random_qualifying_shapes_match_stock(c):
    """Hypothesis over the shapes the kernel takes (the same checks as
    tests/test_properties.py: outputs, every gradient, running statistics)."""
    _check_conv_case(c)
