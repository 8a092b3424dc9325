"""Build paddle_fastconv against the Paddle installed in this environment.

    pip install --no-deps onednn-devel==2025.0.0   # oneDNN headers (CPU engine)
    pip install --no-build-isolation .

Environment variables:
  PADDLE_FASTCONV_WITH_CUDA   auto (default): build the CUDA engine when nvcc is
                              found and Paddle is CUDA-enabled; 1: force it (a
                              compile-only build against a CPU Paddle, as CI
                              does); 0: never; host: a test build whose CUDA
                              engine runs CPU tensors with emulated kernels.
  PADDLE_FASTCONV_CUDA_ARCHS  e.g. "75;80;86;89;90" (the default), filtered by
                              what the found nvcc supports; PTX is added for
                              the newest.
  PADDLE_FASTCONV_ONEDNN_INCLUDE  directory holding oneapi/dnnl/dnnl.hpp, when
                              not in the environment's include directory.
  CUDA_HOME                   CUDA toolkit root (default: from nvcc's path).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))
import build_config  # noqa: E402

from setuptools import find_packages, setup  # noqa: E402

cfg = build_config.configure()

setup(
    name="paddle_fastconv",
    version=build_config.VERSION,
    description="Fused Conv+BN+ReLU, ResNet and Inception operators for PaddlePaddle (oneDNN CPU and CUDA engines)",
    packages=find_packages(include=["paddle_fastconv", "paddle_fastconv.*"]),
    ext_modules=[cfg.extension],
    cmdclass={"build_ext": build_config.BuildExt},
    python_requires=">=3.9",
    install_requires=["numpy"],
    extras_require={"test": ["pytest", "pytest-benchmark"],
                    "plot": ["matplotlib"]},
    entry_points={"console_scripts": ["paddle-fastconv=paddle_fastconv.__main__:main"]},
    zip_safe=False,
)
