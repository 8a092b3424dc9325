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
