import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import paddle
import paddle_fastconv  # noqa: F401  (loads the op library)
from paddle_fastconv import _loader

# test_cuda_engine_on_host.py runs suites against the host-mode build (the
# CUDA engine on CPU tensors): never against another build by mistake.
if os.environ.get("PADDLE_FASTCONV_EXPECT_CUDA_ON_HOST") == "1":
    assert _loader.BUILD_INFO.get("cuda_on_host"), (
        "expected the host-mode build, imported " + _loader.LIBRARY_PATH)
CUDA_ON_HOST = bool(_loader.BUILD_INFO.get("cuda_on_host"))

# The suite's own thread count: explicit, so runs are reproducible.
paddle_fastconv.set_num_threads(int(os.environ.get("PADDLE_FASTCONV_TEST_THREADS", "2")))


# Property-based tests (tests/test_properties.py): derandomized, so every run
# draws the same examples; "ci" keeps the suite fast on 2 cores, "large" is
# for a long run by hand (PADDLE_FASTCONV_HYPOTHESIS_PROFILE=large).
_HYPOTHESIS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=150, **_HYPOTHESIS)
settings.register_profile("large", max_examples=3000, **_HYPOTHESIS)
settings.load_profile(os.environ.get("PADDLE_FASTCONV_HYPOTHESIS_PROFILE", "ci"))


def has_gpu():
    try:
        return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    except Exception:
        return False


DEVICES = ["cpu"] + (["gpu"] if has_gpu() else [])


@pytest.fixture(autouse=True)
def _seed_and_device(request):
    seed = 2024
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    yield


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="no CUDA device (or Paddle without CUDA)")
    for item in items:
        if "gpu" in item.keywords and not has_gpu():
            item.add_marker(skip_gpu)


CPU_ENGINES = ["onednn", "paddle"] if paddle_fastconv.onednn_available() else ["paddle"]
# Where a parity test runs: each CPU convolution engine built in, and the GPU
# (CUDA engine) when one is present; GPU cases skip cleanly otherwise.
ENGINES = [pytest.param(("cpu", e), id="cpu-" + e) for e in CPU_ENGINES] + [
    pytest.param(("gpu", None), id="gpu", marks=pytest.mark.gpu)]


@pytest.fixture(params=ENGINES)
def engine(request):
    device, cpu_engine = request.param
    before_engine = paddle_fastconv.get_cpu_conv_engine()
    before_device = paddle.get_device()
    if cpu_engine:
        paddle_fastconv.set_cpu_conv_engine(cpu_engine)
    paddle.set_device(device)
    yield request.param
    paddle.set_device(before_device)
    paddle_fastconv.set_cpu_conv_engine(before_engine)
