"""Whole ResNet-50 and GoogLeNet at 224x224, batch 8: stock dygraph, fused
dygraph (paddle_fastconv.fuse) and, for eval, paddle.inference with oneDNN on
the exported stock model -- the deployment engine a user would compare with.
Outputs are checked to agree before timing.

    pytest benchmarks/test_bench_models.py --benchmark-json=models.json
"""
import numpy as np
import paddle
import pytest
from paddle.vision.models import googlenet, resnet50

import paddle_fastconv as pf
from paddle_fastconv.bench import peak_memory_mib
from paddle_fastconv.bench_models import inference_runner

from conftest import THREADS

BATCH, SIZE = 8, 224
RESNET50_GFLOP = 4.1 * 2  # ~4.1 GMACs per 224x224 image, forward
GOOGLENET_GFLOP = 1.43 * 2  # paddle.vision's GoogLeNet: 1.43 GMACs per image


@pytest.fixture(scope="module")
def models():
    paddle.seed(0)
    stock = resnet50()
    fused = resnet50()
    fused.set_state_dict(stock.state_dict())
    pf.fuse(fused)
    fused_nhwc = resnet50()
    fused_nhwc.set_state_dict(stock.state_dict())
    pf.fuse(fused_nhwc, channels_last=True)
    x = paddle.randn([BATCH, 3, SIZE, SIZE])
    return stock, {"fused": fused, "fused_channels_last": fused_nhwc}, x


@pytest.mark.parametrize("impl", ["stock", "fused", "fused_channels_last",
                                  "paddle_inference_onednn"])
def test_resnet50_eval(benchmark, bench_info, models, impl):
    stock, fused_models, x = models
    stock.eval()
    for m in fused_models.values():
        m.eval()
    with paddle.no_grad():
        ref = stock(x).numpy()
        if impl == "paddle_inference_onednn":
            fn = inference_runner(stock, x, SIZE, THREADS)
            got = fn()
        else:
            m = stock if impl == "stock" else fused_models[impl]
            fn = lambda: m(x)  # noqa: E731
            got = fn().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    bench_info.update(model="resnet50", mode="eval", impl=impl, batch=BATCH, image=SIZE)
    with paddle.no_grad():
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = RESNET50_GFLOP * BATCH / med


@pytest.mark.parametrize("impl", ["stock", "fused", "fused_channels_last"])
def test_resnet50_train_step(benchmark, bench_info, models, impl):
    """Forward, backward and an SGD-momentum step."""
    stock, fused_models, x = models
    m = stock if impl == "stock" else fused_models[impl]
    m.train()
    opt = paddle.optimizer.Momentum(1e-4, momentum=0.9, parameters=m.parameters())
    label = paddle.randint(0, 1000, [BATCH, 1])

    def step():
        loss = paddle.nn.functional.cross_entropy(m(x), label)
        loss.backward()
        opt.step()
        opt.clear_grad()

    bench_info.update(model="resnet50", mode="train", impl=impl, batch=BATCH, image=SIZE)
    step()  # warm, then the step's peak memory
    bench_info["peak_mib"] = peak_memory_mib(step)
    benchmark.pedantic(step, rounds=2, warmup_rounds=0, iterations=1)
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = 3 * RESNET50_GFLOP * BATCH / med


@pytest.fixture(scope="module")
def googlenets():
    paddle.seed(0)
    stock = googlenet()
    fused = {}
    for label, cl in (("fused", False), ("fused_channels_last", True)):
        m = googlenet()
        m.set_state_dict(stock.state_dict())
        fused[label] = pf.fuse(m, channels_last=cl)
    return stock, fused, paddle.randn([BATCH, 3, SIZE, SIZE])


@pytest.mark.parametrize("impl", ["stock", "fused", "fused_channels_last",
                                  "paddle_inference_onednn"])
def test_googlenet_eval(benchmark, bench_info, googlenets, impl):
    stock, fused_models, x = googlenets
    stock.eval()
    for m in fused_models.values():
        m.eval()
    with paddle.no_grad():
        ref = stock(x)[0].numpy()  # the main logits (the exported model's first output)
        if impl == "paddle_inference_onednn":
            fn = inference_runner(stock, x, SIZE, THREADS)
            got = fn()
        else:
            m = stock if impl == "stock" else fused_models[impl]
            fn = lambda: m(x)  # noqa: E731
            got = fn()[0].numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    bench_info.update(model="googlenet", mode="eval", impl=impl, batch=BATCH, image=SIZE)
    with paddle.no_grad():
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = GOOGLENET_GFLOP * BATCH / med


@pytest.mark.parametrize("impl", ["stock", "fused", "fused_channels_last"])
def test_googlenet_train_step(benchmark, bench_info, googlenets, impl):
    """Forward, backward and an SGD-momentum step on the main and auxiliary
    losses (weighted 1, 0.3, 0.3)."""
    stock, fused_models, x = googlenets
    m = stock if impl == "stock" else fused_models[impl]
    m.train()
    opt = paddle.optimizer.Momentum(1e-4, momentum=0.9, parameters=m.parameters())
    label = paddle.randint(0, 1000, [BATCH, 1])

    def step():
        out, aux1, aux2 = m(x)
        ce = paddle.nn.functional.cross_entropy
        loss = ce(out, label) + 0.3 * ce(aux1, label) + 0.3 * ce(aux2, label)
        loss.backward()
        opt.step()
        opt.clear_grad()

    bench_info.update(model="googlenet", mode="train", impl=impl, batch=BATCH, image=SIZE)
    step()
    bench_info["peak_mib"] = peak_memory_mib(step)
    benchmark.pedantic(step, rounds=2, warmup_rounds=0, iterations=1)
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = 3 * GOOGLENET_GFLOP * BATCH / med
