"""`fuse(model)`: swap fused Conv+BN(+ReLU) computation into an existing model.

Parameters are shared, not copied (an optimizer built before fusing keeps
working), and the state-dict keys stay exactly those of the stock model: the
fused layers register the stock layers' parameters under the stock names.

What is fused:
- `paddle.vision.models` ResNets: the stem (conv1, bn1, relu; its max pool
  on this package's kernel) and every BasicBlock / BottleneckBlock, each as
  one fused block op (its Conv+BN(+ReLU) stages, the downsample branch, the
  residual add and the final ReLU);
- `paddle.vision.models` GoogLeNet: every Inception block becomes one fused
  Inception op, the other (bias-free, BN-free) convolutions run on the
  oneDNN kernels, and the max pools on this package's kernel;
- anywhere else, runs of `Conv2D -> BatchNorm2D [-> ReLU]` inside an
  `nn.Sequential`;
- every `nn.Linear` (the models' classifier heads among them): the same
  computation on oneDNN's sgemm for float32 CPU tensors (nn.Linear).
Unknown layers are left alone. `unfuse(model)` restores the stock layers.
"""
import paddle
from paddle import nn

from .ops import (BlockConv, _cacheable_input, _checked_block_call, avg_pool2d_nhwc_to_nchw,
                  float32_on_cpu, max_pool2d, resnet_block, to_channels_last)

from ._layer_keys import conv_bn_key
from .nn import _conv_padding, bn_affine
from .nn import conv_bn_from_layers as _apply
from .nn import Linear, inception_from_layers

__all__ = ["fuse", "unfuse"]


def _bn_ok(conv, bn):
    return (isinstance(conv, nn.Conv2D) and isinstance(bn, nn.layer.norm._BatchNormBase)
            and conv._padding_mode == "zeros" and bn._num_features == conv._out_channels
            and bn._data_format == conv._data_format)


class _Absorbed(nn.Layer):
    """Stands in the slot of a BatchNorm2D or ReLU whose work moved into the
    preceding fused conv: identity in forward, the original's parameters and
    buffers under their original names. Its `training` flag is the original's
    (model.train()/eval() reach the original through this slot), so the fused
    conv follows the BatchNorm's mode exactly as the stock layers would."""

    def __init__(self, original):
        super().__init__()
        self.original_layer = [original]  # a list: not registered as a sublayer
        for name, p in original.named_parameters(include_sublayers=False):
            self.add_parameter(name, p)
        for name, b in original.named_buffers(include_sublayers=False):
            self.register_buffer(name, b)
        self._initialised = True

    @property
    def training(self):
        return self.original_layer[0].training

    @training.setter
    def training(self, mode):
        # Layer.__init__ sets training=True; that must not switch the original.
        if getattr(self, "_initialised", False):
            self.original_layer[0].training = mode

    def forward(self, x):
        return x


class _FusedConvSlot(nn.Layer):
    """Stands in the slot of a Conv2D: computes act(BN(conv(x))) with the
    conv's parameters (registered under its names) and the BN's (registered
    in the BN's own slot). Batch statistics or running statistics follow the
    BN's own training flag, as in the stock layers."""

    def __init__(self, conv, bn, act, data_format=None, nchw_input=False):
        super().__init__()
        self.training = bn.training
        self.original_layer = [conv]
        self._bn = [bn]
        self.act = act
        self.data_format = data_format
        self.nchw_input = nchw_input  # an NCHW input is made NHWC first
        for name, p in conv.named_parameters(include_sublayers=False):
            self.add_parameter(name, p)

    def forward(self, x):
        conv, bn = self.original_layer[0], self._bn[0]
        if self.nchw_input:
            x = to_channels_last(x)
        return _apply(conv, bn, x, self.act, training=bn.training,
                      data_format=self.data_format)


def _block_conv(conv, bn):
    """The stage of the one-op block for a stock Conv2D + BatchNorm2D pair, or
    None when the pair needs what only the single-stage op has (a conv bias,
    SAME padding, SyncBatchNorm, use_global_stats)."""
    if not _bn_ok(conv, bn) or conv.bias is not None or isinstance(bn, nn.SyncBatchNorm) \
            or bn._use_global_stats or conv._padding_algorithm == "SAME":
        return None
    weight, bias = bn_affine(bn)
    return BlockConv(conv.weight, weight, bias, bn._mean, bn._variance, stride=conv._stride,
                     padding=_conv_padding(conv), dilation=conv._dilation,
                     groups=conv._groups, momentum=bn._momentum, epsilon=bn._epsilon)


