// CPU kernels of the SyncBatchNorm phases (see sync_bn.h): the convolution
// through the same engine as fastconv_conv_bn_act, our BN kernels around it.
#include <cmath>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "sync_bn/sync_bn.h"

namespace fastconv {
namespace {

cpu::ChannelView view_of(const std::vector<int64_t>& s, bool nhwc) {
  return cpu::view_of_4d(s[0], s[1], s[2], s[3], nhwc);
}

}  // namespace

std::vector<paddle::Tensor> sync_bn_conv_stats_cpu(const paddle::Tensor& x,
                                                   const paddle::Tensor& w,
                                                   const OptTensor& bias,
                                                   const ConvGeometry& g,
                                                   const ConvBnActAttrs& a) {
  paddle::Tensor z = conv_forward_train_cpu(g, a, x, w, bias);
  const int64_t C = g.O;
  std::vector<float> mean(C), var(C);
  const cpu::ChannelView v = view_of(z.shape(), g.channels_last);
  cpu::channel_stats(z.data<float>(), v, mean.data(), var.data());
  paddle::Tensor stats =
      host_empty({3, C}, paddle::DataType::FLOAT64, x.place());
  double* st = stats.data<double>();
  const double n = static_cast<double>(v.count());
  for (int64_t c = 0; c < C; ++c) {
    st[c] = n * mean[c];
    st[C + c] = n * (static_cast<double>(var[c]) +
                     static_cast<double>(mean[c]) * mean[c]);
    st[2 * C + c] = n;
  }
  return {z, stats};
}

paddle::Tensor sync_bn_apply_cpu(const paddle::Tensor& z,
                                 const paddle::Tensor& mean,
                                 const paddle::Tensor& invstd,
                                 const paddle::Tensor& scale,
                                 const paddle::Tensor& shift,
                                 const OptTensor& residual, bool nhwc,
                                 bool relu) {
  const cpu::ChannelView v = view_of(z.shape(), nhwc);
  const int64_t C = v.channels;
  std::vector<float> ca(C), cb(C);
  cpu::bn_affine_coefficients(scale.data<float>(), shift.data<float>(),
                              mean.data<float>(), invstd.data<float>(), C,
                              ca.data(), cb.data());
  paddle::Tensor y = host_empty(z.shape(), z.dtype(), z.place());
  cpu::bn_act_forward(z.data<float>(), residual ? residual->data<float>() : nullptr,
                      ca.data(), cb.data(), relu, y.data<float>(), v);
  return y;
}

paddle::Tensor sync_bn_grad_reduce_cpu(const paddle::Tensor& dy,
                                       const paddle::Tensor& y,
                                       const paddle::Tensor& z,
                                       const paddle::Tensor& mean, bool nhwc,
                                       bool relu) {
  const cpu::ChannelView v = view_of(z.shape(), nhwc);
  const int64_t C = v.channels;
  paddle::Tensor sums =
      host_empty({2, C}, paddle::DataType::FLOAT64, z.place());
  cpu::bn_act_backward_reduce(dy.data<float>(), y.data<float>(), z.data<float>(),
                              mean.data<float>(), relu, v, sums.data<double>(),
                              sums.data<double>() + C);
  return sums;
}

std::vector<paddle::Tensor> sync_bn_conv_grad_cpu(
    const paddle::Tensor& dy, const paddle::Tensor& y, const paddle::Tensor& z,
    const paddle::Tensor& x, const paddle::Tensor& w,
    const paddle::Tensor& mean, const paddle::Tensor& invstd,
    const paddle::Tensor& scale, const paddle::Tensor& global_sums,
    double global_count, bool with_residual, const ConvGeometry& g,
    const ConvBnActAttrs& a) {
  const cpu::ChannelView v = view_of(z.shape(), g.channels_last);
  const int64_t C = v.channels;
  // dz = gamma * invstd * (g - sum_g / M - (z - mean) * invstd^2 *
  //      sum_gxmu / M), with the sums and M over every rank's batch.
  const double* sum_g = global_sums.data<double>();
  const double* sum_gxmu = sum_g + C;
  std::vector<float> k1(C), k2(C), k3(C);
  cpu::bn_backward_coefficients(scale.data<float>(), invstd.data<float>(), sum_g,
                                sum_gxmu, global_count, true, C, k1.data(),
                                k2.data(), k3.data());
  paddle::Tensor dz = host_empty(z.shape(), z.dtype(), z.place());
  paddle::Tensor dres = with_residual
                            ? host_empty(z.shape(), z.dtype(), z.place())
                            : paddle::full({1}, 0, z.dtype(), z.place());
  cpu::bn_act_backward_apply(dy.data<float>(), y.data<float>(), z.data<float>(),
                             mean.data<float>(), k1.data(), k2.data(), k3.data(),
                             a.relu(), v, dz.data<float>(),
                             with_residual ? dres.data<float>() : nullptr);
  std::vector<paddle::Tensor> dxw = conv_backward_cpu(g, a, x, w, dz);
  return {dxw[0], dxw[1], dres};
}

}  // namespace fastconv
