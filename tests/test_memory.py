"""Memory: caches are bounded and freed with their layer, and long training
and inference loops do not grow the process."""
import gc
import json
import os
import subprocess
import sys
import textwrap

import paddle
import pytest

import paddle_fastconv as pf

ROOT = os.path.dirname(os.path.dirname(pf.__file__))


def test_folded_weights_are_freed_with_their_layer():
    pf.clear_caches()
    layers = [pf.ConvBNReLU(4, 8, 3, padding=1) for _ in range(3)]
    x = paddle.randn([2, 4, 6, 6])
    with paddle.no_grad():
        for layer in layers:
            layer.eval()
            layer(x)
    if not pf.onednn_available():
        pytest.skip("folded weights are cached by the oneDNN engine only")
    assert pf.cache_info()["folded_weights"] == 3
    del layer  # the loop variable holds the last one
    del layers[0]
    gc.collect()
    assert pf.cache_info()["folded_weights"] == 2
    layers.clear()
    gc.collect()
    assert pf.cache_info()["folded_weights"] == 0


# Runs in a fresh process (a clean heap) and prints the resident set size
# after warm-up and after the measured iterations, in MiB. LEAK=1 keeps every
# output alive: the control that shows the measurement can see a leak.
_LOOP = textwrap.dedent("""
    import gc, json, os, sys
    sys.path.insert(0, {root!r})  # the paddle_fastconv this test imported
    import paddle, paddle_fastconv as pf
    pf.set_num_threads(2)

    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0

    paddle.seed(0)
    layer = pf.ConvBNReLU(16, 32, 3, padding=1)
    block = pf.nn.BottleneckBlock(32, 8)
    opt = paddle.optimizer.Momentum(0.01, parameters=layer.parameters() + block.parameters())
    x = paddle.randn([4, 16, 16, 16])  # each output: 4*32*16*16 floats = 128 KiB
    kept = []

    def step(i):
        if i % 2 == 0:
            layer.train(), block.train()
            y = block(layer(x))
            y.mean().backward()
            opt.step()
            opt.clear_grad()
        else:
            layer.eval(), block.eval()
            with paddle.no_grad():
                y = block(layer(x))
        if os.environ.get("LEAK") == "1":
            kept.append(y)

    for i in range({warmup}):
        step(i)
    gc.collect()
    before = rss_mib()
    for i in range({iters}):
        step(i)
    gc.collect()
    print(json.dumps({{"before": before, "after": rss_mib()}}))
""")


def _rss_growth(leak, warmup=60, iters=300):
    code = _LOOP.format(root=ROOT, warmup=warmup, iters=iters)
    env = dict(os.environ, LEAK="1" if leak else "0", OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["after"] - r["before"]


# 300 iterations: one leaked 128 KiB output per iteration is 37 MiB; the
# allowance covers allocator and page-cache noise of a quiet loop.
GROWTH_LIMIT_MIB = 8.0


def test_no_memory_growth_over_training_and_inference_iterations():
    growth = _rss_growth(leak=False)
    assert growth < GROWTH_LIMIT_MIB, "process grew by %.1f MiB over 300 iterations" % growth


def test_memory_growth_check_sees_a_leak():
    """The control: the same loop keeping its outputs must fail the check."""
    growth = _rss_growth(leak=True, warmup=20, iters=300)
    assert growth > GROWTH_LIMIT_MIB, growth
