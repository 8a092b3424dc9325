// Launchers for the memory-bound CUDA kernels around the convolution of the
// fused Conv+BN+act op: batch statistics, normalize+residual+act, their
// backward, and the eval-mode weight folding / epilogue.
//
// Deliberately free of paddle::Tensor: every launcher takes raw pointers,
// sizes and a stream, so the kernels can be driven without Paddle (and, under
// the CPU emulation header, without a GPU).
//
// Conventions
// - Activations (z, y, dy, dz, residual, dres) have dtype `dt`; BN parameters,
//   statistics and all coefficients are fp32, as in Paddle's BatchNorm.
// - ChannelView describes the activation layout: element (o, c, i) lives at
//   (o * channels + c) * inner + i.  NCHW: outer = N, inner = H*W.
//   NHWC: outer = N*H*W, inner = 1.
// - count = outer * inner elements per channel (the BN reduction size).
// - SliceStrides lets an operand be a channel slice of a wider tensor (the
//   Inception op's branches read the merged 1x1 convolution's output and
//   write their slices of the concatenated output in place, with no copy).
// - All sizes are 64-bit; kernels index with int64_t.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace fastconv {
namespace cuda {

enum class DType { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

struct ChannelView {
  int64_t outer;
  int64_t channels;
  int64_t inner;
};

// Row strides, in channels, of operands that are channel slices of a wider
// tensor: such an operand's pointer is at its first channel and element
// (o, c, i) lives at (o * ld + c) * inner + i, ld = the wider tensor's channel
// count (>= channels). 0 = dense (ld = channels). Each launcher reads the
// fields of the operands it has (conv_out is z); residuals and their
// gradient are always dense.
struct SliceStrides {
  int64_t z = 0, y = 0, dy = 0, dz = 0;
};

// Bytes of device workspace the statistics/reduction launchers need for `v`.
size_t bn_workspace_bytes(ChannelView v);

// Training statistics. mean/var over (outer, inner) per channel, with fp32
// accumulation that stays accurate for large counts and large means (Welford /
// Chan merging). Writes save_mean, save_invstd = 1/sqrt(var_biased + eps),
// and the affine coefficients a = gamma*invstd, b = beta - mean*a. Updates the
// running statistics as paddle.nn.BatchNorm2D does:
//   running = momentum * running + (1 - momentum) * batch
// with the biased batch variance.
cudaError_t launch_bn_stats(DType dt, const void* z, ChannelView v,
                            const float* gamma, const float* beta,
                            float* running_mean, float* running_var,
                            float momentum, float eps, float* save_mean,
                            float* save_invstd, float* coef_a, float* coef_b,
                            void* workspace, cudaStream_t stream,
                            SliceStrides ld = {});

// y = act(z * a[c] + b[c] (+ residual)), act = relu if `relu`.
// residual may be null. Also used as the eval epilogue with a = 1, b = bias
// through launch_bias_act_forward below.
cudaError_t launch_bn_act_forward(DType dt, const void* z, const void* residual,
                                  const float* coef_a, const float* coef_b,
                                  bool relu, void* y, ChannelView v,
                                  cudaStream_t stream,
                                  SliceStrides ld = {});

// Eval epilogue: y = act(conv_out + bias[c] (+ residual)). In place allowed
// (y == conv_out).
cudaError_t launch_bias_act_forward(DType dt, const void* conv_out,
                                    const void* residual, const float* bias,
                                    bool relu, void* y, ChannelView v,
                                    cudaStream_t stream,
                                    SliceStrides ld = {});

// Backward reduction. g = relu ? dy * (y > 0) : dy.
//   dbeta[c]  = sum g
//   dgamma[c] = sum g * (z - mean[c]) * invstd[c]
// y may be null when !relu.
cudaError_t launch_bn_act_backward_reduce(DType dt, const void* dy,
                                          const void* y, const void* z,
                                          const float* mean,
                                          const float* invstd, bool relu,
                                          ChannelView v, float* dgamma,
                                          float* dbeta, void* workspace,
                                          cudaStream_t stream,
                                          SliceStrides ld = {});

// Backward apply.
//   training: dz = gamma*invstd * (g - dbeta/count - (z-mean)*invstd*dgamma/count)
//   eval:     dz = gamma*invstd * g
//   dres = g when dres is not null (the residual's gradient).
cudaError_t launch_bn_act_backward_apply(
    DType dt, const void* dy, const void* y, const void* z, const float* mean,
    const float* invstd, const float* gamma, const float* dgamma,
    const float* dbeta, bool relu, bool training, ChannelView v, void* dz,
    void* dres, cudaStream_t stream, SliceStrides ld = {});

// Eval-mode folding of BN into the convolution.
//   s[o] = gamma[o] / sqrt(running_var[o] + eps)
//   w_out[o, k] = w[o, k] * s[o]           (k over the per-filter elements)
//   bias_out[o] = (conv_bias[o] - running_mean[o]) * s[o] + beta[o]  (fp32)
// conv_bias (dtype dt) may be null (treated as 0). w and w_out have dtype dt
// and shape [out_channels, per_filter].
cudaError_t launch_fold_bn(DType dt, const void* w, const void* conv_bias,
                           const float* gamma, const float* beta,
                           const float* running_mean, const float* running_var,
                           float eps, int64_t out_channels, int64_t per_filter,
                           void* w_out, float* bias_out, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastconv
