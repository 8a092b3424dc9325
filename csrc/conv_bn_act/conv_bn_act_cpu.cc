// CPU engine of fastconv_conv_bn_act: oneDNN convolution + our BN kernels
// (or Paddle's conv API, see cpu_conv_engine.h).
//
// training: z = conv(x, W) + b         (oneDNN, forward_training)
//           mean/var = stats(z); y = act(BN(z) + residual)   (one pass each)
// eval:     y = act(conv(x, W') + b' + residual)  (one oneDNN primitive with
//           bias, sum and ReLU post-ops; W', b' = BN folded into the conv,
//           cached in oneDNN's layout and rebuilt when any source changed)
// backward: one reduction pass, one pass producing dz (and dresidual), then
//           oneDNN backward data and weights.
#include <atomic>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "common/phase_timer.h"
#include "common/paddle_conv_api.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "conv_bn_act/conv_bn_act.h"
#include "conv_bn_act/cpu_conv_engine.h"
#ifdef FASTCONV_WITH_ONEDNN
#include "conv_bn_act/folded_weights.h"
#include "onednn/conv_onednn.h"
#endif

namespace fastconv {

namespace {
#ifdef FASTCONV_WITH_ONEDNN
using ForeignError = dnnl::error;
#else
struct ForeignError : std::exception {};  // no foreign library to guard
#endif

#ifdef FASTCONV_WITH_ONEDNN
std::atomic<int> g_engine{static_cast<int>(CpuConvEngine::kOneDNN)};
#else
std::atomic<int> g_engine{static_cast<int>(CpuConvEngine::kPaddle)};
#endif
}  // namespace

bool onednn_available() {
#ifdef FASTCONV_WITH_ONEDNN
  return true;
#else
  return false;
#endif
}

CpuConvEngine cpu_conv_engine() {
  return static_cast<CpuConvEngine>(g_engine.load());
}

bool set_cpu_conv_engine(CpuConvEngine e) {
  if (e == CpuConvEngine::kOneDNN && !onednn_available()) return false;
  g_engine.store(static_cast<int>(e));
  return true;
}

namespace {

bool use_onednn() { return cpu_conv_engine() == CpuConvEngine::kOneDNN; }

cpu::ChannelView out_view(const ConvGeometry& g) {
  const std::vector<int64_t> s = g.out_shape();
  return cpu::view_of_4d(s[0], s[1], s[2], s[3], g.channels_last);
}

void check_cpu_dtype(const paddle::Tensor& x) {
  FC_CHECK_ARG(x.dtype() == paddle::DataType::FLOAT32, kConvBnActOp, "x",
               "on CPU must be float32 (float16/bfloat16 run on GPU only), "
               "got ", x.dtype());
}

const float* opt_data(const OptTensor& t) {
  return t ? t->data<float>() : nullptr;
}

// z = conv(x, W) + bias, training flavour. With oneDNN the weights change
// every step, so they are reordered per call into the thread's scratch arena.
paddle::Tensor conv_train(const ConvGeometry& g, const ConvBnActAttrs& a,
                          const paddle::Tensor& x, const paddle::Tensor& w,
                          const OptTensor& bias) {
#ifdef FASTCONV_WITH_ONEDNN
  if (use_onednn()) {
    paddle::Tensor z = host_empty(g.out_shape(), x.dtype(), x.place());
    dnnl::stream s = onednn::make_stream();
    onednn::ConvFwdOptions o;
    o.with_bias = static_cast<bool>(bias);
    auto plan = onednn::ConvForwardPlan::get(g, o);
    void* wbuf =
        onednn::ScratchArena::local().alloc(plan->weights_desc().get_size());
    plan->prepare_weights(w.data<float>(), wbuf, s);
    plan->execute(x.data<float>(), wbuf, opt_data(bias), nullptr,
                  z.data<float>(), s);
    return z;
  }
#endif
  paddle::Tensor z = paddle::experimental::conv2d(
      x, w, a.strides, paddings4(g), "EXPLICIT", a.dilations, a.groups,
      a.data_format);
  if (bias) {
    const std::vector<float> ones(g.O, 1.f);
    cpu::bn_act_forward(z.data<float>(), nullptr, ones.data(),
                        bias->data<float>(), false, z.data<float>(),
                        out_view(g));
  }
  return z;
}

}  // namespace

paddle::Tensor conv_forward_train_cpu(const ConvGeometry& g,
                                      const ConvBnActAttrs& a,
                                      const paddle::Tensor& x,
                                      const paddle::Tensor& w,
                                      const OptTensor& bias) {
  check_cpu_dtype(x);
  check_cpu_conv_sizes(g, kConvBnActOp);
  return run_guarded<ForeignError>(kConvBnActOp, "geometry " + g.key(), [&] {
#ifdef FASTCONV_WITH_ONEDNN
    onednn::ScratchScope scope;
#endif
    return conv_train(g, a, x, w, bias);
  });
}

std::vector<paddle::Tensor> conv_backward_cpu(const ConvGeometry& g,
                                              const ConvBnActAttrs& a,
                                              const paddle::Tensor& x,
                                              const paddle::Tensor& w,
                                              const paddle::Tensor& dz) {
  check_cpu_conv_sizes(g, kConvBnActOp);
  return run_guarded<ForeignError>(kConvBnActOp, "geometry " + g.key(), [&] {
#ifdef FASTCONV_WITH_ONEDNN
    if (use_onednn()) {
      onednn::ScratchScope scope;
      paddle::Tensor dx = host_empty(x.shape(), x.dtype(), x.place());
      paddle::Tensor dw = host_empty(w.shape(), w.dtype(), w.place());
      dnnl::stream s = onednn::make_stream();
      auto plan = onednn::ConvBackwardPlan::get(g, false);
      plan->execute(x.data<float>(), w.data<float>(), dz.data<float>(),
                    dx.data<float>(), dw.data<float>(), nullptr, s);
      return std::vector<paddle::Tensor>{dx, dw};
    }
#endif
    paddle::Tensor dx, dw;
    paddle::experimental::conv2d_grad(x, w, dz, a.strides, paddings4(g),
                                      "EXPLICIT", a.dilations, a.groups,
                                      a.data_format, &dx, &dw);
    return std::vector<paddle::Tensor>{dx, dw};
  });
}

std::vector<paddle::Tensor> conv_bn_act_forward_cpu_impl(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_dtype(x);
#ifdef FASTCONV_WITH_ONEDNN
  onednn::ScratchScope scope;
#endif
  const auto place = x.place();
  const int64_t O = g.O;
  paddle::Tensor y = host_empty(g.out_shape(), x.dtype(), place);
  paddle::Tensor save_mean = host_empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor save_invstd =
      host_empty({O}, paddle::DataType::FLOAT32, place);
  float* sm = save_mean.data<float>();
  float* si = save_invstd.data<float>();
  const float* gamma = scale.data<float>();
  const float* beta = shift.data<float>();
  float* rm = running_mean.data<float>();
  float* rv = running_var.data<float>();

  const cpu::ChannelView v = out_view(g);
  if (!a.training) {
    for (int64_t c = 0; c < O; ++c) {
      sm[c] = rm[c];
      si[c] = 1.f / std::sqrt(rv[c] + a.epsilon);
    }
    paddle::Tensor no_z = host_empty({1}, x.dtype(), place);
#ifdef FASTCONV_WITH_ONEDNN
    if (use_onednn()) {
      dnnl::stream s = onednn::make_stream();
      auto folded = get_folded_weights(g, w, bias, scale, shift, running_mean,
                                       running_var, a.epsilon,
                                       static_cast<bool>(residual), a.relu(), s);
      folded->plan->execute(x.data<float>(), folded->weights(),
                            folded->bias.data(), opt_data(residual),
                            y.data<float>(), s);
      return {y, no_z, save_mean, save_invstd};
    }
#endif
    // Paddle conv: BN applied after the convolution with running statistics.
    paddle::Tensor z = conv_train(g, a, x, w, bias);
    std::vector<float> ca(O), cb(O);
    cpu::bn_affine_coefficients(gamma, beta, sm, si, O, ca.data(), cb.data());
    cpu::bn_act_forward(z.data<float>(), opt_data(residual), ca.data(),
                        cb.data(), a.relu(), y.data<float>(), v);
    return {y, no_z, save_mean, save_invstd};
  }

  PhaseTimer timer("forward");
  paddle::Tensor z = conv_train(g, a, x, w, bias);
  timer.mark("conv");
  std::vector<float> var(O), ca(O), cb(O);
  cpu::channel_stats(z.data<float>(), v, sm, var.data());
  timer.mark("stats");
  const float m = a.momentum;
  for (int64_t c = 0; c < O; ++c) {
    si[c] = 1.f / std::sqrt(var[c] + a.epsilon);
    // paddle.nn.BatchNorm2D: running = momentum * running + (1 - momentum) *
    // batch, with the biased batch variance.
    rm[c] = m * rm[c] + (1.f - m) * sm[c];
    rv[c] = m * rv[c] + (1.f - m) * var[c];
  }
  cpu::bn_affine_coefficients(gamma, beta, sm, si, O, ca.data(), cb.data());
  cpu::bn_act_forward(z.data<float>(), opt_data(residual), ca.data(), cb.data(),
                      a.relu(), y.data<float>(), v);
  timer.mark("normalize+act");
  return {y, z, save_mean, save_invstd};
}

std::vector<paddle::Tensor> conv_bn_act_backward_cpu_impl(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_dtype(x);
#ifdef FASTCONV_WITH_ONEDNN
  onednn::ScratchScope scope;
#endif
  const auto place = x.place();
  const int64_t O = g.O;
  const cpu::ChannelView v = out_view(g);

  // Eval-mode backward (frozen BN statistics): z was not kept, recompute it.
  paddle::Tensor z_tensor;
  if (a.training) {
    FC_CHECK_ARG(saved_z.shape() == g.out_shape(), kConvBnActOp, "SavedZ",
                 "does not match the output shape (was the forward run in "
                 "training mode with the same attributes?)");
    z_tensor = saved_z;
  } else {
    z_tensor = conv_train(g, a, x, w, bias);
  }
  const float* z = z_tensor.data<float>();

  PhaseTimer timer("backward");
  const float* mean = saved_mean.data<float>();
  const float* invstd = saved_invstd.data<float>();
  const float* gamma = scale.data<float>();
  std::vector<double> sum_g(O), sum_gxmu(O);
  cpu::bn_act_backward_reduce(dy.data<float>(), y.data<float>(), z, mean,
                              a.relu(), v, sum_g.data(), sum_gxmu.data());
  timer.mark("bn reduce");

  paddle::Tensor dscale = host_empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor dshift = host_empty({O}, paddle::DataType::FLOAT32, place);
  for (int64_t c = 0; c < O; ++c) {
    dshift.data<float>()[c] = static_cast<float>(sum_g[c]);
    dscale.data<float>()[c] = static_cast<float>(sum_gxmu[c] * invstd[c]);
  }
  std::vector<float> k1(O), k2(O), k3(O);
  cpu::bn_backward_coefficients(gamma, invstd, sum_g.data(), sum_gxmu.data(),
                                static_cast<double>(v.count()), a.training, O,
                                k1.data(), k2.data(), k3.data());
  // dz only feeds the convolution backward: with oneDNN it lives in the
  // thread's scratch arena (warm, reused memory) instead of a fresh tensor.
  paddle::Tensor dz_tensor;
  float* dz = nullptr;
#ifdef FASTCONV_WITH_ONEDNN
  if (use_onednn())
    dz = static_cast<float*>(
        onednn::ScratchArena::local().alloc(g.out_numel() * sizeof(float)));
#endif
  if (!dz) {
    dz_tensor = host_empty(g.out_shape(), x.dtype(), place);
    dz = dz_tensor.data<float>();
  }
  paddle::Tensor dres;
  if (residual) dres = host_empty(g.out_shape(), x.dtype(), place);
  cpu::bn_act_backward_apply(dy.data<float>(), y.data<float>(), z, mean,
                             k1.data(), k2.data(), k3.data(), a.relu(), v,
                             dz, residual ? dres.data<float>() : nullptr);
  timer.mark("bn apply (dz)");

  // With batch statistics the conv bias gradient is exactly zero: BN
  // subtracts the batch mean, so sum(dz) = 0 in exact arithmetic and a
  // computed sum is only rounding noise (magnified when the channel's
  // variance is small). Only eval-mode (running statistics) sums it.
  const bool bias_grad = bias && !a.training;
  paddle::Tensor dbias;
  if (bias)
    dbias = bias_grad ? host_empty({O}, x.dtype(), place)
                      : paddle::full({O}, 0, x.dtype(), place);
#ifdef FASTCONV_WITH_ONEDNN
  if (use_onednn()) {
    paddle::Tensor dx = a.need_dx
                            ? host_empty(x.shape(), x.dtype(), place)
                            : paddle::full(x.shape(), 0, x.dtype(), place);
    paddle::Tensor dw = host_empty(w.shape(), w.dtype(), place);
    dnnl::stream s = onednn::make_stream();
    auto plan = onednn::ConvBackwardPlan::get(g, bias_grad);
    timer.mark("alloc dx dw");
    plan->execute(x.data<float>(), w.data<float>(), dz,
                  a.need_dx ? dx.data<float>() : nullptr, dw.data<float>(),
                  bias_grad ? dbias.data<float>() : nullptr, s);
    timer.mark("conv backward");
    return {dx, dw, dbias, dscale, dshift, dres};
  }
#endif
  paddle::Tensor dx, dw;
  paddle::experimental::conv2d_grad(x, w, dz_tensor, a.strides, paddings4(g),
                                    "EXPLICIT", a.dilations, a.groups,
                                    a.data_format, &dx, &dw);
  if (bias_grad) {
    std::vector<double> sums(O);
    cpu::channel_sum(dz, v, sums.data());
    for (int64_t c = 0; c < O; ++c)
      dbias.data<float>()[c] = static_cast<float>(sums[c]);
  }
  return {dx, dw, dbias, dscale, dshift, dres};
}

// The entry points: oneDNN failures become Paddle errors (see run_guarded).
std::vector<paddle::Tensor> conv_bn_act_forward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_conv_sizes(g, kConvBnActOp);
  return run_guarded<ForeignError>(kConvBnActOp, "geometry " + g.key(), [&] {
    return conv_bn_act_forward_cpu_impl(x, w, bias, scale, shift, running_mean,
                                        running_var, residual, g, a);
  });
}

std::vector<paddle::Tensor> conv_bn_act_backward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_conv_sizes(g, kConvBnActOp);
  return run_guarded<ForeignError>(
      kConvBnActOp, "the backward of geometry " + g.key(), [&] {
        return conv_bn_act_backward_cpu_impl(x, w, bias, scale, residual, y,
                                             saved_z, saved_mean, saved_invstd,
                                             dy, g, a);
      });
}

}  // namespace fastconv
