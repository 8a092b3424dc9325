// Registration of fastconv_conv_bn_act and its grad op: argument checks,
// shape/dtype inference (needed by static graphs), and the device branch.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/conv_geometry.h"
#include "conv_bn_act/conv_bn_act.h"

namespace fastconv {

std::vector<paddle::Tensor> conv_bn_act_forward(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a,
    const char* op) {
#ifdef FASTCONV_WITH_CUDA
  if (runs_on_cuda_engine(x))
    return conv_bn_act_forward_cuda(x, w, bias, scale, shift, running_mean,
                                    running_var, residual, g, a);
#endif
  if (x.is_cpu())
    return conv_bn_act_forward_cpu(x, w, bias, scale, shift, running_mean,
                                   running_var, residual, g, a);
  unsupported_device(op, x.place());
}

std::vector<paddle::Tensor> conv_bn_act_backward(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a,
    const char* op) {
#ifdef FASTCONV_WITH_CUDA
  if (runs_on_cuda_engine(x))
    return conv_bn_act_backward_cuda(x, w, bias, scale, residual, y, saved_z,
                                     saved_mean, saved_invstd, dy, g, a);
#endif
  if (x.is_cpu())
    return conv_bn_act_backward_cpu(x, w, bias, scale, residual, y, saved_z,
                                    saved_mean, saved_invstd, dy, g, a);
  unsupported_device(op, x.place());
}

namespace {

ConvBnActAttrs make_attrs(const std::vector<int>& strides,
                          const std::vector<int>& paddings,
                          const std::vector<int>& dilations, int groups,
                          const std::string& data_format,
                          const std::string& act, bool training,
                          float momentum, float epsilon, bool need_dx) {
  FC_CHECK_ARG(act == "relu" || act == "none", kConvBnActOp, "act",
               "must be 'relu' or 'none', got '", act, "'");
  FC_CHECK_ARG(epsilon >= 0.f, kConvBnActOp, "epsilon",
               "must be non-negative, got ", epsilon);
  ConvBnActAttrs a{strides, paddings, dilations, groups, data_format,
                   act,     training, momentum,  epsilon};
  a.need_dx = need_dx;
  return a;
}

bool is_float_type(paddle::DataType t) {
  return t == paddle::DataType::FLOAT32 || t == paddle::DataType::FLOAT16 ||
         t == paddle::DataType::BFLOAT16;
}

// Checks that hold for every device; returns the geometry.
ConvGeometry check_inputs(const paddle::Tensor& x, const paddle::Tensor& w,
                          const OptTensor& bias, const paddle::Tensor& scale,
                          const paddle::Tensor& shift,
                          const paddle::Tensor& running_mean,
                          const paddle::Tensor& running_var,
                          const OptTensor& residual, const ConvBnActAttrs& a) {
  const char* op = kConvBnActOp;
  FC_CHECK_ARG(is_float_type(x.dtype()), op, "x",
               "must be float32, float16 or bfloat16, got ", x.dtype());
  FC_CHECK_ARG(w.dtype() == x.dtype(), op, "weight", "dtype ", w.dtype(),
               " differs from x dtype ", x.dtype());
  ConvGeometry g =
      make_conv_geometry(x.shape(), w.shape(), a.strides, a.paddings,
                         a.dilations, a.groups, a.data_format, op);
  const std::vector<int64_t> chan = {g.O};
  auto check_param = [&](const paddle::Tensor& t, const char* name) {
    FC_CHECK_ARG(t.dtype() == paddle::DataType::FLOAT32, op, name,
                 "must be float32 (BN parameters and statistics are fp32), "
                 "got ", t.dtype());
    FC_CHECK_ARG(t.shape() == chan, op, name, "must have shape [", g.O,
                 "] (out_channels), got ", shape_str(t.shape()));
    FC_CHECK_ARG(t.place() == x.place(), op, name,
                 "is on a different device than x");
  };
  check_param(scale, "bn_weight");
  check_param(shift, "bn_bias");
  check_param(running_mean, "running_mean");
  check_param(running_var, "running_var");
  FC_CHECK_ARG(w.place() == x.place(), op, "weight",
               "is on a different device than x");
  if (bias) {
    FC_CHECK_ARG(bias->dtype() == x.dtype(), op, "conv_bias", "dtype ",
                 bias->dtype(), " differs from x dtype ", x.dtype());
    FC_CHECK_ARG(bias->shape() == chan, op, "conv_bias", "must have shape [",
                 g.O, "], got ", shape_str(bias->shape()));
    FC_CHECK_ARG(bias->place() == x.place(), op, "conv_bias",
                 "is on a different device than x");
  }
  if (residual) {
    FC_CHECK_ARG(residual->dtype() == x.dtype(), op, "residual", "dtype ",
                 residual->dtype(), " differs from x dtype ", x.dtype());
    FC_CHECK_ARG(residual->shape() == g.out_shape(), op, "residual",
                 "must have the output shape ", shape_str(g.out_shape()),
                 ", got ", shape_str(residual->shape()));
    FC_CHECK_ARG(residual->place() == x.place(), op, "residual",
                 "is on a different device than x");
  }
  FC_CHECK_ARG(!a.training || g.out_count_per_channel() > 1, op, "x",
               "training needs more than one value per channel (batch * "
               "out_h * out_w = ", g.out_count_per_channel(), ")");
  return g;
}

std::vector<paddle::Tensor> ConvBnActForward(
    const paddle::Tensor& x, const paddle::Tensor& w,
    const paddle::Tensor& bias_in, const paddle::Tensor& scale,
    const paddle::Tensor& shift, paddle::Tensor& running_mean,
    paddle::Tensor& running_var, const paddle::Tensor& residual_in,
    const std::vector<int>& strides,
    const std::vector<int>& paddings, const std::vector<int>& dilations,
    int groups, const std::string& data_format, const std::string& act,
    bool training, float momentum, float epsilon, bool need_dx) {
  ConvBnActAttrs a = make_attrs(strides, paddings, dilations, groups,
                                data_format, act, training, momentum, epsilon,
                                need_dx);
  const OptTensor bias = present(bias_in, 1);
  const OptTensor residual = present(residual_in, 4);
  ConvGeometry g = check_inputs(x, w, bias, scale, shift, running_mean,
                                running_var, residual, a);
  return conv_bn_act_forward(x, w, bias, scale, shift, running_mean,
                             running_var, residual, g, a, kConvBnActOp);
}

std::vector<paddle::Tensor> ConvBnActBackward(
    const paddle::Tensor& x, const paddle::Tensor& w,
    const paddle::Tensor& bias_in, const paddle::Tensor& scale,
    const paddle::Tensor& residual_in,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const std::vector<int>& strides,
    const std::vector<int>& paddings, const std::vector<int>& dilations,
    int groups, const std::string& data_format, const std::string& act,
    bool training, float momentum, float epsilon, bool need_dx) {
  ConvBnActAttrs a = make_attrs(strides, paddings, dilations, groups,
                                data_format, act, training, momentum, epsilon,
                                need_dx);
  const OptTensor bias = present(bias_in, 1);
  const OptTensor residual = present(residual_in, 4);
  ConvGeometry g =
      make_conv_geometry(x.shape(), w.shape(), a.strides, a.paddings,
                         a.dilations, a.groups, a.data_format, kConvBnActOp);
  FC_CHECK_ARG(dy.shape() == g.out_shape() && dy.dtype() == x.dtype(),
               kConvBnActOp, "grad_y", "must match y (shape ",
               shape_str(g.out_shape()), "), got ", shape_str(dy.shape()));
  std::vector<paddle::Tensor> grads =
      conv_bn_act_backward(x, w, bias, scale, residual, y, saved_z, saved_mean,
                           saved_invstd, dy, g, a, kConvBnActOp);
  // Gradients of absent inputs: zeros shaped like their placeholders.
  if (!bias)
    grads[2] = paddle::full(bias_in.shape(), 0, bias_in.dtype(), x.place());
  if (!residual)
    grads[5] =
        paddle::full(residual_in.shape(), 0, residual_in.dtype(), x.place());
  return grads;
}

// ------------------------------------------------------------ inference fns

std::vector<std::vector<int64_t>> ConvBnActInferShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>& bias, const std::vector<int64_t>& scale,
    const std::vector<int64_t>& shift, const std::vector<int64_t>& running_mean,
    const std::vector<int64_t>& running_var,
    const std::vector<int64_t>& residual,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int groups,
    const std::string& data_format, const std::string& act, bool training,
    float momentum, float epsilon, bool need_dx) {
  FC_CHECK_ARG(x.size() == 4 && w.size() == 4, kConvBnActOp, "x",
               "and weight must be 4-D, got ", shape_str(x), " and ",
               shape_str(w));
  FC_CHECK_ARG((paddings.size() == 2 || paddings.size() == 4) &&
                   strides.size() == 2 && dilations.size() == 2,
               kConvBnActOp, "padding",
               "stride/dilation must have 2 values and padding 2 or 4");
  // Static graphs may carry -1 for the batch (and spatial) sizes: kept.
  const std::vector<int64_t> y = infer_conv_out_shape(
      x, w, strides, paddings, dilations, data_format == "NHWC");
  // eval keeps no z: a 1-element placeholder (Paddle 2.6 rejects 0-element
  // outputs)
  std::vector<int64_t> z = training ? y : std::vector<int64_t>{1};
  return {y, z, {w[0]}, {w[0]}};
}

std::vector<paddle::DataType> ConvBnActInferDtype(
    const paddle::DataType& x, const paddle::DataType& w,
    const paddle::DataType& bias, const paddle::DataType& scale,
    const paddle::DataType& shift, const paddle::DataType& running_mean,
    const paddle::DataType& running_var, const paddle::DataType& residual) {
  return {x, x, paddle::DataType::FLOAT32, paddle::DataType::FLOAT32};
}

std::vector<std::vector<int64_t>> ConvBnActGradInferShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>& bias, const std::vector<int64_t>& scale,
    const std::vector<int64_t>& residual, const std::vector<int64_t>& y, const std::vector<int64_t>& saved_z,
    const std::vector<int64_t>& saved_mean,
    const std::vector<int64_t>& saved_invstd, const std::vector<int64_t>& dy) {
  return {x, w, bias, scale, scale, residual};
}

