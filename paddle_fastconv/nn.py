"""Drop-in layers backed by the fused ops."""
import paddle
from paddle import nn

from . import _args
from .ops import conv_bn_act

__all__ = ["ConvBNReLU", "BottleneckBlock", "BasicBlock"]


def _conv_padding(conv):
    """The padding of a paddle.nn.Conv2D in a form ops.conv_bn_act accepts."""
    if conv._padding_algorithm in ("SAME", "VALID"):
        return conv._padding_algorithm
    return conv._updated_padding


def conv_bn_from_layers(conv, bn, x, act, residual=None, training=True, data_format=None):
    """The fused op with a stock Conv2D's and BatchNorm2D's parameters.

    Honours the BatchNorm's use_global_stats and a BatchNorm built without
    affine parameters. `data_format` overrides the layers' own layout
    (fuse(..., channels_last=True) runs NCHW-built layers on NHWC
    activations: Paddle's filters are [O, C/g, KH, KW] for either layout)."""
    weight, bias = bn.weight, bn.bias
    if weight is None:  # BatchNorm2D(weight_attr=False): fixed scale 1
        weight = paddle.ones([bn._num_features], "float32")
    if bias is None:
        bias = paddle.zeros([bn._num_features], "float32")
    return conv_bn_act(x, conv.weight, weight, bias, bn._mean, bn._variance,
                       bias=conv.bias, residual=residual, stride=conv._stride,
                       padding=_conv_padding(conv), dilation=conv._dilation,
                       groups=conv._groups, data_format=data_format or conv._data_format,
                       act=act, training=training and not bn._use_global_stats,
                       momentum=bn._momentum, epsilon=bn._epsilon,
                       sync_bn=isinstance(bn, nn.SyncBatchNorm))


class ConvBNReLU(nn.Layer):
    """Conv2D -> BatchNorm2D -> ReLU (or no activation) as one fused op.

    A drop-in for the three stock layers: it holds a `paddle.nn.Conv2D` as
    `conv` and a `paddle.nn.BatchNorm2D` as `bn`, so parameters, buffers and
    state-dict keys (`conv.weight`, `conv.bias`, `bn.weight`, `bn.bias`,
    `bn._mean`, `bn._variance`) are exactly those of the stock pair.
    `forward(x, residual=None)` adds `residual` before the activation.
    `train()` / `eval()` switch between batch statistics (running statistics
    updated in place) and running statistics folded into the convolution.
    `sync_bn=True` holds a `paddle.nn.SyncBatchNorm` (same keys) and, in
    training under data parallelism, normalizes with the statistics of the
    global batch (CPU, dygraph; see paddle_fastconv.sync_bn).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=False, act="relu", data_format="NCHW",
                 momentum=0.9, epsilon=1e-5, sync_bn=False):
        super().__init__()
        name = "ConvBNReLU"
        for arg, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError("%s: argument '%s' must be a positive int, got %r"
                                 % (name, arg, v))
        _args.pair(kernel_size, "kernel_size", name)
        _args.pair(stride, "stride", name)
        _args.pair(dilation, "dilation", name)
        _args.choice(act, "act", _args.ACTS, name)
        _args.choice(data_format, "data_format", _args.DATA_FORMATS, name)
        if not isinstance(groups, int) or groups < 1 or in_channels % groups or \
                out_channels % groups:
            raise ValueError("%s: argument 'groups' must be a positive int dividing "
                             "in_channels and out_channels, got %r" % (name, groups))
        if not isinstance(bias, bool):
            raise TypeError("%s: argument 'bias' must be a bool, got %r" % (name, bias))
        self.conv = nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, dilation=dilation, groups=groups,
                              bias_attr=None if bias else False,
                              data_format=data_format)
        if not isinstance(sync_bn, bool):
            raise TypeError("%s: argument 'sync_bn' must be a bool, got %r" % (name, sync_bn))
        bn_cls = nn.SyncBatchNorm if sync_bn else nn.BatchNorm2D
        self.bn = bn_cls(out_channels, momentum=momentum, epsilon=epsilon,
                         data_format=data_format)
        self.act = act

    @classmethod
    def from_layers(cls, conv, bn, act="relu"):
        """Wraps existing stock layers; parameters are shared, not copied."""
        name = "ConvBNReLU.from_layers"
        if not isinstance(conv, nn.Conv2D):
            raise TypeError("%s: argument 'conv' must be a paddle.nn.Conv2D, got %s"
                            % (name, type(conv).__name__))
        if not isinstance(bn, nn.layer.norm._BatchNormBase):
            raise TypeError("%s: argument 'bn' must be a paddle.nn.BatchNorm2D, got %s"
                            % (name, type(bn).__name__))
        if conv._padding_mode != "zeros":
            raise ValueError("%s: conv padding_mode %r is not supported (only 'zeros')"
                             % (name, conv._padding_mode))
        if bn._num_features != conv._out_channels:
            raise ValueError("%s: bn has %d features but conv has %d output channels"
                             % (name, bn._num_features, conv._out_channels))
        if bn._data_format != conv._data_format:
            raise ValueError("%s: conv data_format %s and bn data_format %s differ"
                             % (name, conv._data_format, bn._data_format))
        _args.choice(act, "act", _args.ACTS, name)
        self = cls.__new__(cls)
        nn.Layer.__init__(self)
        self.conv = conv
        self.bn = bn
        self.act = act
        self.training = conv.training and bn.training
        return self

    def forward(self, x, residual=None):
        return conv_bn_from_layers(self.conv, self.bn, x, self.act, residual=residual,
                                   training=self.training)

    def extra_repr(self):
        return "act=%s, data_format=%s" % (self.act, self.conv._data_format)


def _vision_resnet():
    from paddle.vision.models import resnet
    return resnet


def BottleneckBlock(inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                    dilation=1, norm_layer=None):
    """paddle.vision.models.resnet.BottleneckBlock on the fused op: the same
    constructor arguments, sublayers and state-dict keys (conv1, bn1, ...,
    downsample); each Conv+BN(+ReLU) is one fused op and the residual add and
    final ReLU ride on the last one."""
    from .fusion import FusedBottleneckBlock
    block = _vision_resnet().BottleneckBlock(inplanes, planes, stride, downsample, groups,
                                             base_width, dilation, norm_layer)
    return FusedBottleneckBlock(block)


def BasicBlock(inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
               dilation=1, norm_layer=None):
    """paddle.vision.models.resnet.BasicBlock on the fused op (same arguments
    and keys)."""
    from .fusion import FusedBasicBlock
    block = _vision_resnet().BasicBlock(inplanes, planes, stride, downsample, groups,
                                        base_width, dilation, norm_layer)
    return FusedBasicBlock(block)
