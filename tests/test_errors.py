"""Bad input gets a Python exception that names the op and the argument; the
process keeps working and the next correct call is right."""
import numpy as np
import paddle
import pytest

import paddle_fastconv as pf
from paddle_fastconv import conv_bn_act
from helpers import make_pair, stock_forward
from tolerances import assert_close


def _params(cout=8):
    return dict(bn_weight=paddle.ones([cout]), bn_bias=paddle.zeros([cout]),
                running_mean=paddle.zeros([cout]), running_var=paddle.ones([cout]))


W = paddle.randn([8, 4, 3, 3])


@pytest.mark.parametrize("x,weight,kwargs,exc,msg", [
    (paddle.randn([4, 6, 6]), W, {}, ValueError, "'x' must be 4-D"),
    (paddle.randn([2, 5, 6, 6]), W, {}, ValueError, "'x' has 5 channels"),
    (paddle.randn([2, 6, 6, 5]), W, {"data_format": "NHWC"}, ValueError, "'x' has 5 channels"),
    (paddle.randint(0, 3, [2, 4, 6, 6]), W, {}, TypeError, "'x' must be float32"),
    (paddle.randn([2, 4, 6, 6]), W.astype("float64"), {}, TypeError, "'weight'"),
    (paddle.randn([2, 4, 6, 6]), W, {"data_format": "NCDHW"}, ValueError, "'data_format'"),
    (paddle.randn([2, 4, 6, 6]), W, {"act": "gelu"}, ValueError, "'act'"),
    (paddle.randn([0, 4, 6, 6]), W, {}, ValueError, "empty batch"),
    (paddle.randn([2, 4, 0, 6]), W, {}, ValueError, "'x' has a zero-size dimension"),
    (paddle.randn([2, 0, 6, 6]), paddle.randn([8, 0, 3, 3]), {}, ValueError,
     "'x' has a zero-size dimension"),
    (paddle.randn([2, 4, 6, 6]), paddle.randn([8, 4, 0, 3]), {}, ValueError,
     "'weight' has a zero-size dimension"),
    (paddle.randn([2, 4, 6, 6]), W, {"epsilon": -1e-5}, ValueError, "'epsilon'"),
    (paddle.randn([2, 4, 6, 6]), W, {"momentum": "0.9"}, TypeError, "'momentum'"),
    (paddle.randn([2, 4, 6, 6]), W, {"training": "yes"}, TypeError, "'training'"),
    (paddle.randn([2, 4, 6, 6]), W, {"dilation": (1, 0)}, ValueError, "'dilation'"),
    (paddle.randn([2, 4, 6, 6]), W, {"stride": (1, 2, 3)}, TypeError, "'stride'"),
    (paddle.randn([2, 4, 6, 6]), W, {"bias": paddle.zeros([8, 1])}, ValueError, "'bias'"),
    ([[1.0]], W, {}, TypeError, "'x' must be a paddle.Tensor"),
    (paddle.randn([2, 4, 6, 6]), W, {"stride": 0}, ValueError, "'stride'"),
    (paddle.randn([2, 4, 6, 6]), W, {"padding": -1}, ValueError, "'padding'"),
    (paddle.randn([2, 4, 6, 6]), W, {"padding": "FULL"}, ValueError, "'padding'"),
    (paddle.randn([2, 4, 6, 6]), W, {"groups": 3}, ValueError, "channels"),
    (paddle.randn([2, 4, 6, 6]), W, {"residual": paddle.randn([2, 8, 5, 5])}, ValueError,
     "'residual' must have the output shape"),
    (paddle.randn([2, 4, 2, 2]), W, {}, ValueError, "too small"),
    (paddle.randn([1, 4, 3, 3]), W, {}, ValueError, "one value per channel"),
])
def test_bad_input_raises_and_process_survives(x, weight, kwargs, exc, msg):
    with pytest.raises(exc, match=msg.replace("(", r"\(")) as info:
        conv_bn_act(x, weight, **_params(), **kwargs)
    assert "fastconv_conv_bn_act" in str(info.value)
    # the next correct call works and is right
    fused, conv, bn = make_pair(4, 8, 3, 1, 1)
    xx = paddle.randn([2, 4, 6, 6])
    assert_close(fused(xx), stock_forward(conv, bn, "relu", xx), "out")