class FusedBottleneckBlock(nn.Layer):
    """paddle.vision's BottleneckBlock on the fused ops: the same sublayers
    (conv1, bn1, ..., downsample) and so the same state-dict keys.

    The whole block runs as one `fastconv_resnet_block` op (ops.resnet_block)
    when every convolution is bias-free with a plain BatchNorm2D and the
    shortcut is the identity or a Conv2D + BatchNorm2D downsample, which is
    every paddle.vision ResNet. Otherwise each Conv+BN(+ReLU) is one
    fastconv_conv_bn_act op (the residual add and final ReLU riding on the
    last one): `one_op` says which."""

    expansion = 4
    _convs = ("conv1", "conv2", "conv3")

    def __init__(self, block, data_format=None):
        super().__init__()
        self.training = block.training
        self.original_layer = [block]
        self.data_format = data_format
        for name in ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu"):
            setattr(self, name, getattr(block, name))
        self.downsample = block.downsample
        self.stride = getattr(block, "stride", 1)
        self._call = None  # (_state_key(), the checked op call or None), reused

    def _pairs(self):
        return [(getattr(self, c), getattr(self, "bn" + c[-1])) for c in self._convs]

    def _bns(self):
        """The BatchNorms whose modes decide the block's: each stage's, and
        the downsample's."""
        bns = [b for _, b in self._pairs()]
        ds = self.downsample
        if isinstance(ds, nn.Sequential) and len(ds) == 2 and _bn_ok(ds[0], ds[1]):
            bns.append(ds[1])
        return bns

    def _block_stages(self):
        """(convs, downsample) for the one-op block, or None."""
        if len({bn.training for bn in self._bns()}) != 1:
            return None  # BNs in mixed modes (some frozen): one op per stage
        convs = [_block_conv(c, b) for c, b in self._pairs()]
        if any(c is None for c in convs):
            return None
        ds = self.downsample
        if ds is None:
            return convs, None
        if isinstance(ds, nn.Sequential) and len(ds) == 2:
            d = _block_conv(ds[0], ds[1])
            if d is not None:
                return convs, d
        return None

    @property
    def one_op(self):
        return self._block_stages() is not None

    def _shortcut(self, x):
        ds = self.downsample
        if ds is None:
            return x
        if isinstance(ds, nn.Sequential) and len(ds) == 2 and _bn_ok(ds[0], ds[1]):
            return _apply(ds[0], ds[1], x, "none", training=ds[1].training,
                          data_format=self.data_format)
        if self.data_format:
            raise ValueError("fuse: channels_last needs a Conv2D+BatchNorm2D downsample, "
                             "got %s" % type(ds).__name__)
        return ds(x)

    def _state_key(self):
        """What the one-op call depends on besides x: the block's layers, their
        attributes and tensors (see _layer_keys), cheap enough to build every
        call (14-25 us for a bottleneck block on the project's machine,
        against about 50 us for the stage list and the per-tensor signature
        it replaces)."""
        subs = self._sub_layers
        ds = subs.get("downsample")
        key = [self.data_format, ds]
        for c in self._convs:
            key.append(conv_bn_key(subs[c], subs["bn" + c[-1]]))
        if isinstance(ds, nn.Sequential) and len(ds) == 2:
            key.append(conv_bn_key(ds[0], ds[1]))
        return tuple(key)

    def _block_args(self):
        """resnet_block's arguments after x (convs, downsample, training,
        data_format) for the current layers, or None when the block runs
        one op per stage."""
        stages = self._block_stages()
        if stages is None:
            return None
        return stages + (self.bn1.training, self.data_format or self.conv1._data_format)

    @paddle.jit.not_to_static
    def _one_op(self, x):
        """The block's output from its one op, or None when it runs one op
        per stage."""
        if _cacheable_input(x):
            # float32 CPU dygraph: the checked call is reused while the
            # layers are unchanged (the C++ op still checks every tensor's
            # shape, dtype and device against x on each call)
            key = self._state_key()
            entry = self._call
            if entry is None or entry[0] != key:
                args = self._block_args()
                entry = (key, None if args is None else _checked_block_call(x, *args))
                self._call = entry
            return entry[1](x) if entry[1] is not None else None
        args = self._block_args()
        return None if args is None else resnet_block(x, *args)

    def forward(self, x):
        # Each BN's own training flag decides batch or running statistics, as
        # in the stock block (a frozen BN stays frozen under model.train()).
        out = self._one_op(x)
        if out is not None:
            return out
        f = self.data_format
        pairs = self._pairs()
        out = x
        for conv, bn in pairs[:-1]:
            out = _apply(conv, bn, out, "relu", training=bn.training, data_format=f)
        conv, bn = pairs[-1]
        return _apply(conv, bn, out, "relu", residual=self._shortcut(x), training=bn.training,
                      data_format=f)


