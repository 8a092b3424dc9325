"""`python -m paddle_fastconv.info`: what this build contains and what it
found at run time."""
import os

import paddle

from . import runtime
from ._loader import BUILD_INFO, LIBRARY_PATH


def gpu_count():
    if not paddle.is_compiled_with_cuda():
        return 0
    try:
        return paddle.device.cuda.device_count()
    except Exception:  # a CUDA Paddle on a machine without a driver
        return 0


def info_dict():
    b = BUILD_INFO
    return {
        "paddle_fastconv": b["version"],
        "library": LIBRARY_PATH,
        "paddle": paddle.__version__,
        "paddle_built_against": b["paddle_version"],
        "paddle_cuda": paddle.is_compiled_with_cuda(),
        "cpu_engine": ("oneDNN %s (headers %s)" % (runtime.onednn_version(), b["onednn_headers"])
                       if runtime.onednn_available() else "Paddle conv API (no oneDNN in this Paddle)"),
        "cpu_conv_engine_active": runtime.get_cpu_conv_engine(),
        "winograd_f4x3": runtime.winograd_status(),
        "conv1x1_kernels": runtime.conv1x1_status(),
        "cuda_engine": ("on the host: a test build whose CUDA engine runs CPU tensors "
                        "with emulated kernels" if b.get("cuda_on_host") else
                        "sm_%s + PTX compute_%s" % (",sm_".join(map(str, b["cuda_archs"])),
                                                    b["cuda_ptx"])
                        if b["cuda_archs"] else "not built (%s)" % b["cuda_reason"]),
        "gpu_devices": gpu_count(),
        "openmp_runtime": b.get("openmp", "?"),
        "threads": runtime.get_num_threads(),
        "host_pool": ("on, %d bytes cached" % runtime.cache_info()["host_pool_bytes"])
        if runtime.host_pool_available() else "off (needs Paddle 3.x)",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "(unset)"),
    }


def main():
    for k, v in info_dict().items():
        print("%-24s %s" % (k, v))


if __name__ == "__main__":
    main()
