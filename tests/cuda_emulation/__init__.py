"""CPU emulation harness of the package's CUDA kernels: build.py compiles
them with csrc/common/cuda_emulation.h into a shared library, kernels.py binds
it with ctypes, parity.py checks every launcher against numpy."""
