"""The oneDNN floor of a model: its convolutions alone, run by oneDNN.

`conv_floor(model, x, mode)` records every Conv2D call of one forward of a
(stock or fused) model on x, and returns a callable that runs just those
convolutions with oneDNN's kernels, each pass on the layouts oneDNN prefers:
no reorders, no BatchNorm, ReLU, pooling, classifier, loss or optimizer, and
no framework around them. In eval mode that is each convolution's forward; in
training mode its forward, its weight gradient and, unless its input is the
model's input (images need no gradient), its data gradient.

Timing it gives the least time any engine built on these kernels can take for
the model, and so the most such an engine can gain over stock Paddle on the
machine: stock time / floor time. The fused eval models can go below it:
their qualifying 3x3 convolutions run on this package's Winograd kernel
(fewer multiplications) and their expanding 1x1 ones on its 1x1 kernels,
which oneDNN's direct kernels, and so the floor, do not use. The benchmarks
and `paddle-fastconv bench` report it next to the fused speed.

The passes share three buffers sized for the largest one (a model's worth of
separate tensors would take gigabytes); data that stays in cache between
convolutions can only make the floor lower.
"""
import ctypes

import paddle
from paddle import nn

from . import _args
from ._loader import CLIB
from .nn import _conv_padding

__all__ = ["conv_floor", "conv_calls", "ConvFloor"]

_PASS = {"forward_inference": 0, "forward_training": 1, "backward_data": 2,
         "backward_weights": 3}
MODES = ("eval", "train")

CLIB.fastconv_conv_floor_create.restype = ctypes.c_void_p
CLIB.fastconv_conv_floor_destroy.argtypes = [ctypes.c_void_p]
CLIB.fastconv_conv_floor_add.argtypes = [
    ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int, ctypes.c_int,
    ctypes.c_char_p, ctypes.c_size_t]
CLIB.fastconv_conv_floor_add.restype = ctypes.c_int
CLIB.fastconv_conv_floor_run.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
CLIB.fastconv_conv_floor_run.restype = ctypes.c_int


def _geometry(conv, shape):
    """The 16 numbers the C side takes, for a Conv2D called on `shape`."""
    fmt = conv._data_format
    n, c, h, w = shape if fmt == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    o, _, kh, kw = conv.weight.shape
    stride = _args.pair(conv._stride, "stride", "conv_floor")
    dil = _args.pair(conv._dilation, "dilation", "conv_floor")
    pads = _args.paddings(_conv_padding(conv), "conv_floor", fmt, kernel=(kh, kw), stride=stride,
                          dilation=dil, spatial=(h, w))
    return (n, c, h, w, o, kh, kw, stride[0], stride[1], dil[0], dil[1],
            pads[0], pads[1], pads[2], pads[3], conv._groups)


def conv_calls(model, x):
    """[(geometry, takes_model_input)] for every Conv2D call of one forward
    of `model` on x (under no_grad; the model's mode is left as it is)."""
    if any(getattr(m, "original_layer", None) for m in model.sublayers(include_self=True)):
        raise ValueError("conv_floor: argument 'model' must be a stock model; fuse() has "
                         "replaced some of its layers (pass the unfused model, or "
                         "paddle_fastconv.unfuse(model))")
    convs = [m for m in model.sublayers(include_self=True) if isinstance(m, nn.Conv2D)]
    calls = []

    def hook(layer, inputs):
        calls.append((_geometry(layer, inputs[0].shape), inputs[0] is x))

    handles = [c.register_forward_pre_hook(hook) for c in convs]
    try:
        with paddle.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not calls:
        raise ValueError("conv_floor: the model ran no paddle.nn.Conv2D")
    return calls


class ConvFloor:
    """Runs a list of oneDNN convolution passes per call (see the module
    docstring). `passes` lists (geometry, pass name, times)."""

    def __init__(self, passes):
        self._set = None
        self._set = CLIB.fastconv_conv_floor_create()
        if not self._set:
            raise RuntimeError("conv_floor: this build of paddle_fastconv has no oneDNN "
                               "engine (the installed Paddle ships no oneDNN)")
        self.passes = list(passes)
        err = ctypes.create_string_buffer(512)
        for dims, name, times in self.passes:
            arr = (ctypes.c_int64 * 16)(*dims)
            rc = CLIB.fastconv_conv_floor_add(self._set, arr, _PASS[name], times, err, 512)
            if rc != 0:
                raise RuntimeError("conv_floor: oneDNN refused the %s pass of convolution "
                                   "%s: %s" % (name, dims, err.value.decode()))

    def __call__(self):
        err = ctypes.create_string_buffer(512)
        if CLIB.fastconv_conv_floor_run(self._set, err, 512) != 0:
            raise RuntimeError("conv_floor: %s" % err.value.decode())

    def __del__(self):
        if self._set:
            CLIB.fastconv_conv_floor_destroy(self._set)
            self._set = None


def conv_floor(model, x, mode="eval"):
    """A ConvFloor running the convolutions of `model` on x: for mode 'eval'
    their forward passes, for 'train' also their weight and data gradients
    (no data gradient for a convolution that reads x itself). `model` is a
    stock paddle.nn.Layer; identical convolutions are run as often as the
    model runs them."""
    _args.choice(mode, "mode", MODES, "conv_floor")
    if not isinstance(model, nn.Layer):
        raise TypeError("conv_floor: argument 'model' must be a paddle.nn.Layer, got %s"
                        % type(model).__name__)
    counts = {}
    for dims, is_input in conv_calls(model, x):
        names = ["forward_inference"] if mode == "eval" else \
            ["forward_training", "backward_weights"] + ([] if is_input else ["backward_data"])
        for name in names:
            counts[(dims, name)] = counts.get((dims, name), 0) + 1
    return ConvFloor([(d, n, t) for (d, n), t in counts.items()])
