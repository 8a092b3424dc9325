// fastconv_onednn_conv2d: a bare oneDNN convolution (no bias, no post-ops)
// on plain NCHW/NHWC tensors, through the same cached plans as the fused op,
// with its backward (data and weights). It runs the convolutions that have
// no BatchNorm to fuse (GoogLeNet's stem in paddle.vision's style), and the
// benchmarks use it as the yardstick for what the fused epilogue costs on
// top of the convolution itself. With cache_weights (the Python side sets it
// where no gradient is taken: eval) the filters' oneDNN copy is cached
// (onednn/weight_cache.h); else they are reordered per call, into scratch.
// own_kernels (with cache_weights): the convolutions that qualify run on our
// own kernels (onednn/conv_onednn.cc: use_winograd for 3x3 ones,
// use_conv1x1_nhwc for NHWC 1x1 ones); without it, always on oneDNN's
// direct kernels (the benchmarks' yardstick).
#include <memory>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "common/conv_geometry.h"
#include "paddle/extension.h"

#ifdef FASTCONV_WITH_ONEDNN
#include "onednn/conv_onednn.h"
#include "onednn/weight_cache.h"
#endif

namespace fastconv {
namespace {

constexpr const char* kOp = "fastconv_onednn_conv2d";

std::vector<paddle::Tensor> OnednnConv2d(const paddle::Tensor& x,
                                         const paddle::Tensor& w,
                                         const std::vector<int>& strides,
                                         const std::vector<int>& paddings,
                                         const std::vector<int>& dilations,
                                         int groups,
                                         const std::string& data_format,
                                         bool need_dx, bool cache_weights,
                                         bool own_kernels) {
  FC_CHECK_ARG(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 &&
                   w.dtype() == paddle::DataType::FLOAT32,
               kOp, "x", "must be a float32 CPU tensor (as must weight)");
  ConvGeometry g = make_conv_geometry(x.shape(), w.shape(), strides, paddings,
                                      dilations, groups, data_format, kOp);
  check_cpu_conv_sizes(g, kOp);
#ifdef FASTCONV_WITH_ONEDNN
  return run_guarded<dnnl::error>(kOp, "geometry " + g.key(), [&] {
    onednn::ScratchScope scope;
    paddle::Tensor y = host_empty(g.out_shape(), x.dtype(), x.place());
    dnnl::stream s = onednn::make_stream();
    onednn::ConvFwdOptions o;
    o.inference = true;
    o.allow_own_kernels = own_kernels && cache_weights;
    auto plan = onednn::ConvForwardPlan::get(g, o);
    std::shared_ptr<const onednn::PreparedWeights> hold;
    const void* wbuf = onednn::plan_weights(
        *plan, onednn::ConvForwardPlan::key_of(g, o),
        {{w.data<float>(), w.numel()}}, cache_weights, s, &hold);
    plan->execute(x.data<float>(), wbuf, nullptr, nullptr, y.data<float>(),
                  s);
    return std::vector<paddle::Tensor>{y};
  });
#else
  PD_THROW(kOp, ": this build has no oneDNN engine");
#endif
}

std::vector<paddle::Tensor> OnednnConv2dBackward(
    const paddle::Tensor& x, const paddle::Tensor& w, const paddle::Tensor& dy,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int groups,
    const std::string& data_format, bool need_dx, bool cache_weights,
    bool own_kernels) {
  ConvGeometry g = make_conv_geometry(x.shape(), w.shape(), strides, paddings,
                                      dilations, groups, data_format, kOp);
  FC_CHECK_ARG(dy.shape() == g.out_shape() && dy.dtype() == x.dtype(), kOp,
               "grad_y", "must match y (shape ", shape_str(g.out_shape()),
               "), got ", shape_str(dy.shape()));
#ifdef FASTCONV_WITH_ONEDNN
  return run_guarded<dnnl::error>(kOp, "the backward of geometry " + g.key(), [&] {
    onednn::ScratchScope scope;
    // need_dx = false (the input needs no gradient, e.g. the images under
    // a network's first convolution): no backward-data pass, a zero dX.
    paddle::Tensor dx = need_dx
                            ? host_empty(x.shape(), x.dtype(), x.place())
                            : paddle::full(x.shape(), 0, x.dtype(), x.place());
    paddle::Tensor dw = host_empty(w.shape(), w.dtype(), w.place());
    dnnl::stream s = onednn::make_stream();
    onednn::ConvBackwardPlan::get(g, false)->execute(
        x.data<float>(), w.data<float>(), dy.data<float>(),
        need_dx ? dx.data<float>() : nullptr, dw.data<float>(), nullptr, s);
    return std::vector<paddle::Tensor>{dx, dw};
  });
#else
  PD_THROW(kOp, ": this build has no oneDNN engine");
#endif
}

std::vector<std::vector<int64_t>> OnednnConv2dShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, int groups,
    const std::string& data_format, bool need_dx, bool cache_weights,
    bool own_kernels) {
  return {infer_conv_out_shape(x, w, strides, paddings, dilations,
                               data_format == "NHWC")};
}

std::vector<std::vector<int64_t>> OnednnConv2dGradShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>& dy) {
  return {x, w};
}

std::vector<paddle::DataType> OnednnConv2dDtype(const paddle::DataType& x,
                                                const paddle::DataType& w) {
  return {x};
}

std::vector<paddle::DataType> OnednnConv2dGradDtype(
    const paddle::DataType& x, const paddle::DataType& w,
    const paddle::DataType& dy) {
  return {x, w};
}

}  // namespace
}  // namespace fastconv

#define FC_CONV2D_ATTRS                                                    \
  {"strides: std::vector<int>", "paddings: std::vector<int>",              \
   "dilations: std::vector<int>", "groups: int", "activation_layout: std::string", \
   "need_dx: bool", "cache_weights: bool", "own_kernels: bool"}

PD_BUILD_OP(fastconv_onednn_conv2d)
    .Inputs({"X", "Filter"})
    .Outputs({"Y"})
    .Attrs(FC_CONV2D_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::OnednnConv2d))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::OnednnConv2dShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::OnednnConv2dDtype));

PD_BUILD_GRAD_OP(fastconv_onednn_conv2d)
    .Inputs({"X", "Filter", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Filter")})
    .Attrs(FC_CONV2D_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::OnednnConv2dBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::OnednnConv2dGradShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::OnednnConv2dGradDtype));
