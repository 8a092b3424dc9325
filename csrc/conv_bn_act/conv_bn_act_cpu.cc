// CPU engine of fastconv_conv_bn_act: oneDNN convolution + our BN kernels.
//
// training: z = conv(x, W) + b         (oneDNN, forward_training)
//           mean/var = stats(z); y = act(BN(z) + residual)   (one pass each)
// eval:     y = act(conv(x, W') + b' + residual)  (one oneDNN primitive with
//           bias, sum and ReLU post-ops; W', b' = BN folded into the conv,
//           cached in oneDNN's layout and rebuilt when any source changed)
// backward: one reduction pass, one pass producing dz (and dresidual), then
//           oneDNN backward data and weights.
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>
#include <vector>

#include "common/check.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "conv_bn_act/conv_bn_act.h"
#include "conv_bn_act/folded_weights.h"
#include "onednn/conv_onednn.h"

namespace fastconv {
namespace {

cpu::ChannelView out_view(const ConvGeometry& g) {
  return g.channels_last ? cpu::ChannelView{g.N * g.OH * g.OW, g.O, 1}
                         : cpu::ChannelView{g.N, g.O, g.OH * g.OW};
}

void check_cpu_dtype(const paddle::Tensor& x) {
  FC_CHECK_ARG(x.dtype() == paddle::DataType::FLOAT32, kConvBnActOp, "x",
               "on CPU must be float32 (float16/bfloat16 run on GPU only), "
               "got ", x.dtype());
}

const float* opt_data(const OptTensor& t) {
  return t ? t->data<float>() : nullptr;
}

// z = conv(x, W) + bias, training flavour (weights change every step, so they
// are reordered per call into the thread's scratch arena).
void conv_train(const ConvGeometry& g, const paddle::Tensor& x,
                const paddle::Tensor& w, const OptTensor& bias, float* z,
                dnnl::stream& s) {
  onednn::ConvFwdOptions o;
  o.with_bias = static_cast<bool>(bias);
  auto plan = onednn::ConvForwardPlan::get(g, o);
  void* wbuf = onednn::ScratchArena::local().alloc(plan->weights_desc().get_size());
  plan->prepare_weights(w.data<float>(), wbuf, s);
  plan->execute(x.data<float>(), wbuf, opt_data(bias), nullptr, z, s);
}

}  // namespace

std::vector<paddle::Tensor> conv_bn_act_forward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    paddle::Tensor& running_mean, paddle::Tensor& running_var,
    const OptTensor& residual, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_dtype(x);
  onednn::ScratchScope scope;
  dnnl::stream s = onednn::make_stream();
  const auto place = x.place();
  const int64_t O = g.O;
  paddle::Tensor y = paddle::empty(g.out_shape(), x.dtype(), place);
  paddle::Tensor save_mean = paddle::empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor save_invstd =
      paddle::empty({O}, paddle::DataType::FLOAT32, place);
  float* sm = save_mean.data<float>();
  float* si = save_invstd.data<float>();
  const float* gamma = scale.data<float>();
  const float* beta = shift.data<float>();
  float* rm = running_mean.data<float>();
  float* rv = running_var.data<float>();

  if (!a.training) {
    auto folded = get_folded_weights(g, w, bias, scale, shift, running_mean,
                                     running_var, a.epsilon,
                                     static_cast<bool>(residual), a.relu(), s);
    folded->plan->execute(x.data<float>(), folded->weights(),
                          folded->bias.data(), opt_data(residual),
                          y.data<float>(), s);
    for (int64_t c = 0; c < O; ++c) {
      sm[c] = rm[c];
      si[c] = 1.f / std::sqrt(rv[c] + a.epsilon);
    }
    paddle::Tensor no_z = paddle::empty({0}, x.dtype(), place);
    return {y, no_z, save_mean, save_invstd};
  }

