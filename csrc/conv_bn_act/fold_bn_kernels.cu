// Eval-mode folding of BN into the convolution weights (launch_fold_bn).

#include "bn_kernels_common.cuh"

namespace fastconv {
namespace cuda {
using namespace bn_detail;  // shared internals, bn_kernels_common.cuh
namespace {

// Eval folding, one grid-stride pass over out_channels * per_filter weights
// followed by out_channels biases.  Weights are small, so the per-element
// division is acceptable here.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    fold_bn_kernel(const T* w, const T* __restrict__ conv_bias,
                   const float* __restrict__ gamma,
                   const float* __restrict__ beta,
                   const float* __restrict__ running_mean,
                   const float* __restrict__ running_var, float eps,
                   int64_t out_channels, int64_t per_filter, T* w_out,
                   float* __restrict__ bias_out) {
  const int64_t n_w = out_channels * per_filter;
  const int64_t total = n_w + out_channels;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t o = idx < n_w ? div_nonneg(idx, per_filter) : idx - n_w;
    const float s = gamma[o] / sqrtf(running_var[o] + eps);
    if (idx < n_w) {
      w_out[idx] = from_float<T>(to_float(w[idx]) * s);
    } else {
      const float cb = conv_bias != nullptr ? to_float(conv_bias[o]) : 0.f;
      bias_out[o] = (cb - running_mean[o]) * s + beta[o];
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Public launchers.  Order of checks: malformed sizes -> InvalidValue; empty
// tensors -> Success without launching (their pointers may be null); then the
// required pointers.
// ---------------------------------------------------------------------------

cudaError_t launch_fold_bn(DType dt, const void* w, const void* conv_bias,
                           const float* gamma, const float* beta,
                           const float* running_mean, const float* running_var,
                           float eps, int64_t out_channels, int64_t per_filter,
                           void* w_out, float* bias_out, cudaStream_t stream) {
  if (out_channels < 0 || per_filter < 0) return cudaErrorInvalidValue;
  if (out_channels == 0) return cudaSuccess;
  if (gamma == nullptr || beta == nullptr || running_mean == nullptr ||
      running_var == nullptr || bias_out == nullptr ||
      (per_filter > 0 && (w == nullptr || w_out == nullptr))) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = out_channels * per_filter + out_channels;
  const dim3 grid(
      static_cast<unsigned>(std::min(ceil_div(total, kBlock), kMaxEwBlocks)));
  return FC_DISPATCH_DTYPE(
      dt, T,
      return FC_CUDA_LAUNCH((fold_bn_kernel<T>), grid, kBlock, 0, stream,
                            static_cast<const T*>(w),
                            static_cast<const T*>(conv_bias), gamma, beta,
                            running_mean, running_var, eps, out_channels,
                            per_filter, static_cast<T*>(w_out), bias_out););
}

}  // namespace cuda
}  // namespace fastconv
