"""What the fused eval epilogue costs: the fused Conv+BN+ReLU layer in eval
(BN folded into the convolution, bias and ReLU on its output) against the
bare convolution alone (onednn_conv2d, no bias, BN or ReLU) on the same
weights, for the layers of test_bench_conv_bn_act.py, NCHW and NHWC. The
bare convolution runs twice: with the fused layer's own algorithm ("bare":
the Winograd kernel for the 3x3 layers and the 1x1 kernel for the NHWC
64->256 layer, so the ratio is the epilogue's cost alone; the NCHW 1x1
layers' bare convolution is oneDNN's, as the fused layer's would be
without an epilogue) and on oneDNN's direct kernels ("direct").

All run frozen, as deployed (pf.freeze: no per-call weight fingerprint;
the bare convolutions read the frozen layer's own weight), and are timed in
turns (each round: an untimed then two timed calls of each, the order
reversed every other round), so a drifting machine slows all alike; the
medians land in the JSON's extra_info (fused_ms, bare_ms, direct_ms), which
benchmarks/report.py tabulates. The fused output is checked against the
stock layers, and the bare convolutions against paddle's conv2d, first.

    pytest benchmarks/test_bench_epilogue.py --benchmark-json=epilogue.json
"""
import statistics
import time

import numpy as np
import paddle
import pytest

import paddle_fastconv as pf
from paddle_fastconv import bench
from paddle_fastconv.ops import onednn_conv2d

from conftest import THREADS

BATCH = 8
ROUNDS = 15
LAYERS = ["conv3x3_64x64_56", "conv1x1_64x256_56", "conv1x1_256x64_56",
          "conv3x3_128x128_28", "conv3x3_256x256_14"]


def _close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("layer", LAYERS)
def test_eval_fused_vs_bare_conv(benchmark, bench_info, layer, fmt):
    cin, cout, k, s, p, hw = spec = bench.LAYERS[layer]
    conv, bn, fused = bench._stock_fused(spec, fmt, training=False)
    paddle.seed(0)
    x = paddle.randn([BATCH, cin, hw, hw] if fmt == "NCHW" else [BATCH, hw, hw, cin])
    w = fused.conv.weight
    impls = {
        "fused": lambda: fused(x),
        # the same algorithm as the fused layer (our kernels where they apply)
        "bare": lambda: onednn_conv2d(x, w, stride=s, padding=p, data_format=fmt),
        "direct": lambda: onednn_conv2d(x, w, stride=s, padding=p, data_format=fmt,
                                        algorithm="direct"),
    }
    times = {name: [] for name in impls}
    pf.freeze(fused)
    try:
        with paddle.no_grad():
            _close(fused(x).numpy(), paddle.nn.functional.relu(bn(conv(x))).numpy())
            plain = paddle.nn.functional.conv2d(x, w, stride=s, padding=p,
                                                data_format=fmt).numpy()
            _close(impls["bare"]().numpy(), plain)
            _close(impls["direct"]().numpy(), plain)
            order = list(impls)
            for r in range(ROUNDS):
                for name in order if r % 2 == 0 else order[::-1]:
                    f = impls[name]
                    f()  # untimed
                    for _ in range(2):
                        t = time.perf_counter()
                        f()
                        times[name].append(time.perf_counter() - t)
            benchmark.pedantic(impls["fused"], rounds=3, warmup_rounds=1, iterations=1)
    finally:
        pf.unfreeze(fused)
    fused_ms = statistics.median(times["fused"]) * 1e3
    bare_ms = statistics.median(times["bare"]) * 1e3
    direct_ms = statistics.median(times["direct"]) * 1e3
    bench_info.update(epilogue_layer=layer, data_format=fmt, batch=BATCH, threads=THREADS,
                      fused_ms=fused_ms, bare_ms=bare_ms, fused_over_bare=fused_ms / bare_ms,
                      direct_ms=direct_ms, fused_over_direct=fused_ms / direct_ms)
