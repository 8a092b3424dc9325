"""ResNet and GoogLeNet builders with the architecture and state dict of
`paddle.vision.models.resnet*` / `googlenet`; `fused=True` runs them on the
fused ops.

data_format="NHWC" (fused only) builds a model that takes NHWC images and
runs NHWC activations throughout (paddle.vision's ResNet is NCHW only); the
state dict is the same as the NCHW model's (Paddle's filters are
[out, in, kh, kw] for either layout)."""
from paddle.vision.models import resnet as _resnet

from .fusion import fuse

__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet"]


def _build(depth, fused, num_classes, with_pool, data_format="NCHW", **kwargs):
    name = "resnet%d" % depth
    if data_format not in ("NCHW", "NHWC"):
        raise ValueError("%s: argument 'data_format' must be 'NCHW' or 'NHWC', got %r"
                         % (name, data_format))
    if data_format == "NHWC" and not (fused and with_pool):
        raise ValueError("%s: data_format='NHWC' needs fused=True and with_pool=True "
                         "(paddle.vision's ResNet is NCHW only)" % name)
    block = _resnet.BasicBlock if depth in (18, 34) else _resnet.BottleneckBlock
    model = _resnet.ResNet(block, depth, num_classes=num_classes, with_pool=with_pool,
                           **kwargs)
    if not fused:
        return model
    if data_format == "NHWC":
        fuse(model, channels_last=True)
        model.conv1.nchw_input = False  # the caller's images are NHWC already
        return model
    return fuse(model)


def resnet18(fused=True, num_classes=1000, with_pool=True, data_format="NCHW", **kwargs):
    return _build(18, fused, num_classes, with_pool, data_format, **kwargs)


def resnet34(fused=True, num_classes=1000, with_pool=True, data_format="NCHW", **kwargs):
    return _build(34, fused, num_classes, with_pool, data_format, **kwargs)


def resnet50(fused=True, num_classes=1000, with_pool=True, data_format="NCHW", **kwargs):
    return _build(50, fused, num_classes, with_pool, data_format, **kwargs)


def resnet101(fused=True, num_classes=1000, with_pool=True, data_format="NCHW", **kwargs):
    return _build(101, fused, num_classes, with_pool, data_format, **kwargs)


def resnet152(fused=True, num_classes=1000, with_pool=True, data_format="NCHW", **kwargs):
    return _build(152, fused, num_classes, with_pool, data_format, **kwargs)


def googlenet(fused=True, num_classes=1000, with_pool=True, batch_norm=False):
    """GoogLeNet (Inception v1). batch_norm=False: the architecture, the three
    outputs (main logits and two auxiliary heads) and the state dict of
    paddle.vision.models.googlenet; fused=False returns that stock model
    itself. batch_norm=True: the BN variant (Conv + BatchNorm + ReLU for every
    convolution; fused=False builds it from stock layers). fused=True runs the
    Inception blocks on the fused Inception op and the other convolutions on
    the fused kernels (float32, CPU)."""
    from paddle.vision.models.googlenet import GoogLeNet as _Vision
    from .googlenet import GoogLeNet
    if not fused and not batch_norm:
        return _Vision(num_classes=num_classes, with_pool=with_pool)
    return GoogLeNet(num_classes=num_classes, with_pool=with_pool, batch_norm=batch_norm,
                     fused=fused)
