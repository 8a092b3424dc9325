"""Benchmark settings: one explicit thread count for stock and fused alike.

`import paddle` sets OMP_NUM_THREADS=1 when it is unset, so the count is
fixed here, before anything imports Paddle: PADDLE_FASTCONV_BENCH_THREADS
(default: every core)."""
import os

THREADS = int(os.environ.get("PADDLE_FASTCONV_BENCH_THREADS", os.cpu_count() or 1))
os.environ["OMP_NUM_THREADS"] = str(THREADS)

import paddle  # noqa: E402
import pytest  # noqa: E402

import paddle_fastconv  # noqa: E402

paddle_fastconv.set_num_threads(THREADS)
paddle.base.core.set_num_threads(THREADS)  # Paddle's own CPU kernels (MKL/OpenMP)


@pytest.fixture
def bench_info(benchmark):
    import platform
    benchmark.extra_info.update({
        "threads": THREADS,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "paddle": paddle.__version__,
        "onednn": paddle_fastconv.onednn_version(),
    })
    return benchmark.extra_info
