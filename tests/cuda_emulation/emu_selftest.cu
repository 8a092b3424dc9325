// Kernels that check the emulator itself (tests/test_cuda_kernels_emulated.py):
// warp shuffles, __syncthreads with per-block shared memory, the fp16/bf16
// conversions, and that misuse fails a launch instead of hanging.  Written
// as CUDA; built only for the emulation, with common/cuda_emulation.h.
#include <cstdint>

#include "common/cuda_utils.cuh"

namespace {

constexpr unsigned kFull = 0xffffffffu;

// out[4 * t + k]: lane t's result of down 5, up 3, xor 6 and idx 7 shuffles of
// v = 3 * t + 1 (t = linear thread index, 64 threads).
__global__ void shuffle_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int v = 3 * t + 1;
  out[4 * t + 0] = __shfl_down_sync(kFull, v, 5);
  out[4 * t + 1] = __shfl_up_sync(kFull, v, 3);
  out[4 * t + 2] = __shfl_xor_sync(kFull, v, 6);
  out[4 * t + 3] = __shfl_sync(kFull, v, 7);
}

// Each block reverses its own 256 values through shared memory, three times
// in a row: wrong if shared memory were not per block or the barrier leaked.
__global__ void reverse_kernel(const int* in, int* out) {
  __shared__ int s[256];
  const int t = static_cast<int>(threadIdx.x);
  int v = in[blockIdx.x * 256 + t];
  for (int k = 0; k < 3; ++k) {
    s[t] = v;
    __syncthreads();
    v = s[255 - t] + 1;
    __syncthreads();
  }
  out[blockIdx.x * 256 + t] = v;
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 100) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void noop_kernel(int* out) {
  if (out != nullptr) out[0] = 1;
}

}  // namespace

extern "C" {

int fc_selftest_shuffle(int* out) {
  return FC_CUDA_LAUNCH(shuffle_kernel, 1, 64, 0, nullptr, out);
}

int fc_selftest_reverse(const int* in, int* out, int blocks) {
  return FC_CUDA_LAUNCH(reverse_kernel, blocks, 256, 0, nullptr, in, out);
}

int fc_selftest_divergent_barrier(int* out) {
  return FC_CUDA_LAUNCH(divergent_barrier_kernel, 1, 256, 0, nullptr, out);
}

// A launch whose configuration hardware would reject: 2048 threads per block
// (which = 0), grid.y of 65536 (1), or dynamic shared memory (2).
int fc_selftest_bad_launch(int which) {
  switch (which) {
    case 0:
      return FC_CUDA_LAUNCH(noop_kernel, 1, 2048, 0, nullptr, nullptr);
    case 1:
      return FC_CUDA_LAUNCH(noop_kernel, dim3(1, 65536), 32, 0, nullptr,
                            nullptr);
    default:
      return FC_CUDA_LAUNCH(noop_kernel, 1, 32, 1024, nullptr, nullptr);
  }
}

// fp32 -> fp16 / bf16 bits and back, through cuda_utils' conversions.
void fc_selftest_convert(const float* in, int64_t n, uint16_t* half_bits,
                         float* half_back, uint16_t* bf16_bits,
                         float* bf16_back) {
  for (int64_t k = 0; k < n; ++k) {
    const __half h = fastconv::cuda::from_float<__half>(in[k]);
    const __nv_bfloat16 b = fastconv::cuda::from_float<__nv_bfloat16>(in[k]);
    half_bits[k] = h.__x;
    bf16_bits[k] = b.__x;
    half_back[k] = fastconv::cuda::to_float(h);
    bf16_back[k] = fastconv::cuda::to_float(b);
  }
}

}  // extern "C"