  paddle::Tensor z = paddle::empty(g.out_shape(), x.dtype(), place);
  conv_train(g, x, w, bias, z.data<float>(), s);
  const cpu::ChannelView v = out_view(g);
  std::vector<float> var(O), ca(O), cb(O);
  cpu::channel_stats(z.data<float>(), v, sm, var.data());
  const float m = a.momentum;
  for (int64_t c = 0; c < O; ++c) {
    si[c] = 1.f / std::sqrt(var[c] + a.epsilon);
    ca[c] = gamma[c] * si[c];
    cb[c] = beta[c] - sm[c] * ca[c];
    // paddle.nn.BatchNorm2D: running = momentum * running + (1 - momentum) *
    // batch, with the biased batch variance.
    rm[c] = m * rm[c] + (1.f - m) * sm[c];
    rv[c] = m * rv[c] + (1.f - m) * var[c];
  }
  cpu::bn_act_forward(z.data<float>(), opt_data(residual), ca.data(), cb.data(),
                      a.relu(), y.data<float>(), v);
  return {y, z, save_mean, save_invstd};
}

std::vector<paddle::Tensor> conv_bn_act_backward_cpu(
    const paddle::Tensor& x, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const OptTensor& residual,
    const paddle::Tensor& y, const paddle::Tensor& saved_z,
    const paddle::Tensor& saved_mean, const paddle::Tensor& saved_invstd,
    const paddle::Tensor& dy, const ConvGeometry& g, const ConvBnActAttrs& a) {
  check_cpu_dtype(x);
  onednn::ScratchScope scope;
  dnnl::stream s = onednn::make_stream();
  const auto place = x.place();
  const int64_t O = g.O;
  const cpu::ChannelView v = out_view(g);

  // Eval-mode backward (frozen BN statistics): z was not kept, recompute it.
  const float* z = nullptr;
  std::vector<float> z_recomputed;
  if (a.training) {
    FC_CHECK_ARG(saved_z.shape() == g.out_shape(), kConvBnActOp, "SavedZ",
                 "does not match the output shape (was the forward run in "
                 "training mode with the same attributes?)");
    z = saved_z.data<float>();
  } else {
    z_recomputed.resize(g.out_numel());
    conv_train(g, x, w, bias, z_recomputed.data(), s);
    z = z_recomputed.data();
  }

  const float* mean = saved_mean.data<float>();
  const float* invstd = saved_invstd.data<float>();
  const float* gamma = scale.data<float>();
  std::vector<double> sum_g(O), sum_gxmu(O);
  cpu::bn_act_backward_reduce(dy.data<float>(), y.data<float>(), z, mean,
                              a.relu(), v, sum_g.data(), sum_gxmu.data());

  paddle::Tensor dscale = paddle::empty({O}, paddle::DataType::FLOAT32, place);
  paddle::Tensor dshift = paddle::empty({O}, paddle::DataType::FLOAT32, place);
  std::vector<float> k1(O), k2(O), k3(O);
  const double M = static_cast<double>(v.count());
  for (int64_t c = 0; c < O; ++c) {
    const double is = invstd[c];
    dshift.data<float>()[c] = static_cast<float>(sum_g[c]);
    dscale.data<float>()[c] = static_cast<float>(sum_gxmu[c] * is);
    k1[c] = static_cast<float>(gamma[c] * is);
    if (a.training) {
      k2[c] = static_cast<float>(-gamma[c] * is * is * is * sum_gxmu[c] / M);
      k3[c] = static_cast<float>(-gamma[c] * is * sum_g[c] / M);
    } else {
      k2[c] = k3[c] = 0.f;
    }
  }
  paddle::Tensor dz = paddle::empty(g.out_shape(), x.dtype(), place);
  paddle::Tensor dres;
  if (residual) dres = paddle::empty(g.out_shape(), x.dtype(), place);
  cpu::bn_act_backward_apply(dy.data<float>(), y.data<float>(), z, mean,
                             k1.data(), k2.data(), k3.data(), a.relu(), v,
                             dz.data<float>(),
                             residual ? dres.data<float>() : nullptr);

  paddle::Tensor dx = paddle::empty(x.shape(), x.dtype(), place);
  paddle::Tensor dw = paddle::empty(w.shape(), w.dtype(), place);
  paddle::Tensor dbias;
  if (bias) dbias = paddle::empty({O}, x.dtype(), place);
  auto plan = onednn::ConvBackwardPlan::get(g, static_cast<bool>(bias));
  plan->execute(x.data<float>(), w.data<float>(), dz.data<float>(),
                dx.data<float>(), dw.data<float>(),
                bias ? dbias.data<float>() : nullptr, s);
  return {dx, dw, dbias, dscale, dshift, dres};
}

}  // namespace fastconv
