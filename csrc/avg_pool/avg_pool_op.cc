// Registration of fastconv_avg_pool_nhwc_to_nchw and its grad op: average
// pooling (floor mode, `exclusive` as in paddle.nn.AvgPool2D) of an NHWC
// float32 CPU tensor into an NCHW output.
#include <vector>

#include "avg_pool/avg_pool.h"
#include "common/check.h"
#include "common/host_pool.h"
#include "paddle/extension.h"

namespace fastconv {
namespace {

AvgPoolGeometry make_geometry(const std::vector<int64_t>& x,
                              const std::vector<int>& k,
                              const std::vector<int>& s,
                              const std::vector<int>& p, bool exclusive) {
  FC_CHECK_ARG(x.size() == 4, kAvgPoolOp, "x", "must be 4-D (NHWC), got ",
               shape_str(x));
  FC_CHECK_ARG(k.size() == 2 && s.size() == 2 && p.size() == 2 && k[0] > 0 &&
                   k[1] > 0 && s[0] > 0 && s[1] > 0 && p[0] >= 0 &&
                   p[1] >= 0 && p[0] < k[0] && p[1] < k[1],
               kAvgPoolOp, "kernel_size",
               "stride and padding must be 2 values each (kernel and stride "
               "> 0, 0 <= padding < kernel)");
  AvgPoolGeometry g{x[0], x[1], x[2], x[3], 0, 0, k[0], k[1],
                    s[0], s[1], p[0], p[1], exclusive};
  g.OH = x[1] < 0 ? -1 : (x[1] + 2 * p[0] - k[0]) / s[0] + 1;
  g.OW = x[2] < 0 ? -1 : (x[2] + 2 * p[1] - k[1]) / s[1] + 1;
  return g;
}

void check_x(const paddle::Tensor& x, const AvgPoolGeometry& g) {
  FC_CHECK_ARG(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32,
               kAvgPoolOp, "x", "must be a float32 CPU tensor, got ",
               x.dtype(), " on ", x.place());
  FC_CHECK_ARG(g.N > 0 && g.C > 0 && g.OH > 0 && g.OW > 0, kAvgPoolOp, "x",
               "shape ", shape_str(x.shape()), " gives no output");
}

std::vector<int64_t> out_shape(const AvgPoolGeometry& g) {
  return {g.N, g.C, g.OH, g.OW};
}

std::vector<paddle::Tensor> AvgPoolForward(const paddle::Tensor& x,
                                           const std::vector<int>& kernel,
                                           const std::vector<int>& strides,
                                           const std::vector<int>& paddings,
                                           bool exclusive) {
  const AvgPoolGeometry g =
      make_geometry(x.shape(), kernel, strides, paddings, exclusive);
  check_x(x, g);
  paddle::Tensor y = host_empty(out_shape(g), x.dtype(), x.place());
  avg_pool_nhwc_to_nchw_forward(x.data<float>(), y.data<float>(), g);
  return {y};
}

std::vector<paddle::Tensor> AvgPoolBackward(const paddle::Tensor& x,
                                            const paddle::Tensor& dy,
                                            const std::vector<int>& kernel,
                                            const std::vector<int>& strides,
                                            const std::vector<int>& paddings,
                                            bool exclusive) {
  const AvgPoolGeometry g =
      make_geometry(x.shape(), kernel, strides, paddings, exclusive);
  check_x(x, g);
  FC_CHECK_ARG(dy.shape() == out_shape(g) && dy.dtype() == x.dtype(),
               kAvgPoolOp, "grad_y", "must match the output (shape ",
               shape_str(out_shape(g)), "), got ", shape_str(dy.shape()));
  paddle::Tensor dx = host_empty(x.shape(), x.dtype(), x.place());
  avg_pool_nhwc_to_nchw_backward(dy.data<float>(), dx.data<float>(), g);
  return {dx};
}

std::vector<std::vector<int64_t>> AvgPoolShape(const std::vector<int64_t>& x,
                                               const std::vector<int>& k,
                                               const std::vector<int>& s,
                                               const std::vector<int>& p,
                                               bool exclusive) {
  return {out_shape(make_geometry(x, k, s, p, exclusive))};
}

std::vector<paddle::DataType> AvgPoolDtype(const paddle::DataType& x) {
  return {x};
}

std::vector<std::vector<int64_t>> AvgPoolGradShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>&) {
  return {x};
}

std::vector<paddle::DataType> AvgPoolGradDtype(const paddle::DataType& x,
                                               const paddle::DataType&) {
  return {x};
}

}  // namespace
}  // namespace fastconv

#define FC_AVG_POOL_ATTRS                                       \
  {"kernel_size: std::vector<int>", "strides: std::vector<int>", \
   "paddings: std::vector<int>", "exclusive: bool"}

PD_BUILD_OP(fastconv_avg_pool_nhwc_to_nchw)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs(FC_AVG_POOL_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::AvgPoolForward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::AvgPoolShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::AvgPoolDtype));

PD_BUILD_GRAD_OP(fastconv_avg_pool_nhwc_to_nchw)
    .Inputs({"X", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs(FC_AVG_POOL_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::AvgPoolBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::AvgPoolGradShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::AvgPoolGradDtype));