class FusedBasicBlock(FusedBottleneckBlock):
    """paddle.vision's BasicBlock on the fused ops (same keys); one op under
    the same conditions as FusedBottleneckBlock."""

    expansion = 1
    _convs = ("conv1", "conv2")

    def __init__(self, block, data_format=None):
        nn.Layer.__init__(self)
        self.training = block.training
        self.original_layer = [block]
        self.data_format = data_format
        for name in ("conv1", "bn1", "relu", "conv2", "bn2"):
            setattr(self, name, getattr(block, name))
        self.downsample = block.downsample
        self.stride = getattr(block, "stride", 1)
        self._call = None


class FusedInceptionBlock(nn.Layer):
    """A paddle.vision GoogLeNet Inception block run by the fused Inception
    op. Its ConvLayers stay registered under their own names (same keys, same
    parameters)."""

    _CONVS = ("_conv1", "_conv3r", "_conv3", "_conv5r", "_conv5", "_convprj")

    def __init__(self, block, data_format=None):
        super().__init__()
        self.training = block.training
        self.original_layer = [block]
        self.data_format = data_format or "NCHW"
        for name in self._CONVS:
            self.add_sublayer(name, getattr(block, name))
        self._op_args = {}  # ops.inception's checked arguments, reused

    def forward(self, x):
        convs = [getattr(self, n)._conv for n in self._CONVS]
        return inception_from_layers(convs, [None] * 6, x, relu_each=False,
                                     training=self.training, data_format=self.data_format,
                                     cache=self._op_args)


class _NCHWHead(nn.Layer):
    """A channels_last GoogLeNet's head pool: its NHWC input (14x14 or 7x7
    maps) is pooled into an NCHW map, so the heads' layers and the outputs are
    those of the NCHW model. Float32 CPU tensors: this package's NHWC-to-NCHW
    average pool (one pass; batch 8, a 14x14x512 map: about 3.5 ms for
    Paddle's transpose plus pool); elsewhere, and for options that kernel does
    not take, the map is transposed back and pooled by the stock layer.
    (Paddle's NHWC average pools failed inside paddle.inference's oneDNN
    layout passes.)"""

    def __init__(self, pool):
        super().__init__()
        self.pool = [pool]
        self.args = None  # (kernel_size or None: the whole map, stride, padding, exclusive)
        if isinstance(pool, nn.AdaptiveAvgPool2D):
            if pool._output_size in (1, [1, 1], (1, 1)):
                self.args = (None, None, 0, True)
        elif isinstance(pool, nn.AvgPool2D):
            pad = pool.padding
            if not pool.ceil_mode and pool.divisor is None and (
                    isinstance(pad, int) or (isinstance(pad, (list, tuple)) and len(pad) == 2)):
                self.args = (pool.ksize, pool.stride, pad, bool(pool.exclusive))

    def forward(self, x):
        # (a static graph's unknown map size is -1: the stock route then)
        if self.args is not None and float32_on_cpu(x) and min(x.shape[1:3]) > 0:
            kernel, stride, pad, exclusive = self.args
            if kernel is None:  # global average: the whole map is the window
                kernel = stride = [int(x.shape[1]), int(x.shape[2])]
            return avg_pool2d_nhwc_to_nchw(x, kernel, stride, pad, exclusive)
        return self.pool[0](x.transpose([0, 3, 1, 2]))


def _fuse_googlenet_channels_last(model, report):
    """paddle.vision GoogLeNet on NHWC activations: the image is transposed
    once at the stem; the three heads' pools return NCHW, so their layers
    (and the outputs) are unchanged."""
    from .googlenet import FusedConv2D
    model._conv._conv = FusedConv2D(model._conv._conv, "NHWC", nchw_input=True)
    for name in ("_conv_1", "_conv_2"):
        getattr(model, name)._conv = FusedConv2D(getattr(model, name)._conv, "NHWC")
    model._pool = _Swapped(model._pool, _FastMaxPool(model._pool, "NHWC"))
    report += [("_conv._conv", "Conv2D (NHWC)"), ("_conv_1._conv", "Conv2D (NHWC)"),
               ("_conv_2._conv", "Conv2D (NHWC)"), ("_pool", "MaxPool2D (NHWC)")]
    for name, child in list(model.named_children()):
        if type(child) in _block_types():
            setattr(model, name, FusedInceptionBlock(child, "NHWC"))
            report.append((name, "Inception (NHWC)"))
    if model.with_pool:
        for name in ("_pool_5", "_pool_o1", "_pool_o2"):
            pool = getattr(model, name)
            setattr(model, name, _Swapped(pool, _NCHWHead(pool)))
            report.append((name, "NCHW again"))
    _fuse_children(model, report, "")  # the heads' 1x1 convolutions (NCHW)


