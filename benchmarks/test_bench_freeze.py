"""Eval with and without the per-call weight check (paddle_fastconv.freeze):
fused channels_last ResNet-50 and GoogLeNet at 224x224, batch 1 (where
reading every weight once per forward weighs most) and batch 8. "checked"
fingerprints each cached layer's weights on every call (the default);
"frozen" runs the same model after pf.freeze. The two are timed in turns
(each round: unfreeze, an untimed then a timed run; freeze, the same; the
order alternating per round), so a drifting machine slows both alike; the
medians land in the JSON's extra_info (checked_ms, frozen_ms), which
benchmarks/report.py tabulates. Outputs are checked against stock first.

    pytest benchmarks/test_bench_freeze.py --benchmark-json=freeze.json
"""
import statistics
import time

import numpy as np
import paddle
import pytest
from paddle.vision.models import googlenet, resnet50

import paddle_fastconv as pf
from paddle_fastconv.bench_models import main_output

from conftest import THREADS

SIZE = 224
CTORS = {"resnet50": resnet50, "googlenet": googlenet}


@pytest.fixture(scope="module", params=sorted(CTORS))
def zoo(request):
    paddle.seed(0)
    stock = CTORS[request.param]()
    fused = CTORS[request.param]()
    fused.set_state_dict(stock.state_dict())
    stock.eval(), fused.eval()
    return request.param, stock, pf.fuse(fused, channels_last=True)


def _checks():
    return pf.cache_info()["weight_checks"]


@pytest.mark.parametrize("batch", [1, 8])
def test_eval_checked_vs_frozen(benchmark, bench_info, zoo, batch):
    name, stock, fused = zoo
    x = paddle.randn([batch, 3, SIZE, SIZE])
    rounds = 15 if batch == 1 else 5
    times = {"checked": [], "frozen": []}
    checks = {"checked": 0, "frozen": 0}
    try:
        with paddle.no_grad():
            ref = main_output(stock(x)).numpy()
            for r in range(rounds):
                for impl in ("checked", "frozen") if r % 2 == 0 else ("frozen", "checked"):
                    (pf.freeze if impl == "frozen" else pf.unfreeze)(fused)
                    got = main_output(fused(x)).numpy()  # untimed (rebuilds after a freeze)
                    if r == 0:
                        np.testing.assert_allclose(got, ref, rtol=1e-3,
                                                   atol=1e-3 * np.abs(ref).max())
                    before = _checks()
                    t = time.perf_counter()
                    fused(x)
                    times[impl].append(time.perf_counter() - t)
                    checks[impl] += _checks() - before
            pf.freeze(fused)
            benchmark.pedantic(lambda: fused(x), rounds=3, warmup_rounds=1, iterations=1)
    finally:
        pf.unfreeze(fused)
    assert checks["frozen"] == 0 and checks["checked"] > 0
    bench_info.update(freeze_model=name, batch=batch, threads=THREADS,
                      checked_ms=statistics.median(times["checked"]) * 1e3,
                      frozen_ms=statistics.median(times["frozen"]) * 1e3,
                      weight_checks_per_call=checks["checked"] / rounds)
