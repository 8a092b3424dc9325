"""GoogLeNet Inception blocks 3a (192 channels in, 28x28) and 4a (480 in,
14x14), batch 8: the stock block (paddle.vision.models.googlenet.Inception,
or the same stock layers in NHWC) against the fused Inception op, eval and
a training step, after checking that their outputs agree.

    pytest benchmarks/test_bench_inception.py --benchmark-json=inception.json
"""
import numpy as np
import paddle
import pytest
from paddle.vision.models.googlenet import Inception as VisionInception

from block_timing import time_eval, time_train_step
from paddle_fastconv.nn import Inception

BATCH = 8
BLOCKS = {"3a": ((192, 192, 64, 96, 128, 16, 32, 32), 28),
          "4a": ((480, 480, 192, 96, 208, 16, 48, 64), 14)}


def _gflop(args, hw):
    cin, _, f1, f3r, f3, f5r, f5, proj = args
    macs = hw * hw * (cin * (f1 + f3r + f5r + proj) + f3r * f3 * 9 + f5r * f5 * 25)
    return 2 * macs * BATCH / 1e9


def _setup(block, impl, fmt, training):
    args, hw = BLOCKS[block]
    paddle.seed(0)
    stock = VisionInception(*args) if fmt == "NCHW" else \
        Inception(*args, fused=False, data_format=fmt)
    fused = Inception(*args, data_format=fmt)
    fused.set_state_dict(stock.state_dict())
    x = paddle.randn([BATCH, args[0], hw, hw] if fmt == "NCHW" else [BATCH, hw, hw, args[0]])
    for m in (stock, fused):
        m.train() if training else m.eval()
    with paddle.no_grad():
        a, b = stock(x).numpy(), fused(x).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    return (stock if impl == "stock" else fused), x, _gflop(args, hw)




@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_inception_eval(benchmark, bench_info, block, impl, fmt):
    m, x, gflop = _setup(block, impl, fmt, training=False)
    bench_info.update(layer="inception" + block, mode="eval", impl=impl, data_format=fmt,
                      batch=BATCH)
    time_eval(benchmark, bench_info, m, x, gflop)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("block", list(BLOCKS))
def test_inception_train_step(benchmark, bench_info, block, impl, fmt):
    """Forward and backward (input and parameter gradients)."""
    m, x, gflop = _setup(block, impl, fmt, training=True)
    bench_info.update(layer="inception" + block, mode="train", impl=impl, data_format=fmt,
                      batch=BATCH)
    time_train_step(benchmark, bench_info, m, x, gflop)
