"""The classifier heads' Linear layers (GoogLeNet's and ResNet-50's shapes):
the stock paddle.nn.Linear against pf.nn.Linear (what fuse() swaps in:
oneDNN's sgemm on float32 CPU tensors), timed in the same parametrization
after checking that their outputs agree.

    pytest benchmarks/test_bench_linear.py --benchmark-json=out.json
"""
import numpy as np
import paddle
import pytest

import paddle_fastconv as pf

BATCH = 8
# name: (in_features, out_features)
LINEARS = {
    "linear_1152x1024": (1152, 1024),  # GoogLeNet's auxiliary heads
    "linear_1024x1000": (1024, 1000),  # GoogLeNet's classifiers
    "linear_2048x1000": (2048, 1000),  # ResNet-50's classifier
}


def _setup(name):
    k, n = LINEARS[name]
    paddle.seed(0)
    stock = paddle.nn.Linear(k, n)
    fused = pf.nn.Linear.from_layer(stock)
    x = paddle.randn([BATCH, k])
    with paddle.no_grad():
        a, b = stock(x).numpy(), fused(x).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    return x, {"stock": stock, "fused": fused}


def _flops(name):
    k, n = LINEARS[name]
    return 2 * BATCH * k * n


def _record(benchmark, info, flops):
    med = benchmark.stats.stats.median
    info["images_per_s"] = BATCH / med
    info["gflops"] = flops / med / 1e9


@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("name", list(LINEARS))
def test_eval(benchmark, bench_info, name, impl):
    x, layers = _setup(name)
    bench_info.update(layer=name, mode="eval", impl=impl, data_format="-", batch=BATCH)
    with paddle.no_grad():
        benchmark.pedantic(lambda: layers[impl](x), rounds=30, warmup_rounds=3, iterations=1)
    _record(benchmark, bench_info, _flops(name))


@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("name", list(LINEARS))
def test_train_step(benchmark, bench_info, name, impl):
    """Forward + backward (input, weight and bias gradients)."""
    x, layers = _setup(name)
    xg = x.detach()
    xg.stop_gradient = False
    layer = layers[impl]

    def step():
        y = layer(xg)
        y.backward(paddle.ones_like(y))

    bench_info.update(layer=name, mode="train", impl=impl, data_format="-", batch=BATCH)
    benchmark.pedantic(step, rounds=30, warmup_rounds=3, iterations=1)
    _record(benchmark, bench_info, 3 * _flops(name))  # y, dX and dW: one GEMM each
