// Registration of the SyncBatchNorm phase ops (see sync_bn.h): argument
// checks, shape/dtype inference and the device branch. CPU only: the GPU
// phases are not implemented, and the ops say so.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/conv_geometry.h"
#include "sync_bn/sync_bn.h"

namespace fastconv {
namespace {

void check_cpu_float(const paddle::Tensor& t, const char* name) {
  FC_CHECK_ARG(t.is_cpu(), kSyncBnOp, name,
               "is on ", t.place(), "; sync_bn=True runs on CPU only (the GPU "
               "phases are not implemented); use sync_bn=False on GPU");
  FC_CHECK_ARG(t.dtype() == paddle::DataType::FLOAT32, kSyncBnOp, name,
               "must be float32, got ", t.dtype());
}

void check_layout_act(const std::string& data_format, const std::string& act) {
  FC_CHECK_ARG(data_format == "NCHW" || data_format == "NHWC", kSyncBnOp,
               "data_format", "must be 'NCHW' or 'NHWC', got '", data_format,
               "'");
  FC_CHECK_ARG(act == "relu" || act == "none", kSyncBnOp, "act",
               "must be 'relu' or 'none', got '", act, "'");
}

ConvBnActAttrs conv_attrs(const std::vector<int>& strides,
                          const std::vector<int>& paddings,
                          const std::vector<int>& dilations, int groups,
                          const std::string& data_format,
                          const std::string& act) {
  check_layout_act(data_format, act);
  ConvBnActAttrs a;
  a.strides = strides;
  a.paddings = paddings;
  a.dilations = dilations;
  a.groups = groups;
  a.data_format = data_format;
  a.act = act;
  a.training = true;
  return a;
}

void check_channels(const paddle::Tensor& t, int64_t c, const char* name) {
  check_cpu_float(t, name);
  FC_CHECK_ARG(t.shape() == std::vector<int64_t>{c}, kSyncBnOp, name,
               "must have shape [", c, "], got ", shape_str(t.shape()));
}

std::vector<paddle::Tensor> ConvStats(const paddle::Tensor& x,
                                      const paddle::Tensor& w,
                                      const paddle::Tensor& bias_in,
                                      const std::vector<int>& strides,
                                      const std::vector<int>& paddings,
                                      const std::vector<int>& dilations,
                                      int groups,
                                      const std::string& data_format) {
  check_cpu_float(x, "x");
  check_cpu_float(w, "weight");
  const ConvBnActAttrs a =
      conv_attrs(strides, paddings, dilations, groups, data_format, "none");
  const ConvGeometry g = make_conv_geometry(x.shape(), w.shape(), strides,
                                            paddings, dilations, groups,
                                            data_format, kSyncBnOp);
  const OptTensor bias = present(bias_in, 1);
  if (bias) check_channels(*bias, g.O, "bias");
  return sync_bn_conv_stats_cpu(x, w, bias, g, a);
}

std::vector<paddle::Tensor> Apply(const paddle::Tensor& z,
                                  const paddle::Tensor& mean,
                                  const paddle::Tensor& invstd,
                                  const paddle::Tensor& scale,
                                  const paddle::Tensor& shift,
                                  const paddle::Tensor& residual_in,
                                  const std::string& data_format,
                                  const std::string& act) {
  check_cpu_float(z, "z");
  FC_CHECK_ARG(z.shape().size() == 4, kSyncBnOp, "z", "must be 4-D");
  check_layout_act(data_format, act);
  const int64_t C = data_format == "NHWC" ? z.shape()[3] : z.shape()[1];
  check_channels(mean, C, "mean");
  check_channels(invstd, C, "invstd");
  check_channels(scale, C, "bn_weight");
  check_channels(shift, C, "bn_bias");
  const OptTensor residual = present(residual_in, 4);
  if (residual) {
    check_cpu_float(*residual, "residual");
    FC_CHECK_ARG(residual->shape() == z.shape(), kSyncBnOp, "residual",
                 "must have the output shape ", shape_str(z.shape()));
  }
  return {sync_bn_apply_cpu(z, mean, invstd, scale, shift, residual,
                            data_format == "NHWC", act == "relu")};
}

std::vector<paddle::Tensor> GradReduce(const paddle::Tensor& dy,
                                       const paddle::Tensor& y,
                                       const paddle::Tensor& z,
                                       const paddle::Tensor& mean,
                                       const std::string& data_format,
                                       const std::string& act) {
  check_cpu_float(dy, "grad_y");
  check_cpu_float(y, "y");
  check_cpu_float(z, "z");
  FC_CHECK_ARG(dy.shape() == z.shape() && y.shape() == z.shape(), kSyncBnOp,
               "grad_y", "must have the output shape ", shape_str(z.shape()));
  check_layout_act(data_format, act);
  return {sync_bn_grad_reduce_cpu(dy, y, z, mean, data_format == "NHWC",
                                  act == "relu")};
}

std::vector<paddle::Tensor> ConvGrad(
    const paddle::Tensor& dy, const paddle::Tensor& y, const paddle::Tensor& z,
    const paddle::Tensor& x, const paddle::Tensor& w,
    const paddle::Tensor& mean, const paddle::Tensor& invstd,
    const paddle::Tensor& scale, const paddle::Tensor& global_sums,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int groups,
    const std::string& data_format, const std::string& act,
    int64_t global_count, bool with_residual) {
  const ConvBnActAttrs a =
      conv_attrs(strides, paddings, dilations, groups, data_format, act);
  const ConvGeometry g = make_conv_geometry(x.shape(), w.shape(), strides,
                                            paddings, dilations, groups,
                                            data_format, kSyncBnOp);
  FC_CHECK_ARG(z.shape() == g.out_shape() && dy.shape() == g.out_shape(),
               kSyncBnOp, "grad_y", "must have the output shape ",
               shape_str(g.out_shape()));
  FC_CHECK_ARG(global_sums.dtype() == paddle::DataType::FLOAT64 &&
                   global_sums.shape() == (std::vector<int64_t>{2, g.O}),
               kSyncBnOp, "global_sums", "must be float64 of shape [2, ", g.O,
               "]");
  FC_CHECK_ARG(global_count > 1, kSyncBnOp, "global_count",
               "must be > 1, got ", global_count);
  return sync_bn_conv_grad_cpu(dy, y, z, x, w, mean, invstd, scale,
                               global_sums, static_cast<double>(global_count),
                               with_residual, g, a);
}

// Shape/dtype inference (static graphs and Paddle's op checks).
std::vector<std::vector<int64_t>> ConvStatsShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>&, const std::vector<int>& s,
    const std::vector<int>& p, const std::vector<int>& d, int,
    const std::string& fmt) {
  return {infer_conv_out_shape(x, w, s, p, d, fmt == "NHWC"), {3, w[0]}};
}

std::vector<paddle::DataType> ConvStatsDtype(const paddle::DataType& x,
                                             const paddle::DataType&,
                                             const paddle::DataType&) {
  return {x, paddle::DataType::FLOAT64};
}

std::vector<std::vector<int64_t>> ApplyShape(
    const std::vector<int64_t>& z, const std::vector<int64_t>&,
    const std::vector<int64_t>&, const std::vector<int64_t>&,
    const std::vector<int64_t>&, const std::vector<int64_t>&) {
  return {z};
}

std::vector<paddle::DataType> ApplyDtype(
    const paddle::DataType& z, const paddle::DataType&, const paddle::DataType&,
    const paddle::DataType&, const paddle::DataType&, const paddle::DataType&) {
  return {z};
}

std::vector<std::vector<int64_t>> GradReduceShape(
    const std::vector<int64_t>&, const std::vector<int64_t>&,
    const std::vector<int64_t>&, const std::vector<int64_t>& mean) {
  return {{2, mean[0]}};
}

std::vector<paddle::DataType> GradReduceDtype(const paddle::DataType&,
                                              const paddle::DataType&,
                                              const paddle::DataType&,
                                              const paddle::DataType&) {
  return {paddle::DataType::FLOAT64};
}

std::vector<std::vector<int64_t>> ConvGradShape(
    const std::vector<int64_t>& dy, const std::vector<int64_t>&,
    const std::vector<int64_t>&, const std::vector<int64_t>& x,
    const std::vector<int64_t>& w, const std::vector<int64_t>&,
    const std::vector<int64_t>&, const std::vector<int64_t>&,
    const std::vector<int64_t>&) {
  return {x, w, dy};
}

std::vector<paddle::DataType> ConvGradDtype(
    const paddle::DataType& dy, const paddle::DataType&, const paddle::DataType&,
    const paddle::DataType& x, const paddle::DataType& w,
    const paddle::DataType&, const paddle::DataType&, const paddle::DataType&,
    const paddle::DataType&) {
  return {x, w, dy};
}

}  // namespace
}  // namespace fastconv

