"""GoogLeNet (Inception v1) with fused Inception blocks.

With batch_norm=False the architecture, outputs (main logits and the two
auxiliary heads) and state-dict keys are those of
paddle.vision.models.GoogLeNet: checkpoints load either way. batch_norm=True
is the BN variant: every convolution is Conv + BatchNorm + ReLU (keys
`..._conv.weight`, `..._bn.weight`, `..._bn._mean`, ...).
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from .nn import Inception, _conv_padding, conv_bn_from_layers
from .nn import Linear as FusedLinear
from .ops import float32_on_cpu, onednn_conv2d, to_channels_last
from .runtime import get_cpu_conv_engine

__all__ = ["GoogLeNet", "ConvLayer", "FusedConv2D"]


def _fast_cpu(x):
    """Whether the oneDNN kernels take x (float32 CPU, dygraph or a CPU-only
    static graph)."""
    return float32_on_cpu(x) and get_cpu_conv_engine() == "onednn"


class FusedConv2D(nn.Layer):
    """A stock Conv2D (bias-free, zero padding) run by the oneDNN kernels on
    float32 CPU tensors and by the stock layer elsewhere (the GPU engine's
    convolution is Paddle's cuDNN one). Holds the Conv2D as `original_layer`
    and registers its parameters under the same names."""

    def __init__(self, conv, data_format=None, nchw_input=False):
        super().__init__()
        if conv.bias is not None or conv._padding_mode != "zeros":
            raise ValueError("FusedConv2D: the Conv2D must have no bias and zero padding")
        self.training = conv.training
        self.original_layer = [conv]
        self.data_format = data_format  # overrides the conv's (channels_last)
        self.nchw_input = nchw_input  # an NCHW input is made NHWC first
        for name, p in conv.named_parameters(include_sublayers=False):
            self.add_parameter(name, p)

    def forward(self, x):
        if self.nchw_input:
            x = to_channels_last(x)
        return _plain_conv(self.original_layer[0], x, self.data_format)


@paddle.jit.not_to_static
def _plain_conv(conv, x, data_format=None):
    """A bias-free stock Conv2D's computation (on `data_format` activations,
    default the conv's own): oneDNN on float32 CPU, Paddle's conv elsewhere.
    Paddle's filters are [O, C, KH, KW] in either layout."""
    fmt = data_format or conv._data_format
    pad = _conv_padding(conv)
    if not isinstance(pad, str) and len(pad) == 4 and isinstance(pad[0], (list, tuple)):
        # Paddle's nested form lists the axes in the conv's own layout
        sp = pad[2:] if conv._data_format == "NCHW" else pad[1:3]
        pad = [sp[0][0], sp[0][1], sp[1][0], sp[1][1]]
    args = (conv._stride, pad, conv._dilation, conv._groups)
    if not _fast_cpu(x):
        if fmt == conv._data_format:
            return conv(x)
        return F.conv2d(x, conv.weight, None, *args, data_format=fmt)
    return onednn_conv2d(x, conv.weight, *args, data_format=fmt)


class ConvLayer(nn.Layer):
    """paddle.vision's GoogLeNet ConvLayer (`_conv`: a bias-free Conv2D,
    "same" padding), optionally with BatchNorm + ReLU (`_bn`); fused=True
    runs it on the fused kernels."""

    def __init__(self, num_channels, num_filters, filter_size, stride=1, batch_norm=False,
                 fused=True):
        super().__init__()
        self._conv = nn.Conv2D(num_channels, num_filters, filter_size, stride=stride,
                               padding=(filter_size - 1) // 2, bias_attr=False)
        self._bn = nn.BatchNorm2D(num_filters) if batch_norm else None
        self.fused = fused

    def forward(self, x):
        if self._bn is not None:
            if self.fused:
                return conv_bn_from_layers(self._conv, self._bn, x, "relu",
                                           training=self.training)
            return F.relu(self._bn(self._conv(x)))
        return _plain_conv(self._conv, x) if self.fused else self._conv(x)


# (input, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection)
_BLOCKS = {
    "3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


def _xavier(channels, filter_size):
    stdv = (3.0 / (filter_size ** 2 * channels)) ** 0.5
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-stdv, stdv))


class GoogLeNet(nn.Layer):
    """paddle.vision.models.GoogLeNet with fused layers (see the module
    docstring). forward returns (out, out1, out2): the main logits and the
    auxiliary heads on 4a and 4d, as paddle.vision's does."""

    def __init__(self, num_classes=1000, with_pool=True, batch_norm=False, fused=True):
        super().__init__()
        self.num_classes = num_classes
        self.with_pool = with_pool
        conv = lambda *a, **k: ConvLayer(*a, batch_norm=batch_norm, fused=fused, **k)  # noqa
        style = dict(batch_norm=True, relu="each") if batch_norm else {}

        def block(name):
            cin, f1, f3r, f3, f5r, f5, proj = _BLOCKS[name]
            return Inception(cin, cin, f1, f3r, f3, f5r, f5, proj, fused=fused, **style)

        self._conv = conv(3, 64, 7, 2)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=2)
        if fused:  # the same pool on this package's kernel (no parameters)
            from .fusion import _FastMaxPool, _Swapped
            self._pool = _Swapped(self._pool, _FastMaxPool(self._pool, "NCHW"))
        self._conv_1 = conv(64, 64, 1)
        self._conv_2 = conv(64, 192, 3)
        self._ince3a, self._ince3b = block("3a"), block("3b")
        self._ince4a, self._ince4b, self._ince4c = block("4a"), block("4b"), block("4c")
        self._ince4d, self._ince4e = block("4d"), block("4e")
        self._ince5a, self._ince5b = block("5a"), block("5b")
        if with_pool:
            self._pool_5 = nn.AdaptiveAvgPool2D(1)
            self._pool_o1 = nn.AvgPool2D(kernel_size=5, stride=3)
            self._pool_o2 = nn.AvgPool2D(kernel_size=5, stride=3)
        # fused: paddle.vision's Linear heads on oneDNN's sgemm (same parameters)
        linear = FusedLinear if fused else nn.Linear
        if num_classes > 0:
            self._drop = nn.Dropout(p=0.4, mode="downscale_in_infer")
            self._fc_out = linear(1024, num_classes, weight_attr=_xavier(1024, 1))
            self._conv_o1 = conv(512, 128, 1)
            self._fc_o1 = linear(1152, 1024, weight_attr=_xavier(2048, 1))
            self._drop_o1 = nn.Dropout(p=0.7, mode="downscale_in_infer")
            self._out1 = linear(1024, num_classes, weight_attr=_xavier(1024, 1))
            self._conv_o2 = conv(528, 128, 1)
            self._fc_o2 = linear(1152, 1024, weight_attr=_xavier(2048, 1))
            self._drop_o2 = nn.Dropout(p=0.7, mode="downscale_in_infer")
            self._out2 = linear(1024, num_classes, weight_attr=_xavier(1024, 1))

    def forward(self, inputs):
        # The same sequence as paddle.vision.models.GoogLeNet.forward.
        x = self._pool(self._conv(inputs))
        x = self._pool(self._conv_2(self._conv_1(x)))
        x = self._pool(self._ince3b(self._ince3a(x)))
        ince4a = self._ince4a(x)
        ince4d = self._ince4d(self._ince4c(self._ince4b(ince4a)))
        x = self._pool(self._ince4e(ince4d))
        out, out1, out2 = self._ince5b(self._ince5a(x)), ince4a, ince4d
        if self.with_pool:
            out, out1, out2 = self._pool_5(out), self._pool_o1(out1), self._pool_o2(out2)
        if self.num_classes > 0:
            out = self._fc_out(paddle.squeeze(self._drop(out), axis=[2, 3]))
            out1 = paddle.flatten(self._conv_o1(out1), start_axis=1, stop_axis=-1)
            out1 = self._out1(self._drop_o1(F.relu(self._fc_o1(out1))))
            out2 = paddle.flatten(self._conv_o2(out2), start_axis=1, stop_axis=-1)
            out2 = self._out2(self._drop_o2(self._fc_o2(out2)))
        return out, out1, out2
