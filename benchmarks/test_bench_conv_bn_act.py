"""Conv+BN+ReLU layers of ResNet-50's shapes: stock dygraph layers, the fused
layer, and (eval) the bare oneDNN convolution, timed in the same
parametrization after checking that stock and fused agree.

    pytest benchmarks/test_bench_conv_bn_act.py --benchmark-json=out.json
"""
import numpy as np
import paddle
import pytest

from paddle_fastconv import bench
from paddle_fastconv.ops import onednn_conv2d

BATCH = 8
LAYERS = ["conv3x3_64x64_56", "conv1x1_64x256_56", "conv1x1_256x64_56",
          "conv3x3_128x128_28", "conv3x3_256x256_14"]


def _setup(layer, fmt, training):
    spec = bench.LAYERS[layer]
    cin, cout, k, s, p, hw = spec
    conv, bn, fused = bench._stock_fused(spec, fmt, training)
    paddle.seed(0)
    x = paddle.randn([BATCH, cin, hw, hw] if fmt == "NCHW" else [BATCH, hw, hw, cin])
    with paddle.no_grad():
        a = paddle.nn.functional.relu(bn(conv(x))).numpy()
        b = fused(x).numpy()
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    hw_out = (hw + 2 * p - k) // s + 1
    return spec, conv, bn, fused, x, bench.conv_flops(cin, cout, k, hw_out, BATCH)


def _record(benchmark, info, flops):
    med = benchmark.stats.stats.median
    info["images_per_s"] = BATCH / med
    info["gflops"] = flops / med / 1e9


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused", "onednn_conv"])
@pytest.mark.parametrize("layer", LAYERS)
def test_eval(benchmark, bench_info, layer, impl, fmt):
    spec, conv, bn, fused, x, flops = _setup(layer, fmt, training=False)
    cin, cout, k, s, p, hw = spec
    fns = {
        "stock": lambda: paddle.nn.functional.relu(bn(conv(x))),
        "fused": lambda: fused(x),
        "onednn_conv": lambda: onednn_conv2d(x, conv.weight, stride=s, padding=p,
                                             data_format=fmt, algorithm="direct"),
    }
    bench_info.update(layer=layer, mode="eval", impl=impl, data_format=fmt, batch=BATCH)
    with paddle.no_grad():
        benchmark.pedantic(fns[impl], rounds=7, warmup_rounds=2, iterations=1)
    _record(benchmark, bench_info, flops)


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("impl", ["stock", "fused"])
@pytest.mark.parametrize("layer", LAYERS)
def test_train_step(benchmark, bench_info, layer, impl, fmt):
    """Forward + backward (data, weights, BN parameters)."""
    spec, conv, bn, fused, x, flops = _setup(layer, fmt, training=True)
    xg = x.detach()
    xg.stop_gradient = False
    f = fused if impl == "fused" else (lambda t: paddle.nn.functional.relu(bn(conv(t))))

    def step():
        y = f(xg)
        y.backward(paddle.ones_like(y))

    bench_info.update(layer=layer, mode="train", impl=impl, data_format=fmt, batch=BATCH)
    step()  # warm (plans, scratch), then the step's peak memory
    bench_info["peak_mib"] = bench.peak_memory_mib(step)
    benchmark.pedantic(step, rounds=5, warmup_rounds=1, iterations=1)
    _record(benchmark, bench_info, 3 * flops)
