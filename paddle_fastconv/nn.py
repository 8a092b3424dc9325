"""Drop-in layers backed by the fused ops."""
import paddle
from paddle import nn

from . import _args
from ._layer_keys import conv_bn_key
from .ops import (_cacheable_input, _cached_args, _check_inception, _run_inception,
                  conv_bn_act, inception, linear)

__all__ = ["ConvBNReLU", "BottleneckBlock", "BasicBlock", "Inception", "InceptionConv",
           "inception_from_layers", "Linear"]


def _conv_padding(conv):
    """The padding of a paddle.nn.Conv2D in a form ops.conv_bn_act accepts."""
    if conv._padding_algorithm in ("SAME", "VALID"):
        return conv._padding_algorithm
    return conv._updated_padding


def bn_affine(bn):
    """A stock BatchNorm's scale and shift; one built without them
    (weight_attr/bias_attr=False) has a fixed scale 1 and shift 0."""
    weight, bias = bn.weight, bn.bias
    if weight is None:
        weight = paddle.ones([bn._num_features], "float32")
    if bias is None:
        bias = paddle.zeros([bn._num_features], "float32")
    return weight, bias


def conv_bn_from_layers(conv, bn, x, act, residual=None, training=True, data_format=None):
    """The fused op with a stock Conv2D's and BatchNorm2D's parameters.

    Honours the BatchNorm's use_global_stats and a BatchNorm built without
    affine parameters. `data_format` overrides the layers' own layout
    (fuse(..., channels_last=True) runs NCHW-built layers on NHWC
    activations: Paddle's filters are [O, C/g, KH, KW] for either layout)."""
    weight, bias = bn_affine(bn)
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
        self.training = bn.training
        return self

    def forward(self, x, residual=None):
        # The BN's own flag, as in Conv2D -> BatchNorm2D: a frozen bn (bn.eval()
        # under a training model) normalizes with its running statistics.
        return conv_bn_from_layers(self.conv, self.bn, x, self.act, residual=residual,
                                   training=self.bn.training)

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