def _fuse_plain_conv(layer, report, prefix):
    """paddle.vision GoogLeNet's ConvLayer: its bias-free Conv2D runs on the
    oneDNN kernels (FusedConv2D)."""
    from .googlenet import FusedConv2D
    if isinstance(layer._conv, nn.Conv2D):
        layer._conv = FusedConv2D(layer._conv)
        report.append((prefix + "_conv", "Conv2D"))


def _block_types():
    from paddle.vision.models import resnet
    from paddle.vision.models.googlenet import Inception
    return {resnet.BottleneckBlock: FusedBottleneckBlock, resnet.BasicBlock: FusedBasicBlock,
            Inception: FusedInceptionBlock}


def _fused_types():
    from .googlenet import FusedConv2D
    return (_FusedConvSlot, _Absorbed, FusedBottleneckBlock, _Swapped, FusedInceptionBlock,
            FusedConv2D, Linear)


def _fuse_resnet_stem(layer, report, prefix, data_format):
    conv, bn = layer.conv1, layer.bn1
    layer.conv1 = _FusedConvSlot(conv, bn, "relu", data_format=data_format,
                                 nchw_input=data_format == "NHWC")
    layer.bn1 = _Absorbed(bn)
    layer.relu = _Absorbed(layer.relu)
    report.append((prefix + "conv1", "Conv2D+BatchNorm2D+ReLU"))
    # The stem's max pool on our kernel, in the layout the network runs in
    # (batch 8 at 224x224, NCHW forward: 3.9-4.7 ms against Paddle's 14-22 ms
    # on the Xeon VM, 4.0 against 7.6 ms on the AMD EPYC one; README).
    mp = layer.maxpool
    layer.maxpool = _Swapped(mp, _FastMaxPool(mp, data_format or mp.data_format))
    if data_format == "NHWC":
        # The rest of the network runs on NHWC activations; the pools follow.
        ap = layer.avgpool
        layer.avgpool = _Swapped(ap, nn.AdaptiveAvgPool2D(ap._output_size,
                                                          data_format="NHWC"))
        report.append((prefix + "maxpool/avgpool", "NHWC"))
    else:
        report.append((prefix + "maxpool", "MaxPool2D"))


class _FastMaxPool(nn.Layer):
    """A stock MaxPool2D on this package's CPU kernel (float32 CPU tensors;
    faster than Paddle's, about 3x in NHWC), in `data_format`; Paddle's max
    pool elsewhere (GPU) and for options the kernel does not take."""

    def __init__(self, mp, data_format="NHWC"):
        super().__init__()
        self.data_format = data_format
        self.stock = nn.MaxPool2D(mp.ksize, mp.stride, mp.padding, ceil_mode=mp.ceil_mode,
                                  data_format=data_format)
        pad = mp.padding
        self.ours = not mp.ceil_mode and not mp.return_mask and (
            isinstance(pad, int) or (isinstance(pad, (list, tuple)) and len(pad) == 2))
        self.args = (mp.ksize, mp.stride, pad)

    def forward(self, x):
        if self.ours and float32_on_cpu(x):
            return max_pool2d(x, *self.args, data_format=self.data_format)
        return self.stock(x)


class _Swapped(nn.Layer):
    """A parameterless stock layer replaced by another (kept for unfuse)."""

    def __init__(self, original, replacement):
        super().__init__()
        self.training = original.training
        self.original_layer = [original]
        self.replacement = [replacement]

    def forward(self, x):
        return self.replacement[0](x)