PD_BUILD_OP(fastconv_sync_bn_conv_stats)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Z", "Stats"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>",
            "dilations: std::vector<int>", "groups: int",
            "activation_layout: std::string"})
    .SetKernelFn(PD_KERNEL(fastconv::ConvStats))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ConvStatsShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ConvStatsDtype));

PD_BUILD_OP(fastconv_sync_bn_apply)
    .Inputs({"Z", "Mean", "InvStd", "Scale", "Shift", "Residual"})
    .Outputs({"Y"})
    .Attrs({"activation_layout: std::string", "act: std::string"})
    .SetKernelFn(PD_KERNEL(fastconv::Apply))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ApplyShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ApplyDtype));

PD_BUILD_OP(fastconv_sync_bn_backward_reduce)
    .Inputs({"DY", "Y", "Z", "Mean"})
    .Outputs({"Sums"})
    .Attrs({"activation_layout: std::string", "act: std::string"})
    .SetKernelFn(PD_KERNEL(fastconv::GradReduce))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::GradReduceShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::GradReduceDtype));

PD_BUILD_OP(fastconv_sync_bn_backward)
    .Inputs({"DY", "Y", "Z", "X", "W", "Mean", "InvStd", "Scale", "GlobalSums"})
    .Outputs({"DX", "DW", "DResidual"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>",
            "dilations: std::vector<int>", "groups: int",
            "activation_layout: std::string", "act: std::string",
            "global_count: int64_t", "with_residual: bool"})
    .SetKernelFn(PD_KERNEL(fastconv::ConvGrad))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ConvGradShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ConvGradDtype));
