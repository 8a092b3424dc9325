// Registration of fastconv_max_pool_nhwc / fastconv_max_pool_nchw and their
// grad ops: max pooling (floor mode, padding that never wins, the first
// maximum of a window takes its gradient, as in Paddle), float32 CPU.
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "max_pool/max_pool.h"
#include "paddle/extension.h"

namespace fastconv {
namespace {

PoolGeometry make_geometry(const std::vector<int64_t>& xs,
                           const std::vector<int>& k, const std::vector<int>& s,
                           const std::vector<int>& p, bool nhwc) {
  const char* op = nhwc ? kMaxPoolOp : kMaxPoolNchwOp;
  FC_CHECK_ARG(xs.size() == 4, op, "x", "must be 4-D, got ", shape_str(xs));
  // as [N, H, W, C]
  const std::vector<int64_t> x =
      nhwc ? xs : std::vector<int64_t>{xs[0], xs[2], xs[3], xs[1]};
  FC_CHECK_ARG(k.size() == 2 && s.size() == 2 && p.size() == 2 && k[0] > 0 &&
                   k[1] > 0 && s[0] > 0 && s[1] > 0 && p[0] >= 0 && p[1] >= 0 &&
                   p[0] < k[0] && p[1] < k[1],
               op, "kernel_size",
               "stride and padding must be 2 values each (kernel and stride "
               "> 0, 0 <= padding < kernel)");
  PoolGeometry g{x[0], x[1], x[2], x[3], 0, 0, k[0], k[1], s[0], s[1], p[0], p[1]};
  g.OH = x[1] < 0 ? -1 : (x[1] + 2 * p[0] - k[0]) / s[0] + 1;
  g.OW = x[2] < 0 ? -1 : (x[2] + 2 * p[1] - k[1]) / s[1] + 1;
  return g;
}

void check_x(const paddle::Tensor& x, const PoolGeometry& g, const char* op) {
  FC_CHECK_ARG(x.is_cpu() && x.dtype() == paddle::DataType::FLOAT32, op, "x",
               "must be a float32 CPU tensor, got ", x.dtype(), " on ",
               x.place());
  FC_CHECK_ARG(g.N > 0 && g.C > 0 && g.OH > 0 && g.OW > 0, op, "x", "shape ",
               shape_str(x.shape()), " gives no output");
  FC_CHECK_ARG(g.H * g.W < (int64_t{1} << 31), op, "x",
               "images of 2^31 or more pixels are not supported");
}

std::vector<int64_t> out_shape(const PoolGeometry& g, bool nhwc) {
  return nhwc ? std::vector<int64_t>{g.N, g.OH, g.OW, g.C}
              : std::vector<int64_t>{g.N, g.C, g.OH, g.OW};
}

template <bool kNhwc>
std::vector<paddle::Tensor> MaxPoolForward(const paddle::Tensor& x,
                                           const std::vector<int>& kernel,
                                           const std::vector<int>& strides,
                                           const std::vector<int>& paddings) {
  const PoolGeometry g = make_geometry(x.shape(), kernel, strides, paddings, kNhwc);
  check_x(x, g, kNhwc ? kMaxPoolOp : kMaxPoolNchwOp);
  paddle::Tensor y = host_empty(out_shape(g, kNhwc), x.dtype(), x.place());
  paddle::Tensor argmax =
      host_empty(out_shape(g, kNhwc), paddle::DataType::INT32, x.place());
  if (kNhwc)
    max_pool_nhwc_forward(x.data<float>(), y.data<float>(), argmax.data<int32_t>(), g);
  else
    max_pool_nchw_forward(x.data<float>(), y.data<float>(), argmax.data<int32_t>(), g);
  return {y, argmax};
}

template <bool kNhwc>
std::vector<paddle::Tensor> MaxPoolBackward(const paddle::Tensor& x,
                                            const paddle::Tensor& argmax,
                                            const paddle::Tensor& dy,
                                            const std::vector<int>& kernel,
                                            const std::vector<int>& strides,
                                            const std::vector<int>& paddings) {
  const char* op = kNhwc ? kMaxPoolOp : kMaxPoolNchwOp;
  const PoolGeometry g = make_geometry(x.shape(), kernel, strides, paddings, kNhwc);
  check_x(x, g, op);
  FC_CHECK_ARG(dy.shape() == argmax.shape() && dy.dtype() == x.dtype(), op,
               "grad_y", "must match the output, got ", shape_str(dy.shape()));
  paddle::Tensor dx = host_empty(x.shape(), x.dtype(), x.place());
  if (kNhwc)
    max_pool_nhwc_backward(dy.data<float>(), argmax.data<int32_t>(), dx.data<float>(), g);
  else
    max_pool_nchw_backward(dy.data<float>(), argmax.data<int32_t>(), dx.data<float>(), g);
  return {dx};
}

template <bool kNhwc>
std::vector<std::vector<int64_t>> MaxPoolShape(const std::vector<int64_t>& x,
                                               const std::vector<int>& k,
                                               const std::vector<int>& s,
                                               const std::vector<int>& p) {
  const PoolGeometry g = make_geometry(x, k, s, p, kNhwc);
  return {out_shape(g, kNhwc), out_shape(g, kNhwc)};
}

std::vector<paddle::DataType> MaxPoolDtype(const paddle::DataType& x) {
  return {x, paddle::DataType::INT32};
}

std::vector<std::vector<int64_t>> MaxPoolGradShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>&,
    const std::vector<int64_t>&) {
  return {x};
}

std::vector<paddle::DataType> MaxPoolGradDtype(const paddle::DataType& x,
                                               const paddle::DataType&,
                                               const paddle::DataType&) {
  return {x};
}

}  // namespace
}  // namespace fastconv

#define FC_MAX_POOL_ATTRS                                             \
  {"kernel_size: std::vector<int>", "strides: std::vector<int>",       \
   "paddings: std::vector<int>"}

#define FC_REGISTER_MAX_POOL(name, nhwc)                                      \
  PD_BUILD_OP(name)                                                         \
      .Inputs({"X"})                                                        \
      .Outputs({"Out", "Argmax"})                                           \
      .Attrs(FC_MAX_POOL_ATTRS)                                             \
      .SetKernelFn(PD_KERNEL(fastconv::MaxPoolForward<nhwc>))               \
      .SetInferShapeFn(PD_INFER_SHAPE(fastconv::MaxPoolShape<nhwc>))        \
      .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::MaxPoolDtype));             \
  PD_BUILD_GRAD_OP(name)                                                    \
      .Inputs({"X", "Argmax", paddle::Grad("Out")})                         \
      .Outputs({paddle::Grad("X")})                                         \
      .Attrs(FC_MAX_POOL_ATTRS)                                             \
      .SetKernelFn(PD_KERNEL(fastconv::MaxPoolBackward<nhwc>))              \
      .SetInferShapeFn(PD_INFER_SHAPE(fastconv::MaxPoolGradShape))          \
      .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::MaxPoolGradDtype))

FC_REGISTER_MAX_POOL(fastconv_max_pool_nhwc, true);
FC_REGISTER_MAX_POOL(fastconv_max_pool_nchw, false);