class InceptionConv(nn.Layer):
    """One convolution of an Inception block: `_conv` (a stock Conv2D, "same"
    padding, stride 1), then `_bn` (a stock BatchNorm2D) if batch_norm, then
    ReLU if relu. Without bias and BN its keys are those of
    paddle.vision.models.googlenet.ConvLayer (`_conv.weight`)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=False,
                 batch_norm=False, relu=False, data_format="NCHW", momentum=0.9,
                 epsilon=1e-5):
        super().__init__()
        self._conv = nn.Conv2D(in_channels, out_channels, kernel_size,
                               padding=(kernel_size - 1) // 2,
                               bias_attr=None if bias else False, data_format=data_format)
        self._bn = (nn.BatchNorm2D(out_channels, momentum=momentum, epsilon=epsilon,
                                   data_format=data_format) if batch_norm else None)
        self._relu = relu

    def forward(self, x):
        x = self._conv(x)
        if self._bn is not None:
            x = self._bn(x)
        return nn.functional.relu(x) if self._relu else x


class Inception(nn.Layer):
    """An Inception block (GoogLeNet) as one fused op, training and eval.

    Branches: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max pool -> 1x1; concatenated
    along channels. The first eight arguments and the sublayer names are those
    of paddle.vision.models.googlenet.Inception, so its state dicts load
    unchanged. Three styles:

    - paddle.vision (the default): convolutions without bias or BN, one ReLU
      after the concat (`conv_bias=False, batch_norm=False, relu="concat"`);
    - the classic block: bias and ReLU after every convolution
      (`conv_bias=True, relu="each"`);
    - Inception-v1 with BN: Conv + BatchNorm + ReLU everywhere
      (`batch_norm=True, relu="each"`).

    Every convolution is an InceptionConv (`_conv1`, `_conv3r`, `_conv3`,
    `_conv5r`, `_conv5`, `_convprj`) holding a stock Conv2D (`_conv`) and, with
    batch_norm, a stock BatchNorm2D (`_bn`). `fused=False` runs those stock
    layers (and a stock concat): the same numbers, stock speed, any device.
    `output_channels` is not used (as in paddle.vision); the output has
    filter1 + filter3 + filter5 + proj channels.
    """

    _RELUS = ("concat", "each")

    def __init__(self, input_channels, output_channels, filter1, filter3R, filter3,
                 filter5R, filter5, proj, conv_bias=False, batch_norm=False,
                 relu="concat", fused=True, data_format="NCHW", momentum=0.9,
                 epsilon=1e-5):
        super().__init__()
        name = "Inception"
        for arg, v in (("input_channels", input_channels), ("filter1", filter1),
                       ("filter3R", filter3R), ("filter3", filter3), ("filter5R", filter5R),
                       ("filter5", filter5), ("proj", proj)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError("%s: argument '%s' must be a positive int, got %r"
                                 % (name, arg, v))
        self._relu_each = _args.choice(relu, "relu", self._RELUS, name) == "each"
        self._data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS, name)
        self.fused = bool(fused)
        each = self._relu_each
        conv = lambda cin, cout, k: InceptionConv(  # noqa: E731
            cin, cout, k, bias=conv_bias, batch_norm=batch_norm, relu=each,
            data_format=data_format, momentum=momentum, epsilon=epsilon)
        self._conv1 = conv(input_channels, filter1, 1)
        self._conv3r = conv(input_channels, filter3R, 1)
        self._conv3 = conv(filter3R, filter3, 3)
        self._conv5r = conv(input_channels, filter5R, 1)
        self._conv5 = conv(filter5R, filter5, 5)
        self._pool = nn.MaxPool2D(kernel_size=3, stride=1, padding=1, data_format=data_format)
        self._convprj = conv(input_channels, proj, 1)
        self._op_args = {}  # ops.inception's checked arguments, reused

    def _stages(self):
        return (self._conv1, self._conv3r, self._conv3, self._conv5r, self._conv5,
                self._convprj)

    def _stock_forward(self, x):
        branches = [self._conv1(x), self._conv3(self._conv3r(x)),
                    self._conv5(self._conv5r(x)), self._convprj(self._pool(x))]
        out = paddle.concat(branches, axis=1 if self._data_format == "NCHW" else 3)
        return out if self._relu_each else nn.functional.relu(out)

    def forward(self, x):
        if not self.fused:
            return self._stock_forward(x)
        stages = self._stages()
        return inception_from_layers([s._conv for s in stages], [s._bn for s in stages], x,
                                     relu_each=self._relu_each, training=self.training,
                                     data_format=self._data_format, cache=self._op_args)


@paddle.jit.not_to_static
def inception_from_layers(convs, bns, x, relu_each, training=True, data_format="NCHW",
                          cache=None):
    """The fused Inception op with the parameters of six stock Conv2D layers
    (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) and their
    BatchNorm2D layers (None where a convolution has none); ReLU after each
    convolution (relu_each) or once after the concat.

    cache: an optional dict the caller keeps per block (the fused layers
    do): for float32 CPU inputs in dygraph, the checked op arguments are
    kept in it and reused while the layers are unchanged (see
    paddle_fastconv._layer_keys; the op still checks every tensor against x
    on each call)."""
    if cache is not None and _cacheable_input(x):
        key = (bool(training), data_format, bool(relu_each),
               tuple(conv_bn_key(c, b, geometry=False) for c, b in zip(convs, bns)))
        args = _cached_args(cache, key, lambda: _inception_layer_args(
            convs, bns, x, relu_each, training, data_format, checked=True), slot="layers")
        return _run_inception(x, args, bool(training), "fastconv_inception")
    return inception(x, *_inception_layer_args(convs, bns, x, relu_each, training,
                                               data_format))


def _inception_layer_args(convs, bns, x, relu_each, training, data_format, checked=False):
    """ops.inception's arguments after x for the given layers; checked: the
    op's checked argument tuple instead (as ops.inception's cache keeps)."""
    bn = []
    for b in bns:
        if b is None:
            bn.append(None)
            continue
        if b._use_global_stats or b.weight is None or b.bias is None:
            raise ValueError("Inception: fused BatchNorm2D layers must have affine "
                             "parameters and use_global_stats unset; use fused=False")
        bn.append((b.weight, b.bias, b._mean, b._variance))
    hyper = {(b._momentum, b._epsilon) for b in bns if b is not None}
    if len(hyper) > 1:
        raise ValueError("Inception: the fused op takes one BatchNorm momentum and "
                         "epsilon for the block, got %s; use fused=False" % sorted(hyper))
    momentum, epsilon = hyper.pop() if hyper else (0.9, 1e-5)
    args = ([c.weight for c in convs], [c.bias for c in convs], bn, training, momentum,
            epsilon, [relu_each] * 6, not relu_each, data_format)
    if checked:
        return _check_inception(x, *args, "fastconv_inception")
    return args


class Linear(nn.Linear):
    """paddle.nn.Linear (same constructor, parameters and state-dict keys)
    whose forward and backward run on ops.linear: oneDNN's sgemm for float32
    CPU tensors, Paddle's linear elsewhere. `Linear.from_layer(linear)`
    shares a stock layer's parameters (what fuse() swaps in)."""

    @classmethod
    def from_layer(cls, layer):
        if not isinstance(layer, nn.Linear):
            raise TypeError("Linear.from_layer: argument 'layer' must be a paddle.nn.Linear, "
                            "got %s" % type(layer).__name__)
        self = cls.__new__(cls)
        nn.Layer.__init__(self)
        for attr in ("_dtype", "_weight_attr", "_bias_attr", "name"):
            setattr(self, attr, getattr(layer, attr, None))
        self.weight = layer.weight
        self.bias = layer.bias
        self.training = layer.training
        self.original_layer = [layer]  # for unfuse()
        return self

    def forward(self, x):
        return linear(x, self.weight, self.bias)