def _fuse_children(layer, report, prefix, data_format=None):
    blocks = _block_types()
    children = list(layer.named_children())
    # paddle.vision ResNet stem: conv1 -> bn1 -> relu as attributes.
    from paddle.vision.models.resnet import ResNet
    if isinstance(layer, ResNet) and _bn_ok(layer.conv1, layer.bn1) and \
            not isinstance(layer.conv1, _FusedConvSlot):
        _fuse_resnet_stem(layer, report, prefix, data_format)
        children = [(n, c) for n, c in children
                    if n not in ("conv1", "bn1", "relu", "maxpool", "avgpool")]
    from paddle.vision.models.googlenet import ConvLayer
    from paddle.vision.models.googlenet import GoogLeNet
    if isinstance(layer, GoogLeNet) and type(layer._pool) is nn.MaxPool2D:
        # paddle.vision's GoogLeNet: its (stride-2) max pool on our kernel
        layer._pool = _Swapped(layer._pool, _FastMaxPool(layer._pool, "NCHW"))
        report.append((prefix + "_pool", "MaxPool2D"))
    for name, child in children:
        path = prefix + name
        if type(child) in blocks:
            setattr(layer, name, blocks[type(child)](child, data_format))
            report.append((path, type(child).__name__))
            continue
        if isinstance(child, _fused_types()):
            continue
        if type(child) is nn.Linear:
            layer._sub_layers[name] = Linear.from_layer(child)
            report.append((path, "Linear"))
            continue
        if type(child) is ConvLayer:
            _fuse_plain_conv(child, report, path + ".")
            continue
        if isinstance(child, nn.Sequential):
            _fuse_sequential(child, report, path + ".")
        _fuse_children(child, report, path + ".", data_format)


def _fuse_sequential(seq, report, prefix):
    names = [n for n, _ in seq.named_children()]
    i = 0
    while i + 1 < len(names):
        conv, bn = seq._sub_layers[names[i]], seq._sub_layers[names[i + 1]]
        if _bn_ok(conv, bn):
            has_relu = i + 2 < len(names) and type(seq._sub_layers[names[i + 2]]) is nn.ReLU
            seq._sub_layers[names[i]] = _FusedConvSlot(conv, bn, "relu" if has_relu else "none")
            seq._sub_layers[names[i + 1]] = _Absorbed(bn)
            if has_relu:
                seq._sub_layers[names[i + 2]] = _Absorbed(seq._sub_layers[names[i + 2]])
            report.append((prefix + names[i], "Conv2D+BatchNorm2D" + ("+ReLU" if has_relu else "")))
            i += 3 if has_relu else 2
        else:
            i += 1


def fuse(model, inplace=True, return_report=False, channels_last=False):
    """Swaps fused layers into `model` (see the module docstring).

    inplace=False fuses a deep copy instead (parameters are then copies too).
    channels_last=True (paddle.vision ResNets and GoogLeNet with
    with_pool=True only) runs the network on NHWC activations internally --
    the input is transposed once at the stem, the pools switch layout, inputs
    and outputs are unchanged -- which lets every convolution run without
    layout reorders.
    Returns the model, or (model, report) with return_report=True, where the
    report lists (layer path, what was fused)."""
    if not isinstance(model, nn.Layer):
        raise TypeError("fuse: argument 'model' must be a paddle.nn.Layer, got %s"
                        % type(model).__name__)
    data_format = None
    if channels_last:
        from paddle.vision.models.googlenet import GoogLeNet
        from paddle.vision.models.resnet import ResNet
        if not isinstance(model, (ResNet, GoogLeNet)) or not model.with_pool:
            raise ValueError("fuse: channels_last=True supports paddle.vision ResNets "
                             "and GoogLeNet built with with_pool=True (their outputs "
                             "stay unchanged), got %s" % type(model).__name__)
        data_format = "NHWC"
    if not inplace:
        import copy
        model = copy.deepcopy(model)
    report = []
    blocks = _block_types()
    from paddle.vision.models.googlenet import GoogLeNet
    if channels_last and isinstance(model, GoogLeNet):
        _fuse_googlenet_channels_last(model, report)
    elif type(model) in blocks:
        model = blocks[type(model)](model)
        report.append(("", type(model.original_layer[0]).__name__))
    elif type(model) is nn.Linear:
        model = Linear.from_layer(model)
        report.append(("", "Linear"))
    else:
        if isinstance(model, nn.Sequential):
            _fuse_sequential(model, report, "")
        _fuse_children(model, report, "", data_format)
    return (model, report) if return_report else model


def _unfuse_children(layer):
    for name, child in list(layer.named_children()):
        # (a Linear built as one, not swapped in, has no original to restore)
        if isinstance(child, _fused_types()) and hasattr(child, "original_layer"):
            original = child.original_layer[0]
            original.training = child.training  # train()/eval() since fuse() reached the slot only
            layer._sub_layers[name] = original
            child = original
        _unfuse_children(child)


def unfuse(model):
    """Restores the stock layers that fuse() replaced (in place); returns the model."""
    if isinstance(model, (FusedBottleneckBlock, FusedInceptionBlock)) or (
            isinstance(model, Linear) and hasattr(model, "original_layer")):
        model.original_layer[0].training = model.training
        return model.original_layer[0]
    _unfuse_children(model)
    return model



