"""Caches, threads and determinism of the CPU engine."""
import threading

import numpy as np
import paddle
import pytest

import paddle_fastconv as pf
from helpers import make_pair, stock_forward
from tolerances import assert_close


def test_cache_capacity_bounds_and_clear():
    before = pf.cache_info()
    try:
        pf.clear_caches()
        info = pf.cache_info()
        assert {k: info[k] for k in ("plans", "folded_weights", "scratch_bytes",
                                     "host_pool_bytes")} == dict.fromkeys(
            ("plans", "folded_weights", "scratch_bytes", "host_pool_bytes"), 0)
        assert set(info) == {"plans", "folded_weights", "scratch_bytes", "host_pool_bytes",
                             "weight_checks", "frozen_weights"}
        pf.set_cache_capacity(plans=2, folded_weights=1)
        layers = [pf.ConvBNReLU(4, 8, 3, padding=1) for _ in range(3)]
        x = paddle.randn([2, 4, 6 + 1, 7])
        with paddle.no_grad():
            for layer in layers:
                layer.eval()
                layer(x)
        info = pf.cache_info()
        assert info["folded_weights"] <= 1 and info["plans"] <= 4  # 2 per direction
        # evicted entries are rebuilt on use, and results stay right
        fused, conv, bn = make_pair(4, 8, 3, 1, 1)
        for m in (fused, conv, bn):
            m.eval()
        with paddle.no_grad():
            assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out")
    finally:
        pf.set_cache_capacity()
        assert before is not None


def test_host_pool_reuses_freed_outputs_and_stays_bounded():
    """Large CPU outputs come from a pool of reused memory (no page faults on
    first write): a freed output's block serves the next call, results are
    unchanged, the pool never holds more than its capacity, clear_caches()
    empties it and capacity 0 turns it off."""
    if not pf.host_pool_available():
        pytest.skip("this Paddle's from_blob cannot return blocks to a pool (Paddle < 3)")
    conv, bn = paddle.nn.Conv2D(8, 64, 3, padding=1), paddle.nn.BatchNorm2D(64)
    layer = pf.ConvBNReLU.from_layers(conv, bn)
    layer.eval()  # (eval: the output is the only large tensor)
    x = paddle.randn([2, 8, 40, 40])  # 800 KiB outputs: pooled
    try:
        pf.clear_caches()
        with paddle.no_grad():
            y = layer(x)
        ptr = y.data_ptr()
        expected = y.numpy()
        del y
        held = pf.cache_info()["host_pool_bytes"]
        assert held >= 2 * 64 * 40 * 40 * 4  # y's block came back
        with paddle.no_grad():
            y2 = layer(x)
        assert y2.data_ptr() == ptr  # and serves the next output
        np.testing.assert_array_equal(y2.numpy(), expected)
        del y2
        pf.set_cache_capacity(host_pool_bytes=300 << 10)
        assert pf.cache_info()["host_pool_bytes"] <= 300 << 10
        pf.clear_caches()
        assert pf.cache_info()["host_pool_bytes"] == 0
        pf.set_cache_capacity(host_pool_bytes=0)
        layer(x)
        assert pf.cache_info()["host_pool_bytes"] == 0
    finally:
        pf.set_cache_capacity()


def test_peak_memory_counts_pooled_outputs():
    """The benchmarks' peak-memory figure includes the pool's blocks, which
    Paddle's allocator statistics do not see."""
    from paddle_fastconv import bench
    if not pf.host_pool_available() or bench.peak_memory_mib(lambda: None) is None:
        pytest.skip("needs the host pool and Paddle's allocator statistics (Paddle 3)")
    layer = pf.ConvBNReLU(8, 64, 3, padding=1)
    layer.eval()
    x = paddle.randn([4, 8, 64, 64])  # 4 MiB output, pooled
    kept = []

    def step():
        with paddle.no_grad():
            kept.append(layer(x))
    pf.clear_caches()
    assert bench.peak_memory_mib(step) >= 4.0


def test_host_pool_is_available_on_paddle_3():
    major = int(paddle.__version__.split(".")[0])
    assert pf.host_pool_available() == (major >= 3 or paddle.__version__ == "0.0.0")


def test_bad_cache_and_thread_arguments():
    with pytest.raises(ValueError, match="'plans'"):
        pf.set_cache_capacity(plans=-1)
    with pytest.raises(ValueError, match="'host_pool_bytes'"):
        pf.set_cache_capacity(host_pool_bytes=-1)
    with pytest.raises(ValueError, match="'n'"):
        pf.set_num_threads(0)
    with pytest.raises(ValueError, match="'name'"):
        pf.set_cpu_conv_engine("mkl")


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_bitwise_deterministic_run_to_run(fmt):
    fused, _, _ = make_pair(8, 16, 3, 1, 1, data_format=fmt)
    x = paddle.randn([2, 8, 9, 9] if fmt == "NCHW" else [2, 9, 9, 8])
    results = []
    for _ in range(2):
        xi = x.detach()
        xi.stop_gradient = False
        fused.clear_gradients()
        y = fused(xi)
        y.backward(paddle.ones_like(y))
        results.append([y.numpy(), xi.grad.numpy(), fused.conv.weight.grad.numpy(),
                        fused.bn.weight.grad.numpy()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_concurrent_inference_threads():
    """Several Python threads run eval on shared and separate layers at once:
    the primitive and folded-weight caches and the scratch arenas are safe."""
    pairs = [make_pair(8, 16, 3, 1, 1, seed=s) for s in range(3)]
    for fused, conv, bn in pairs:
        for m in (fused, conv, bn):
            m.eval()
    inputs = [paddle.randn([2, 8, 10, 10]) for _ in range(4)]
    with paddle.no_grad():
        expected = [[stock_forward(c, b, "relu", x).numpy() for x in inputs]
                    for _, c, b in pairs]
    errors = []

    def worker(k):
        try:
            with paddle.no_grad():
                for it in range(20):
                    i, j = (k + it) % len(pairs), it % len(inputs)
                    y = pairs[i][0](inputs[j]).numpy()
                    err = np.abs(y - expected[i][j]).max()
                    if err > 1e-4:
                        errors.append((k, it, err))
        except Exception as e:  # surfaced below
            errors.append((k, repr(e)))

    pf.clear_caches()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