@pytest.mark.parametrize("name,bad", [
    ("bn_weight", paddle.ones([7])),
    ("running_var", paddle.ones([8], "float64")),
    ("running_mean", paddle.ones([8, 1])),
])
def test_bad_bn_parameters(name, bad):
    p = _params()
    p[name] = bad
    with pytest.raises((ValueError, TypeError), match="'%s'" % name):
        conv_bn_act(paddle.randn([2, 4, 6, 6]), W, **p)


def test_bad_state_dict_shape_is_caught_before_cpp():
    fused = pf.ConvBNReLU(4, 8, 3)
    # Paddle's set_state_dict warns and skips mismatched shapes; force one in.
    fused.bn._variance = paddle.create_parameter([5], "float32")
    with pytest.raises(ValueError, match="'running_var' must have shape \\[8\\]"):
        fused(paddle.randn([2, 4, 6, 6]))


def test_cpu_half_precision_refused_clearly():
    x = paddle.randn([2, 4, 6, 6]).astype("float16")
    with pytest.raises(Exception, match="on CPU must be float32"):
        conv_bn_act(x, W.astype("float16"), **_params())


@pytest.mark.parametrize("kwargs,msg", [
    (dict(in_channels=0, out_channels=4, kernel_size=3), "'in_channels'"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, act="sigmoid"), "'act'"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, data_format="NDHWC"), "'data_format'"),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), "'groups'"),
    (dict(in_channels=4, out_channels=4, kernel_size=(3, 3, 3)), "'kernel_size'"),
])
def test_layer_constructor_validation(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        pf.ConvBNReLU(**kwargs)


def test_from_layers_rejects_wrong_types():
    with pytest.raises(TypeError, match="'conv'"):
        pf.ConvBNReLU.from_layers(paddle.nn.Linear(2, 2), paddle.nn.BatchNorm2D(2))
    with pytest.raises(ValueError, match="padding_mode"):
        pf.ConvBNReLU.from_layers(paddle.nn.Conv2D(2, 4, 3, padding_mode="reflect"),
                                  paddle.nn.BatchNorm2D(4))


def test_nan_propagates_like_stock():
    fused, conv, bn = make_pair(4, 8, 3, 1, 1, act="none")
    fused.eval(), conv.eval(), bn.eval()
    x = paddle.randn([2, 4, 6, 6])
    x[0, 0, 2, 2] = float("nan")
    with paddle.no_grad():
        a, b = fused(x).numpy(), stock_forward(conv, bn, "none", x).numpy()
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))


def test_zero_output_channels_refused():
    c = 0
    with pytest.raises(ValueError, match="'weight' has a zero-size dimension"):
        conv_bn_act(paddle.randn([2, 4, 6, 6]), paddle.randn([c, 4, 3, 3]),
                    paddle.ones([c]), paddle.zeros([c]), paddle.zeros([c]), paddle.ones([c]))


@pytest.mark.parametrize("case", ["zero_out_channels", "channel_mismatch", "bad_attr",
                                  "bn_shape", "bad_layout"])
