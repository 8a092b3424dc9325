"""Whole ResNet-50 and GoogLeNet at 224x224, batch 8: stock dygraph, fused
dygraph (paddle_fastconv.fuse, NCHW and channels_last; in eval frozen by
paddle_fastconv.freeze, as deployed) and, for eval,
paddle.inference with oneDNN on the exported stock model -- the deployment
engine a user would compare with. Outputs are checked to agree before timing.
"onednn_conv_floor" times the model's convolutions alone on oneDNN's kernels
(paddle_fastconv.floor; forward, and in training also both gradients): no
engine on these kernels can be faster, so stock / floor bounds the speedup.

    pytest benchmarks/test_bench_models.py --benchmark-json=models.json
"""
import numpy as np
import paddle
import pytest
from paddle.vision.models import googlenet, resnet50

import paddle_fastconv as pf
from paddle_fastconv.bench import peak_memory_mib
from paddle_fastconv.bench_models import GMACS, inference_runner, main_output, training_loss
from paddle_fastconv.floor import conv_floor

from conftest import THREADS

BATCH, SIZE = 8, 224
EVAL_IMPLS = ["stock", "fused", "fused_channels_last", "paddle_inference_onednn",
              "onednn_conv_floor"]
TRAIN_IMPLS = ["stock", "fused", "fused_channels_last", "onednn_conv_floor"]


def _zoo(ctor):
    """The stock model, and fused copies (NCHW and channels_last) with its
    weights, plus the input batch."""
    paddle.seed(0)
    stock = ctor()
    fused = {}
    for label, cl in (("fused", False), ("fused_channels_last", True)):
        m = ctor()
        m.set_state_dict(stock.state_dict())
        fused[label] = pf.fuse(m, channels_last=cl)
    return stock, fused, paddle.randn([BATCH, 3, SIZE, SIZE])


@pytest.fixture(scope="module")
def models():
    return _zoo(resnet50)


@pytest.fixture(scope="module")
def googlenets():
    return _zoo(googlenet)


def _bench_eval(benchmark, bench_info, zoo, name, impl):
    """Times one implementation's forward after checking its main output
    (GoogLeNet: the logits, also the exported model's first output)."""
    stock, fused_models, x = zoo
    stock.eval()
    for m in fused_models.values():
        m.eval()
    bench_info.update(model=name, mode="eval", impl=impl, batch=BATCH, image=SIZE)
    if impl == "onednn_conv_floor":  # convolutions only: no output to check
        fn = conv_floor(stock, x, "eval")
        benchmark.pedantic(fn, rounds=3, warmup_rounds=1, iterations=1)
        bench_info["images_per_s"] = BATCH / benchmark.stats.stats.median
        return
    frozen = fused_models.get(impl)
    if frozen is not None:
        pf.freeze(frozen)  # as deployed: see paddle_fastconv.freeze
    try:
        with paddle.no_grad():
            ref = main_output(stock(x)).numpy()
            if impl == "paddle_inference_onednn":
                fn = inference_runner(stock, x, SIZE, THREADS)
                got = fn()
            else:
                m = stock if frozen is None else frozen
                fn = lambda: m(x)  # noqa: E731
                got = main_output(fn()).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
        # Three untimed runs: paddle.inference builds and caches its oneDNN
        # primitives over its first runs, and one warm-up left it slower than
        # in the CLI's rounds (47-52 against 66-68 img/s for GoogLeNet).
        with paddle.no_grad():
            benchmark.pedantic(fn, rounds=3, warmup_rounds=3, iterations=1)
    finally:
        if frozen is not None:
            pf.unfreeze(frozen)  # the training cases share the models
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = 2 * GMACS[name] * BATCH / med


def _bench_train(benchmark, bench_info, zoo, name, impl):
    """Forward, backward and an SGD-momentum step (GoogLeNet: on the main
    and auxiliary losses, weighted 1, 0.3, 0.3)."""
    stock, fused_models, x = zoo
    bench_info.update(model=name, mode="train", impl=impl, batch=BATCH, image=SIZE)
    if impl == "onednn_conv_floor":
        fn = conv_floor(stock, x, "train")
        benchmark.pedantic(fn, rounds=2, warmup_rounds=1, iterations=1)
        bench_info["images_per_s"] = BATCH / benchmark.stats.stats.median
        return
    m = stock if impl == "stock" else fused_models[impl]
    m.train()
    opt = paddle.optimizer.Momentum(1e-4, momentum=0.9, parameters=m.parameters())
    label = paddle.randint(0, 1000, [BATCH, 1])

    def step():
        training_loss(m(x), label).backward()
        opt.step()
        opt.clear_grad()

    step()  # warm, then the step's peak memory
    bench_info["peak_mib"] = peak_memory_mib(step)
    benchmark.pedantic(step, rounds=2, warmup_rounds=0, iterations=1)
    med = benchmark.stats.stats.median
    bench_info["images_per_s"] = BATCH / med
    bench_info["gflops"] = 6 * GMACS[name] * BATCH / med


@pytest.mark.parametrize("impl", EVAL_IMPLS)
def test_resnet50_eval(benchmark, bench_info, models, impl):
    _bench_eval(benchmark, bench_info, models, "resnet50", impl)


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
def test_resnet50_train_step(benchmark, bench_info, models, impl):
    _bench_train(benchmark, bench_info, models, "resnet50", impl)


@pytest.mark.parametrize("impl", EVAL_IMPLS)
def test_googlenet_eval(benchmark, bench_info, googlenets, impl):
    _bench_eval(benchmark, bench_info, googlenets, "googlenet", impl)


@pytest.mark.parametrize("impl", TRAIN_IMPLS)
def test_googlenet_train_step(benchmark, bench_info, googlenets, impl):
    _bench_train(benchmark, bench_info, googlenets, "googlenet", impl)
