// CUDA engine of fastconv_conv_bn_act: the convolution (forward and
// backward) goes through Paddle's own conv2d / conv2d_grad (cuDNN inside
// Paddle); everything memory-bound around it runs in our kernels
// (bn_act_kernels.cu), launched on the tensor's stream.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/cuda_checks.h"
#include "common/paddle_conv_api.h"
#include "conv_bn_act/bn_act_cuda.h"
#include "conv_bn_act/conv_bn_act.h"

namespace fastconv {
namespace {

namespace pe = paddle::experimental;
using cuda::DType;

DType dtype_of(const paddle::Tensor& t) {
  return cuda_dtype(t, kConvBnActOp, "x");
}

cuda::ChannelView out_view(const ConvGeometry& g) {
  return channel_view(g.N, g.OH, g.OW, g.O, g.channels_last);
}

void check_launch(cudaError_t err, const char* what) {
  fastconv::check_launch(err, kConvBnActOp, what);
}

paddle::Tensor conv(const paddle::Tensor& x, const paddle::Tensor& w,
                    const ConvGeometry& g, const ConvBnActAttrs& a) {
  return pe::conv2d(x, w, a.strides, paddings4(g), "EXPLICIT", a.dilations,
                    a.groups, a.data_format);
}

paddle::Tensor workspace(const ConvGeometry& g, const paddle::Place& place) {
  const size_t bytes = cuda::bn_workspace_bytes(out_view(g));
  return paddle::empty({static_cast<int64_t>(bytes > 0 ? bytes : 1)},
                       paddle::DataType::UINT8, place);
}

// z = conv(x, W) + bias (bias added in place by the epilogue kernel).
paddle::Tensor conv_plus_bias(const paddle::Tensor& x, const paddle::Tensor& w,
                              const OptTensor& bias, const ConvGeometry& g,
                              const ConvBnActAttrs& a) {
  paddle::Tensor z = conv(x, w, g, a);
  if (bias) {
    paddle::Tensor b32 = float32_of(*bias);
    check_launch(cuda::launch_bias_act_forward(
                     dtype_of(x), z.data(), nullptr, b32.data<float>(), false,
                     z.data(), out_view(g), cuda_stream_of(x)),
                 "bias_act_forward");
  }
  return z;
}

}  // namespace

std::vector<paddle::Tensor> conv_bn_act_forward_cuda(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a) {
  const DType dt = dtype_of(x);
  const auto place = x.place();
  const auto stream = cuda_stream_of(x);
  const cuda::ChannelView v = out_view(g);
  const int64_t O = g.O;
  auto f32_empty = [&](int64_t n) {
    return paddle::empty({n}, paddle::DataType::FLOAT32, place);
  };
  const void* res = residual ? residual->data() : nullptr;

  if (!a.training) {
    // Fold BN into the filter (one small kernel; cheaper than detecting
    // whether anything changed), then conv + one epilogue pass.
    paddle::Tensor wf = paddle::empty(w.shape(), w.dtype(), place);
    paddle::Tensor bf = f32_empty(O);
    check_launch(cuda::launch_fold_bn(dt, w.data(), bias ? bias->data() : nullptr,
                                      scale.data<float>(), shift.data<float>(),
                                      running_mean.data<float>(),
                                      running_var.data<float>(), a.epsilon, O,
                                      w.numel() / O, wf.data(), bf.data<float>(),
                                      stream),
                 "fold_bn");
    paddle::Tensor y = conv(x, wf, g, a);
    check_launch(cuda::launch_bias_act_forward(dt, y.data(), res,
                                               bf.data<float>(), a.relu(),
                                               y.data(), v, stream),
                 "bias_act_forward");
    paddle::Tensor save_mean = pe::assign(running_mean);
    paddle::Tensor save_invstd =
        pe::rsqrt(pe::scale(running_var, 1.0f, a.epsilon, true));
    return {y, paddle::empty({1}, x.dtype(), place), save_mean, save_invstd};
  }

  paddle::Tensor z = conv_plus_bias(x, w, bias, g, a);
  paddle::Tensor save_mean = f32_empty(O), save_invstd = f32_empty(O);
  paddle::Tensor ca = f32_empty(O), cb = f32_empty(O);
  paddle::Tensor ws = workspace(g, place);
  check_launch(cuda::launch_bn_stats(dt, z.data(), v, scale.data<float>(),
                                     shift.data<float>(),
                                     running_mean.data<float>(),
                                     running_var.data<float>(), a.momentum,
                                     a.epsilon, save_mean.data<float>(),
                                     save_invstd.data<float>(), ca.data<float>(),
                                     cb.data<float>(), ws.data(), stream),
               "bn_stats");
  paddle::Tensor y = paddle::empty(g.out_shape(), x.dtype(), place);
  check_launch(cuda::launch_bn_act_forward(dt, z.data(), res, ca.data<float>(),
                                           cb.data<float>(), a.relu(), y.data(),
                                           v, stream),
               "bn_act_forward");
  return {y, z, save_mean, save_invstd};
}

std::vector<paddle::Tensor> conv_bn_act_backward_cuda(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a) {
  const DType dt = dtype_of(x);
  const auto place = x.place();
  const auto stream = cuda_stream_of(x);
  const cuda::ChannelView v = out_view(g);
  const int64_t O = g.O;
  // Eval-mode backward recomputes z (it was not kept).
  paddle::Tensor z = a.training ? saved_z : conv_plus_bias(x, w, bias, g, a);
  paddle::Tensor dscale = paddle::empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor dshift = paddle::empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor ws = workspace(g, place);
  check_launch(cuda::launch_bn_act_backward_reduce(
                   dt, dy.data(), y.data(), z.data(), saved_mean.data<float>(),
                   saved_invstd.data<float>(), a.relu(), v,
                   dscale.data<float>(), dshift.data<float>(), ws.data(),
                   stream),
               "bn_act_backward_reduce");
  paddle::Tensor dz = paddle::empty(g.out_shape(), x.dtype(), place);
  paddle::Tensor dres;
  if (residual) dres = paddle::empty(g.out_shape(), x.dtype(), place);
  check_launch(cuda::launch_bn_act_backward_apply(
                   dt, dy.data(), y.data(), z.data(), saved_mean.data<float>(),
                   saved_invstd.data<float>(), scale.data<float>(),
                   dscale.data<float>(), dshift.data<float>(), a.relu(),
                   a.training, v, dz.data(), residual ? dres.data() : nullptr,
                   stream),
               "bn_act_backward_apply");
  paddle::Tensor dx, dw;
  pe::conv2d_grad(x, w, dz, a.strides, paddings4(g), "EXPLICIT", a.dilations,
                  a.groups, a.data_format, &dx, &dw);
  // With batch statistics the conv bias gradient is exactly zero (BN
  // subtracts the batch mean, so sum(dz) = 0); only eval mode sums it.
  paddle::Tensor dbias;
  if (bias && a.training) {
    dbias = pe::full({g.O}, 0, bias->dtype(), place);
  } else if (bias) {
    const std::vector<int64_t> axes =
        g.channels_last ? std::vector<int64_t>{0, 1, 2}
                        : std::vector<int64_t>{0, 2, 3};
    dbias = pe::sum(dz, axes, bias->dtype(), false);
  }
  return {dx, dw, dbias, dscale, dshift, dres};
}

}  // namespace fastconv