std::vector<paddle::DataType> ConvBnActGradInferDtype(
    const paddle::DataType& x, const paddle::DataType& w,
    const paddle::DataType& bias, const paddle::DataType& scale,
    const paddle::DataType& residual, const paddle::DataType& y, const paddle::DataType& saved_z,
    const paddle::DataType& saved_mean, const paddle::DataType& saved_invstd,
    const paddle::DataType& dy) {
  return {x, w, bias, paddle::DataType::FLOAT32, paddle::DataType::FLOAT32,
          residual};
}

}  // namespace
}  // namespace fastconv

#define FC_CONV_BN_ACT_ATTRS                                             \
  {"strides: std::vector<int>", "paddings: std::vector<int>",            \
   "dilations: std::vector<int>", "groups: int", "activation_layout: std::string", \
   "act: std::string", "training: bool", "momentum: float", "epsilon: float", \
   "need_dx: bool"}

PD_BUILD_OP(fastconv_conv_bn_act)
    .Inputs({"X", "Filter", "Bias", "Scale", "Shift", "RunningMean",
             "RunningVar", "Residual"})
    .Outputs({"Y", "MeanOut", "VarOut", "SavedZ", "SavedMean", "SavedInvStd"})
    .Attrs(FC_CONV_BN_ACT_ATTRS)
    .SetInplaceMap({{"RunningMean", "MeanOut"}, {"RunningVar", "VarOut"}})
    .SetKernelFn(PD_KERNEL(fastconv::ConvBnActForward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ConvBnActInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ConvBnActInferDtype));

PD_BUILD_GRAD_OP(fastconv_conv_bn_act)
    .Inputs({"X", "Filter", "Bias", "Scale", "Residual", "Y", "SavedZ",
             "SavedMean", "SavedInvStd", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Filter"), paddle::Grad("Bias"),
              paddle::Grad("Scale"), paddle::Grad("Shift"),
              paddle::Grad("Residual")})
    .Attrs(FC_CONV_BN_ACT_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::ConvBnActBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ConvBnActGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ConvBnActGradInferDtype));
