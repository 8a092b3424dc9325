"""ResNet builders with the architecture and state dict of
`paddle.vision.models.resnet*`; `fused=True` runs them on the fused op."""
from paddle.vision.models import resnet as _resnet

from .fusion import fuse

__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def _build(depth, fused, num_classes, with_pool, **kwargs):
    block = _resnet.BasicBlock if depth in (18, 34) else _resnet.BottleneckBlock
    model = _resnet.ResNet(block, depth, num_classes=num_classes, with_pool=with_pool,
                           **kwargs)
    return fuse(model) if fused else model


def resnet18(fused=True, num_classes=1000, with_pool=True, **kwargs):
    return _build(18, fused, num_classes, with_pool, **kwargs)


def resnet34(fused=True, num_classes=1000, with_pool=True, **kwargs):
    return _build(34, fused, num_classes, with_pool, **kwargs)


def resnet50(fused=True, num_classes=1000, with_pool=True, **kwargs):
    return _build(50, fused, num_classes, with_pool, **kwargs)


def resnet101(fused=True, num_classes=1000, with_pool=True, **kwargs):
    return _build(101, fused, num_classes, with_pool, **kwargs)


def resnet152(fused=True, num_classes=1000, with_pool=True, **kwargs):
    return _build(152, fused, num_classes, with_pool, **kwargs)
