// fastconv_linear: paddle.nn.Linear's y = x . W + b (W [in, out], any
// leading dimensions on x) on oneDNN's sgemm, with its backward. Float32 CPU
// tensors; the Python side (ops.linear) sends others to Paddle's linear.
// An absent bias is the [1, 1] placeholder of the other ops
// (conv_bn_act/conv_bn_act.h): optional inputs would make optional gradients.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "linear/linear.h"
#include "paddle/extension.h"

namespace fastconv {
namespace {

// Rows (the product of x's leading dimensions), in, out after checking the
// operands; whether a real bias was given.
struct LinearDims {
  int64_t M, K, N;
  bool bias;
};

LinearDims check_linear(const paddle::Tensor& x, const paddle::Tensor& w,
                        const paddle::Tensor& b) {
  for (const auto& [t, name] :
       {std::pair<const paddle::Tensor*, const char*>{&x, "x"},
        {&w, "weight"}, {&b, "bias"}})
    FC_CHECK_ARG(t->is_cpu() && t->dtype() == paddle::DataType::FLOAT32,
                 kLinearOp, name, "must be a float32 CPU tensor, got ",
                 t->dtype(), " on ", t->place());
  FC_CHECK_ARG(!x.shape().empty(), kLinearOp, "x", "must have at least 1 "
               "dimension");
  FC_CHECK_ARG(w.shape().size() == 2, kLinearOp, "weight",
               "must be 2-D [in_features, out_features], got ",
               shape_str(w.shape()));
  LinearDims d;
  d.K = w.shape()[0];
  d.N = w.shape()[1];
  FC_CHECK_ARG(x.shape().back() == d.K, kLinearOp, "x",
               "has ", x.shape().back(), " features in its last dimension "
               "(shape ", shape_str(x.shape()), "), weight expects ", d.K);
  FC_CHECK_ARG(x.numel() > 0 && d.N > 0, kLinearOp, "x",
               "and weight must not be empty, got ", shape_str(x.shape()),
               " and ", shape_str(w.shape()));
  d.M = x.numel() / d.K;
  d.bias = b.shape().size() == 1;
  FC_CHECK_ARG(!d.bias || b.shape()[0] == d.N, kLinearOp, "bias",
               "must have out_features = ", d.N, " values, got ",
               shape_str(b.shape()));
  return d;
}

std::vector<int64_t> out_shape(std::vector<int64_t> x, int64_t n) {
  x.back() = n;
  return x;
}

std::vector<paddle::Tensor> LinearForward(const paddle::Tensor& x,
                                          const paddle::Tensor& w,
                                          const paddle::Tensor& b,
                                          bool need_dx) {
  const LinearDims d = check_linear(x, w, b);
  paddle::Tensor y = host_empty(out_shape(x.shape(), d.N), x.dtype(),
                                x.place());
  linear_forward_cpu(x.data<float>(), w.data<float>(),
                     d.bias ? b.data<float>() : nullptr, y.data<float>(),
                     d.M, d.K, d.N);
  return {y};
}

std::vector<paddle::Tensor> LinearBackward(const paddle::Tensor& x,
                                           const paddle::Tensor& w,
                                           const paddle::Tensor& b,
                                           const paddle::Tensor& dy,
                                           bool need_dx) {
  const LinearDims d = check_linear(x, w, b);
  FC_CHECK_ARG(dy.shape() == out_shape(x.shape(), d.N) &&
                   dy.dtype() == x.dtype(),
               kLinearOp, "grad_y", "must match y (shape ",
               shape_str(out_shape(x.shape(), d.N)), "), got ",
               shape_str(dy.shape()));
  // need_dx = false (x needs no gradient): no dX GEMM, a zero dX.
  paddle::Tensor dx = need_dx
                          ? host_empty(x.shape(), x.dtype(), x.place())
                          : paddle::full(x.shape(), 0, x.dtype(), x.place());
  paddle::Tensor dw = host_empty(w.shape(), w.dtype(), w.place());
  paddle::Tensor db = d.bias ? host_empty(b.shape(), b.dtype(), b.place())
                             : paddle::full(b.shape(), 0, b.dtype(), b.place());
  linear_backward_cpu(x.data<float>(), w.data<float>(), dy.data<float>(),
                      need_dx ? dx.data<float>() : nullptr, dw.data<float>(),
                      d.bias ? db.data<float>() : nullptr, d.M, d.K, d.N);
  return {dx, dw, db};
}

std::vector<std::vector<int64_t>> LinearShape(const std::vector<int64_t>& x,
                                              const std::vector<int64_t>& w,
                                              const std::vector<int64_t>& b,
                                              bool need_dx) {
  FC_CHECK_ARG(!x.empty() && w.size() == 2, kLinearOp, "x",
               "must have at least 1 dimension and weight 2, got ",
               shape_str(x), " and ", shape_str(w));
  return {out_shape(x, w[1])};
}

std::vector<std::vector<int64_t>> LinearGradShape(
    const std::vector<int64_t>& x, const std::vector<int64_t>& w,
    const std::vector<int64_t>& b, const std::vector<int64_t>& dy) {
  return {x, w, b};
}

std::vector<paddle::DataType> LinearDtype(const paddle::DataType& x,
                                          const paddle::DataType& w,
                                          const paddle::DataType& b) {
  return {x};
}

std::vector<paddle::DataType> LinearGradDtype(const paddle::DataType& x,
                                              const paddle::DataType& w,
                                              const paddle::DataType& b,
                                              const paddle::DataType& dy) {
  return {x, w, b};
}

}  // namespace
}  // namespace fastconv

PD_BUILD_OP(fastconv_linear)
    .Inputs({"X", "W", "Bias"})
    .Outputs({"Y"})
    .Attrs({"need_dx: bool"})
    .SetKernelFn(PD_KERNEL(fastconv::LinearForward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::LinearShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::LinearDtype));

PD_BUILD_GRAD_OP(fastconv_linear)
    .Inputs({"X", "W", "Bias", paddle::Grad("Y")})
    .Outputs({paddle::Grad("X"), paddle::Grad("W"), paddle::Grad("Bias")})
    .Attrs({"need_dx: bool"})
    .SetKernelFn(PD_KERNEL(fastconv::LinearBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::LinearGradShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::LinearGradDtype));
