"""ResNet blocks, batch 8: paddle.vision's stock BottleneckBlock / BasicBlock
against the fused one-op block (nn.BottleneckBlock / nn.BasicBlock), eval
and a training step, NCHW and NHWC, after checking that their outputs agree.

- bottleneck_256_64_56: 256 -> 64 -> 256 at 56x56, identity shortcut (the
  block of issue #3's target; ResNet-50's layer1 blocks 2-3);
- bottleneck_512_256_28s2: 512 -> 256 -> 1024, stride 2 with downsample, in
  at 28x28 (ResNet-50's first layer3 block);
- basic_64_56: 64 -> 64 at 56x56 (ResNet-18/34's layer1).

NHWC stock blocks are the same paddle.vision layers switched to NHWC.

    pytest benchmarks/test_bench_blocks.py --benchmark-json=blocks.json
"""
import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import resnet as vr

from block_timing import time_eval, time_train_step
from paddle_fastconv.fusion import FusedBasicBlock, FusedBottleneckBlock

BATCH = 8
# kind, inplanes, planes, stride, input size
BLOCKS = {"bottleneck_256_64_56": ("bottleneck", 256, 64, 1, 56),
          "bottleneck_512_256_28s2": ("bottleneck", 512, 256, 2, 28),
          "basic_64_56": ("basic", 64, 64, 1, 56)}


def _gflop(kind, cin, planes, stride, hw):
    out = hw // stride
    if kind == "bottleneck":
        macs = hw * hw * cin * planes + out * out * (planes * planes * 9 + planes * planes * 4)
        if stride != 1 or cin != planes * 4:
            macs += out * out * cin * planes * 4
    else:
        macs = out * out * (cin * planes * 9 + planes * planes * 9)
        if stride != 1 or cin != planes:
            macs += out * out * cin * planes
    return 2 * macs * BATCH / 1e9


def _stock(kind, cin, planes, stride, fmt):
    exp = 4 if kind == "bottleneck" else 1
    ds = None
    if stride != 1 or cin != planes * exp:
        ds = nn.Sequential(nn.Conv2D(cin, planes * exp, 1, stride=stride, bias_attr=False),
                           nn.BatchNorm2D(planes * exp))
    block = (vr.BottleneckBlock if kind == "bottleneck" else vr.BasicBlock)(
        cin, planes, stride, ds)
    for layer in block.sublayers():  # (filters are [O, C, KH, KW] in either layout)
        if isinstance(layer, (nn.Conv2D, nn.BatchNorm2D)):
            layer._data_format = fmt
    return block


def _setup(name, impl, fmt, training):
    kind, cin, planes, stride, hw = BLOCKS[name]
    paddle.seed(0)
    stock = _stock(kind, cin, planes, stride, fmt)
    fused = _stock(kind, cin, planes, stride, "NCHW")
    fused.set_state_dict(stock.state_dict())
    fused = (FusedBottleneckBlock if kind == "bottleneck" else FusedBasicBlock)(
        fused, data_format=fmt)
    assert fused.one_op
    x = paddle.randn([BATCH, cin, hw, hw] if fmt == "NCHW" else [BATCH, hw, hw, cin])
    for m in (stock, fused):
        m.train() if training else m.eval()
    with paddle.no_grad():
        a, b = stock(x).numpy(), fused(x).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    return (stock if impl == "stock" else fused), x, _gflop(kind, cin, planes, stride, hw)




@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_block_eval(benchmark, bench_info, block, impl, fmt):
    m, x, gflop = _setup(block, impl, fmt, training=False)
    bench_info.update(layer=block, mode="eval", impl=impl, data_format=fmt, batch=BATCH)
    time_eval(benchmark, bench_info, m, x, gflop)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_block_train_step(benchmark, bench_info, block, impl, fmt):
    """Forward and backward (input and parameter gradients)."""
    m, x, gflop = _setup(block, impl, fmt, training=True)
    bench_info.update(layer=block, mode="train", impl=impl, data_format=fmt, batch=BATCH)
    time_train_step(benchmark, bench_info, m, x, gflop)
