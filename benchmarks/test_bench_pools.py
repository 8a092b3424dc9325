"""Max pools of the fused models: Paddle's max_pool2d against this package's
kernel (pf.ops.max_pool2d, what fuse() swaps into paddle.vision's ResNet
stem and GoogLeNet), NCHW and NHWC, timed in the same parametrization after
checking that their outputs agree.

    pytest benchmarks/test_bench_pools.py --benchmark-json=out.json
"""
import numpy as np
import paddle
import pytest

from paddle_fastconv.ops import max_pool2d

BATCH = 8
# name: (channels, input size, kernel, stride, padding)
POOLS = {
    "maxpool_64_112": (64, 112, 3, 2, 1),   # the ResNet stem's
    "maxpool_192_55": (192, 55, 3, 2, 0),   # GoogLeNet's second
}


def _setup(pool, fmt):
    c, hw, k, s, p = POOLS[pool]
    paddle.seed(0)
    x = paddle.randn([BATCH, c, hw, hw] if fmt == "NCHW" else [BATCH, hw, hw, c])
    fns = {
        "stock": lambda t: paddle.nn.functional.max_pool2d(t, k, s, p, data_format=fmt),
        "fused": lambda t: max_pool2d(t, k, s, p, data_format=fmt),
    }
    with paddle.no_grad():
        np.testing.assert_array_equal(fns["fused"](x).numpy(), fns["stock"](x).numpy())
    return x, fns


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("pool", list(POOLS))
def test_eval(benchmark, bench_info, pool, impl, fmt):
    x, fns = _setup(pool, fmt)
    bench_info.update(layer=pool, mode="eval", impl=impl, data_format=fmt, batch=BATCH)
    with paddle.no_grad():
        benchmark.pedantic(lambda: fns[impl](x), rounds=9, warmup_rounds=2, iterations=1)
    bench_info["images_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("pool", list(POOLS))
def test_train_step(benchmark, bench_info, pool, impl, fmt):
    """Forward + backward (the input gradient)."""
    x, fns = _setup(pool, fmt)
    xg = x.detach()
    xg.stop_gradient = False
    f = fns[impl]

    def step():
        y = f(xg)
        y.backward(paddle.ones_like(y))

    bench_info.update(layer=pool, mode="train", impl=impl, data_format=fmt, batch=BATCH)
    benchmark.pedantic(step, rounds=7, warmup_rounds=2, iterations=1)
    bench_info["images_per_s"] = BATCH / benchmark.stats.stats.median
