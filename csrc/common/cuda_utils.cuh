// Small helpers shared by the fastconv CUDA kernels.
//
// Kernels written against this header use only plain CUDA C++: __global__ /
// __device__ functions, fixed-size function-scope __shared__ arrays,
// __syncthreads, warp shuffles (through fc_shfl_down, full warps only), the
// built-in index variables and aligned vector loads.  Together with routing
// every launch through FC_CUDA_LAUNCH this keeps them runnable under a CPU
// emulation header (common/cuda_emulation.h: a block's threads run as fibers,
// __shared__ is static thread_local), which may predefine FC_CUDA_LAUNCH /
// FC_UNROLL before including this file.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// ---------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------

// Launches `kernel` and evaluates to the cudaError_t of the launch, e.g.
//   FC_RETURN_IF_ERROR(FC_CUDA_LAUNCH(my_kernel, grid, block, 0, stream, a));
// Template-ids with commas must be parenthesized:
//   FC_CUDA_LAUNCH((k<T, 4>), grid, block, 0, stream, a);
// All launches go through this macro so that an emulation header can replace
// the triple-chevron launch with its own driver.
#ifndef FC_CUDA_LAUNCH
#define FC_CUDA_LAUNCH(kernel, grid, block, smem, stream, ...) \
  ((kernel)<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__), \
   cudaGetLastError())
#endif

#define FC_RETURN_IF_ERROR(expr)          \
  do {                                    \
    const cudaError_t fc_err_ = (expr);   \
    if (fc_err_ != cudaSuccess) {         \
      return fc_err_;                     \
    }                                     \
  } while (0)

// `#pragma unroll` is nvcc-only; host compilers would warn about it.
#ifndef FC_UNROLL
#if defined(__CUDACC__)
#define FC_UNROLL _Pragma("unroll")
#else
#define FC_UNROLL
#endif
#endif

// ---------------------------------------------------------------------------
// DType dispatch
// ---------------------------------------------------------------------------

// Runs the statements in `...` with `T` aliased to the C++ type of `DT`
// (a fastconv::cuda::DType) and evaluates to the cudaError_t they return.
// The statements must end in a `return` (a fall-through would run the next
// dtype's body; -Wimplicit-fallthrough catches that).  Unknown dtypes give
// cudaErrorInvalidValue.  A macro rather than a template so that this header
// does not depend on the op headers declaring DType.
//   return FC_DISPATCH_DTYPE(dt, T, return launch<T>(args...););
#define FC_DISPATCH_DTYPE(DT, T, ...)                    \
  [&]() -> cudaError_t {                                 \
    switch (DT) {                                        \
      case ::fastconv::cuda::DType::kFloat32: {          \
        using T = float;                                 \
        __VA_ARGS__                                      \
      }                                                  \
      case ::fastconv::cuda::DType::kFloat16: {          \
        using T = __half;                                \
        __VA_ARGS__                                      \
      }                                                  \
      case ::fastconv::cuda::DType::kBFloat16: {         \
        using T = __nv_bfloat16;                         \
        __VA_ARGS__                                      \
      }                                                  \
    }                                                    \
    return cudaErrorInvalidValue;                        \
  }()

namespace fastconv {
namespace cuda {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// ---------------------------------------------------------------------------
// Conversions: all arithmetic is done in fp32.
// ---------------------------------------------------------------------------

__host__ __device__ __forceinline__ float to_float(float x) { return x; }
__host__ __device__ __forceinline__ float to_float(__half x) {
  return __half2float(x);
}
__host__ __device__ __forceinline__ float to_float(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__host__ __device__ __forceinline__ T from_float(float x);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__host__ __device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__host__ __device__ __forceinline__ __nv_bfloat16
from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// ---------------------------------------------------------------------------
// Vector access
// ---------------------------------------------------------------------------

// N consecutive elements moved with one instruction (N * sizeof(T) <= 16).
// The caller guarantees the address is a multiple of sizeof(AlignedVec).
template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVec {
  T val[N];
};

// Largest N for which AlignedVec<T, N> is one 16-byte access.
template <typename T>
constexpr int kMaxVec = static_cast<int>(16 / sizeof(T));

// The emulation header defines this to fault on misaligned vectors, as a GPU
// does; on the GPU it costs nothing.
#ifndef FC_CHECK_VEC_ALIGNED
#define FC_CHECK_VEC_ALIGNED(p, bytes) ((void)0)
#endif

template <int N, typename T>
__device__ __forceinline__ AlignedVec<T, N> load_vec(const T* p) {
  FC_CHECK_VEC_ALIGNED(p, sizeof(AlignedVec<T, N>));
  return *reinterpret_cast<const AlignedVec<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void store_vec(T* p, const AlignedVec<T, N>& v) {
  FC_CHECK_VEC_ALIGNED(p, sizeof(AlignedVec<T, N>));
  *reinterpret_cast<AlignedVec<T, N>*>(p) = v;
}

// Vector load/store with conversion.  Kernels that keep many vectors in flight
// should rather hold the raw AlignedVec and convert late (half the registers
// for 16-bit types).
template <int N, typename T>
__device__ __forceinline__ void load_float(const T* p, float (&out)[N]) {
  const AlignedVec<T, N> v = load_vec<N>(p);
  FC_UNROLL
  for (int j = 0; j < N; ++j) out[j] = to_float(v.val[j]);
}

template <int N, typename T>
__device__ __forceinline__ void store_float(T* p, const float (&in)[N]) {
  AlignedVec<T, N> v;
  FC_UNROLL
  for (int j = 0; j < N; ++j) v.val[j] = from_float<T>(in[j]);
  store_vec(p, v);
}

// Whether `p` may be accessed as AlignedVec<T, n> (null counts as aligned so
// that optional operands do not disable vectorization).
template <typename T>
inline bool is_vec_aligned(const void* p, int n) {
  return reinterpret_cast<std::uintptr_t>(p) % (sizeof(T) * n) == 0;
}

// ---------------------------------------------------------------------------
// Warp reductions
// ---------------------------------------------------------------------------

__device__ __forceinline__ float fc_shfl_down(float v, int offset) {
  return __shfl_down_sync(kFullMask, v, offset);
}

// Tree sum over the 32 lanes of a fully active warp; the result is valid in
// lane 0 only.  The order is fixed, so the result is deterministic.
__device__ __forceinline__ float warp_reduce_sum(float v) {
  FC_UNROLL
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    v += fc_shfl_down(v, offset);
  }
  return v;
}

}  // namespace cuda
}  // namespace fastconv
