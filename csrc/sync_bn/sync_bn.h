// The phases of Conv + SyncBatchNorm + (residual) + act, as separate ops so
// the Python side can all-reduce between them (paddle_fastconv/sync_bn.py):
//
//   forward:  z, local stats  = conv_stats(x, W, bias)      -> all-reduce
//             y               = apply(z, global mean/invstd, gamma, beta, res)
//   backward: local sums      = grad_reduce(dy, y, z, mean) -> all-reduce
//             dx, dW, dres    = conv_grad(dy, y, z, x, W, ..., global sums)
//
// Stats rows (float64, [3, C]): count * mean, count * (var + mean^2), count.
// Grad sums rows (float64, [2, C]): sum g, sum g * (z - mean), with
// g = dy masked by the ReLU.
#pragma once

#include <string>
#include <vector>

#include "conv_bn_act/conv_bn_act.h"
#include "paddle/extension.h"

namespace fastconv {

constexpr const char* kSyncBnOp = "fastconv_sync_bn";

std::vector<paddle::Tensor> sync_bn_conv_stats_cpu(const paddle::Tensor& x,
                                                   const paddle::Tensor& w,
                                                   const OptTensor& bias,
                                                   const ConvGeometry& g,
                                                   const ConvBnActAttrs& a);

paddle::Tensor sync_bn_apply_cpu(const paddle::Tensor& z,
                                 const paddle::Tensor& mean,
                                 const paddle::Tensor& invstd,
                                 const paddle::Tensor& scale,
                                 const paddle::Tensor& shift,
                                 const OptTensor& residual, bool nhwc, bool relu);

paddle::Tensor sync_bn_grad_reduce_cpu(const paddle::Tensor& dy,
                                       const paddle::Tensor& y,
                                       const paddle::Tensor& z,
                                       const paddle::Tensor& mean, bool nhwc,
                                       bool relu);

std::vector<paddle::Tensor> sync_bn_conv_grad_cpu(
    const paddle::Tensor& dy, const paddle::Tensor& y, const paddle::Tensor& z,
    const paddle::Tensor& x, const paddle::Tensor& w,
    const paddle::Tensor& mean, const paddle::Tensor& invstd,
    const paddle::Tensor& scale, const paddle::Tensor& global_sums,
    double global_count, bool with_residual, const ConvGeometry& g,
    const ConvBnActAttrs& a);

}  // namespace fastconv
