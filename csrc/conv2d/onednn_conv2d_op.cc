// fastconv_onednn_conv2d: a bare oneDNN convolution (inference, no bias, no
// post-ops) on plain NCHW/NHWC tensors, through the same cached plans as the
// fused op. Forward only: the benchmarks use it as the yardstick for what the
// fused epilogue costs on top of the convolution itself.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/conv_geometry.h"
#include "paddle/extension.h"

#ifdef FASTCONV_WITH_ONEDNN
#include "onednn/conv_onednn.h"
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
                                         const std::string& data_format) {
  FC_CHECK_ARG(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32 &&
                   w.dtype() == paddle::DataType::FLOAT32,
               kOp, "x", "must be a float32 CPU tensor (as must weight)");
  ConvGeometry g = make_conv_geometry(x.shape(), w.shape(), strides, paddings,
                                      dilations, groups, data_format, kOp);
#ifdef FASTCONV_WITH_ONEDNN
  return run_guarded<dnnl::error>(kOp, "geometry " + g.key(), [&] {
    onednn::ScratchScope scope;
    paddle::Tensor y = paddle::empty(g.out_shape(), x.dtype(), x.place());
    dnnl::stream s = onednn::make_stream();
    onednn::ConvFwdOptions o;
    o.inference = true;
    auto plan = onednn::ConvForwardPlan::get(g, o);
    // Weights are reordered per call, into scratch: a bare primitive call
    // plus the reorder a caller without a weight cache would pay.
    void* wbuf =
        onednn::ScratchArena::local().alloc(plan->weights_desc().get_size());
    plan->prepare_weights(w.data<float>(), wbuf, s);
    plan->execute(x.data<float>(), wbuf, nullptr, nullptr, y.data<float>(),
                  s);
    return std::vector<paddle::Tensor>{y};
  });
#else
  PD_THROW(kOp, ": this build has no oneDNN engine");
#endif
}

}  // namespace
}  // namespace fastconv

PD_BUILD_OP(fastconv_onednn_conv2d)
    .Inputs({"X", "Filter"})
    .Outputs({"Y"})
    .Attrs({"strides: std::vector<int>", "paddings: std::vector<int>",
            "dilations: std::vector<int>", "groups: int",
            "data_format: std::string"})
    .SetKernelFn(PD_KERNEL(fastconv::OnednnConv2d));
