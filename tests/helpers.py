"""Builders shared by the parity tests: a fused layer and the stock layers
with the same weights, and the stock forward that is the oracle."""
import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

import paddle_fastconv as pf


def randomize_bn(bn, rng):
    """Non-trivial BN parameters and statistics, so eval folding is exercised."""
    c = bn._num_features
    bn.weight.set_value(rng.uniform(0.5, 1.5, c).astype("float32"))
    bn.bias.set_value(rng.normal(0, 0.2, c).astype("float32"))
    bn._mean.set_value(rng.normal(0, 0.5, c).astype("float32"))
    bn._variance.set_value(rng.uniform(0.5, 2.0, c).astype("float32"))


def make_pair(cin, cout, k, stride=1, padding=0, dilation=1, groups=1, bias=False,
              act="relu", data_format="NCHW", momentum=0.9, epsilon=1e-5, seed=0):
    rng = np.random.default_rng(seed)
    fused = pf.ConvBNReLU(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                          groups=groups, bias=bias, act=act, data_format=data_format,
                          momentum=momentum, epsilon=epsilon)
    conv = nn.Conv2D(cin, cout, k, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias_attr=None if bias else False,
                     data_format=data_format)
    bn = nn.BatchNorm2D(cout, momentum=momentum, epsilon=epsilon, data_format=data_format)
    randomize_bn(fused.bn, rng)
    if bias:
        fused.conv.bias.set_value(rng.normal(0, 0.5, cout).astype("float32"))
    conv.set_state_dict(fused.conv.state_dict())
    bn.set_state_dict(fused.bn.state_dict())
    return fused, conv, bn


def stock_forward(conv, bn, act, x, residual=None):
    y = bn(conv(x))
    if residual is not None:
        y = y + residual
    return F.relu(y) if act == "relu" else y


def leaf(array, stop_gradient=False):
    t = paddle.to_tensor(array)
    t.stop_gradient = stop_gradient
    return t


def input_shape(n, c, hw, data_format):
    h, w = hw
    return [n, c, h, w] if data_format == "NCHW" else [n, h, w, c]


# Paddle 2.x's legacy static graph fails while appending this package's
# custom-op backward (a vector range check inside Paddle); Paddle 3 (PIR) works.
LEGACY_STATIC = int(paddle.__version__.split(".")[0]) < 3 and paddle.__version__ != "0.0.0"
LEGACY_STATIC_REASON = ("Paddle 2.x's legacy static graph fails while appending this custom "
                        "op's backward (vector range check); Paddle 3 (PIR) works")


def eval_pair(cin, cout, k, padding, bias, n, hw, fmt, act, with_res, seed=1):
    """A fused layer and its stock twin in eval, run on the same input (and
    residual): the two outputs, after taking the gradients of both (eval
    keeps taking gradients through the folded op: frozen-BN fine-tuning),
    and the inputs and residuals whose .grad they filled."""
    fused, conv, bn = make_pair(cin, cout, k, 1, padding, 1, 1, bias, act, fmt, seed=seed)
    for m in (fused, conv, bn):
        m.eval()
    rng = np.random.default_rng(seed + 100)
    x_np = rng.normal(0.3, 1.0, input_shape(n, cin, hw, fmt)).astype("float32")
    xs = leaf(x_np), leaf(x_np)
    with paddle.no_grad():
        out_shape = conv(leaf(x_np, True)).shape
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


def assert_eval_pair_close(pair, with_res):
    """eval_pair's outputs, dx and dresidual agree within the fp32 table."""
    from tolerances import assert_close
    ys, xs, rs = pair
    assert_close(ys[0], ys[1], "out", what="y")
    assert_close(xs[0].grad, xs[1].grad, "grad", what="dx")
    if with_res:
        assert_close(rs[0].grad, rs[1].grad, "grad", what="dresidual")


def assert_weight_change_seen(cin, cout, k, padding, bias, n, hw, fmt):
    """An eval layer whose filter changes gives the new result on the next
    call: its cached eval weights (folded, transformed or transposed) are
    rebuilt."""
    from tolerances import assert_close
    fused, conv, bn = make_pair(cin, cout, k, 1, padding, 1, 1, bias, "relu", fmt, seed=2)
    for m in (fused, conv, bn):
        m.eval()
    x = paddle.to_tensor(np.random.default_rng(6).normal(
        size=input_shape(n, cin, hw, fmt)).astype("float32"))
    with paddle.no_grad():
        assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out", what="before")
        changed = conv.weight.numpy() * -0.5 + 0.01
        conv.weight.set_value(changed)
        fused.conv.weight.set_value(changed)
        assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out", what="after")


def predict(path, x):
    """Runs a model saved by paddle.jit.save at `path` with paddle.inference
    (CPU) on x; returns every output as numpy, in the predictor's order. The
    predictor leaves the calling thread at one OpenMP thread: the suite's
    count is restored afterwards."""
    import os
    from paddle import inference
    prog = path + (".json" if os.path.exists(path + ".json") else ".pdmodel")
    cfg = inference.Config(prog, path + ".pdiparams")
    cfg.disable_gpu()
    cfg.disable_glog_info()
    threads = pf.get_num_threads()
    pred = inference.create_predictor(cfg)
    pred.get_input_handle(pred.get_input_names()[0]).copy_from_cpu(x.numpy())
    pred.run()
    pf.set_num_threads(threads)
    return [pred.get_output_handle(n).copy_to_cpu() for n in pred.get_output_names()]
