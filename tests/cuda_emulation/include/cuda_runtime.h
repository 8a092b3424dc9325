// Stand-in for the CUDA toolkit's <cuda_runtime.h> when kernel sources are
// compiled as host C++ for the CPU emulation: see common/cuda_emulation.h.
#pragma once
#include "common/cuda_emulation.h"