def test_cpp_checks_without_python_validation(case):
    """The op's own C++ checks (what a static graph or a direct caller
    reaches): an exception naming the op and argument, never an abort."""
    from paddle_fastconv._loader import OPS
    x, w, c = paddle.randn([2, 4, 6, 6]), paddle.randn([8, 4, 3, 3]), 8
    attrs = dict(strides=[1, 1], pads=[0, 0, 0, 0], dil=[1, 1], fmt="NCHW", act="relu")
    if case == "zero_out_channels":
        w, c = paddle.randn([0, 4, 3, 3]), 0
    elif case == "channel_mismatch":
        x = paddle.randn([2, 5, 6, 6])
    elif case == "bad_attr":
        attrs["act"] = "gelu"
    elif case == "bad_layout":
        attrs["fmt"] = "NDHWC"
    p = [paddle.ones([c]), paddle.zeros([c]), paddle.zeros([c]), paddle.ones([c])]
    if case == "bn_shape":
        p[3] = paddle.ones([c + 1])
    with pytest.raises(Exception, match="fastconv_conv_bn_act: argument"):
        OPS["fastconv_conv_bn_act"](x, w, paddle.zeros([1, 1]), *p, paddle.zeros([1]),
                                    attrs["strides"], attrs["pads"], attrs["dil"], 1,
                                    attrs["fmt"], attrs["act"], True, 0.9, 1e-5, True)
    fused, conv, bn = make_pair(4, 8, 3, 1, 1)
    xx = paddle.randn([2, 4, 6, 6])
    assert_close(fused(xx), stock_forward(conv, bn, "relu", xx), "out")


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_non_contiguous_inputs_are_correct(fmt):
    """Strided views (transposes, slices) as x, residual and weight give the
    stock result, forward and backward."""
    fused, conv, bn = make_pair(4, 8, 3, 1, 1, data_format=fmt)
    if fmt == "NCHW":
        x_np = np.random.default_rng(0).normal(size=[2, 9, 9, 4]).astype("float32")
        x = paddle.to_tensor(x_np).transpose([0, 3, 1, 2])  # a strided NCHW view
    else:
        x = paddle.randn([2, 18, 9, 4])[:, ::2]  # every other row
    res = paddle.randn([2, 9, 9, 16])[..., ::2]
    res = res.transpose([0, 3, 1, 2]) if fmt == "NCHW" else res
    w = paddle.randn([4, 8, 3, 3]).transpose([1, 0, 2, 3])
    if hasattr(x, "is_contiguous"):  # Paddle 3: these really are strided views
        assert not x.is_contiguous() and not res.is_contiguous()
    fused.conv.weight.set_value(w), conv.weight.set_value(w)
    xs, xf = x.detach(), x.detach()
    xs.stop_gradient = xf.stop_gradient = False
    yf, ys = fused(xf, res), stock_forward(conv, bn, "relu", xs, res)
    assert_close(yf, ys, "out", what="y")
    yf.sum().backward(), ys.sum().backward()
    assert_close(xf.grad, xs.grad, "grad", what="dx")
    assert_close(fused.conv.weight.grad, conv.weight.grad, "grad", what="dW")


@pytest.mark.gpu
def test_mixed_devices_refused():
    x = paddle.randn([2, 4, 6, 6]).cuda()
    with pytest.raises(ValueError, match="'weight' is on .*cpu"):
        conv_bn_act(x, W.cpu(), **{k: v.cuda() for k, v in _params().items()})


def test_inf_propagates_like_stock():
    fused, conv, bn = make_pair(4, 8, 3, 1, 1, act="none")
    fused.eval(), conv.eval(), bn.eval()
    x = paddle.randn([2, 4, 6, 6])
    x[1, 2, 3, 3] = float("inf")
    with paddle.no_grad():
        a, b = fused(x).numpy(), stock_forward(conv, bn, "none", x).numpy()
    np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))


@pytest.mark.parametrize("case", ["stats_gpu_refused_or_bad_bias", "apply_bad_mean",
                                  "backward_bad_sums", "backward_bad_count"])
def test_sync_bn_phase_ops_check_their_arguments(case):
    """The SyncBatchNorm phase ops, called directly: exceptions naming the op
    and the argument, never an abort."""
    from paddle_fastconv._loader import OPS
    x, w = paddle.randn([2, 4, 6, 6]), paddle.randn([8, 4, 3, 3])
    conv = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "NCHW")
    z, stats = OPS["fastconv_sync_bn_conv_stats"](x, w, paddle.zeros([1, 1]), *conv)
    assert list(z.shape) == [2, 8, 6, 6] and list(stats.shape) == [3, 8]
    c = paddle.ones([8])
    with pytest.raises(Exception, match="fastconv_sync_bn: argument"):
        if case == "stats_gpu_refused_or_bad_bias":
            OPS["fastconv_sync_bn_conv_stats"](x, w, paddle.zeros([5]), *conv)
        elif case == "apply_bad_mean":
            OPS["fastconv_sync_bn_apply"](z, paddle.ones([7]), c, c, c, paddle.zeros([1]),
                                          "NCHW", "relu")
        else:
            sums = paddle.zeros([2, 8], "float64")
            if case == "backward_bad_sums":
                sums = paddle.zeros([2, 8], "float32")
            count = 1 if case == "backward_bad_count" else 72
            OPS["fastconv_sync_bn_backward"](z, z, z, x, w, c, c, c, sums, *conv[:4],
                                             "NCHW", "relu", count, False)
    fused, conv_l, bn = make_pair(4, 8, 3, 1, 1)
    xx = paddle.randn([2, 4, 6, 6])
    assert_close(fused(xx), stock_forward(conv_l, bn, "relu", xx), "out")
