// The fused Conv + BatchNorm + (residual) + act op: attributes shared by the
// registration and by the CPU and CUDA implementations.
//
//   z = conv2d(x, W) (+ conv bias)
//   y = act(BN(z) (+ residual)),  act in {relu, none}
//
// Outputs besides y (kept by autograd for backward, not shown to users):
//   SavedZ       training: z; eval: a 1-element placeholder (backward
//                recomputes z)
//   SavedMean    training: batch mean; eval: running mean
//   SavedInvStd  training: 1/sqrt(batch var + eps); eval: same with running var
#pragma once

#include <string>
#include <vector>

#include "common/conv_geometry.h"
#include "paddle/extension.h"

namespace fastconv {

constexpr const char* kConvBnActOp = "fastconv_conv_bn_act";

struct ConvBnActAttrs {
  std::vector<int> strides, paddings, dilations;
  int groups = 1;
  std::string data_format = "NCHW";
  std::string act = "relu";
  bool training = true;
  float momentum = 0.9f;
  float epsilon = 1e-5f;
  // false when x needs no gradient (the images under a network's first
  // convolution): backward skips the backward-data pass and returns a zero
  // dX (CPU oneDNN engine; the other engines compute it anyway).
  bool need_dx = true;
  bool relu() const { return act == "relu"; }
};

using OptTensor = paddle::optional<paddle::Tensor>;

// Bias and Residual are always inputs; absence is a 1-element placeholder of
// a rank the real tensor never has: [1, 1] for the bias (really [O]) and [1]
// for the residual (really 4-D). Optional inputs would make their gradients
// optional outputs, which static graphs of some Paddle versions mis-index,
// and Paddle 2.6 rejects a 0-element gradient (it has no memory).
inline OptTensor present(const paddle::Tensor& t, size_t real_rank) {
  if (t.initialized() && t.shape().size() == real_rank) return t;
  return paddle::none;
}

// Returns {Y, SavedZ, SavedMean, SavedInvStd}; updates running_mean/var in
// place when training.
std::vector<paddle::Tensor> conv_bn_act_forward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a);

// Returns {dX, dW, dBias, dScale, dShift, dResidual} (dBias/dResidual are
// undefined tensors when the input was absent).
std::vector<paddle::Tensor> conv_bn_act_backward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a);

// The device branch (the CPU or CUDA engine below, by x's device); an
// unsupported device raises an error naming `op`.
std::vector<paddle::Tensor> conv_bn_act_forward(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a,
    const char* op);
std::vector<paddle::Tensor> conv_bn_act_backward(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a,
    const char* op);

// The convolution parts alone (CPU), for ops that put their own work
// between them (SyncBatchNorm): z = conv(x, W) + bias, training flavour; and
// {dx, dW} from dz.
paddle::Tensor conv_forward_train_cpu(const ConvGeometry& g,
                                      const ConvBnActAttrs& a,
                                      const paddle::Tensor& x,
                                      const paddle::Tensor& w,
                                      const OptTensor& bias);
std::vector<paddle::Tensor> conv_backward_cpu(const ConvGeometry& g,
                                              const ConvBnActAttrs& a,
                                              const paddle::Tensor& x,
                                              const paddle::Tensor& w,
                                              const paddle::Tensor& dz);

#ifdef FASTCONV_WITH_CUDA
std::vector<paddle::Tensor> conv_bn_act_forward_cuda(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a);

std::vector<paddle::Tensor> conv_bn_act_backward_cuda(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a);
#endif

}  // namespace fastconv
