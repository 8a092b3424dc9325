// CPU engine of fastconv_inception: oneDNN convolutions + the BN/ReLU kernels
// of conv_bn_act (bn_act_cpu.h), which read and write channel slices.
//
// forward:  one 1x1 convolution over the concatenated filters of stages
//           0/1/3 reads x once; its output's stage-0 slice is normalized
//           straight into the output's first slice, the reduce slices into
//           the inputs of the KxK convolutions, whose epilogues (like the pool
//           projection's) write their slices of the output. No concat pass.
// backward: each final stage's BN/ReLU backward reads its slice of dOut and
//           writes dz (stage 0's into the merged convolution's dz); the KxK
//           and projection convolutions' backward, the reduce stages'
//           BN/ReLU backward, then one backward of the merged convolution;
//           the pool's gradient is added into dX.
// Temporaries live in the thread's scratch arena.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "common/phase_timer.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "conv_bn_act/cpu_conv_engine.h"
#include "inception/inception.h"
#include "max_pool/max_pool.h"
#ifdef FASTCONV_WITH_ONEDNN
#include "onednn/conv_onednn.h"
#include "onednn/weight_cache.h"
#endif

namespace fastconv {

#ifdef FASTCONV_WITH_ONEDNN
namespace {

using cpu::ChannelView;
using cpu::RowStrides;

float* scratch(int64_t floats) {
  return static_cast<float*>(
      onednn::ScratchArena::local().alloc(sizeof(float) * floats));
}

// Rows of an activation: `stride` floats apart (a channel slice of a wider
// tensor, or a dense tensor).
struct Buf {
  float* p;
  int64_t stride;
};

// Everything one call works with.
struct Ctx {
  Ctx(const InceptionGeometry& geometry, const InceptionAttrs& attrs)
      : g(geometry), a(attrs) {}

  const InceptionGeometry& g;
  const InceptionAttrs& a;
  std::vector<const float*> w, bias, gamma, beta;
  std::vector<int64_t> w_numel;
  std::vector<float*> rmean, rvar;
  float* stats = nullptr;  // [2 * sum C]: mean, then 1/std
  // Eval with `stats` already holding the running statistics' mean and 1/std
  // (backward's recompute): use them as they are.
  bool stats_given = false;
  dnnl::stream s = onednn::make_stream();

  int64_t plane() const { return g.nhwc ? 1 : g.H * g.W; }
  // Channels [c0, ...) of a buffer of `total` channels.
  Buf slice(float* base, int64_t total, int64_t c0) const {
    return {base + c0 * plane(), total * plane()};
  }
  Buf dense(float* base, int64_t channels) const {
    return slice(base, channels, 0);
  }
  ChannelView view(int64_t channels) const {
    return g.nhwc ? cpu::view_of_4d(g.N, g.H, g.W, channels, true)
                  : cpu::view_of_4d(g.N, channels, g.H, g.W, false);
  }
  float* mean_of(int s) { return stats + g.stats_offset(s); }
  float* invstd_of(int s) {
    return stats + g.stats_size() / 2 + g.stats_offset(s);
  }

  // The 1x1 filters of stages 0, 1, 3: the merged convolution's parameters,
  // stacked along O (filters are [O, C, 1, 1]).
  std::vector<onednn::WeightPart> merged_parts() const {
    return {part(kBranch1), part(kReduce3), part(kReduce5)};
  }
  const float* merged_weights() const {
    return onednn::plain_weights(merged_parts());
  }
  onednn::WeightPart part(int st) const { return {w[st], w_numel[st]}; }
  float* merged_bias() const {
    if (!g.bias[kBranch1] && !g.bias[kReduce3] && !g.bias[kReduce5])
      return nullptr;
    float* bm = scratch(g.merged_channels());
    for (int s : {kBranch1, kReduce3, kReduce5}) {
      float* at = bm + g.merged_offset(s);
      for (int64_t c = 0; c < g.C[s]; ++c) at[c] = bias[s] ? bias[s][c] : 0.f;
    }
    return bm;
  }
  // The pool works on images of [H, W, C]: NCHW planes are images of C = 1.
  int64_t pool_images() const { return g.nhwc ? g.N : g.N * g.Cin; }
  int64_t pool_channels() const { return g.nhwc ? g.Cin : 1; }
  // P = maxpool3x3/s1/p1(x), in scratch.
  float* pool_forward(const float* x) const {
    float* p = scratch(g.pixels() * g.Cin);
    max_pool3x3s1_forward(x, p, pool_images(), g.H, g.W, pool_channels());
    return p;
  }
  // dx += the pool's backward of dp.
  void pool_backward(const float* x, const float* p, const float* dp,
                     float* dx) const {
    max_pool3x3s1_backward(x, p, dp, dx, pool_images(), g.H, g.W,
                           pool_channels(), true);
  }

  // z = conv(in) + b; `parts` are the filters (three stacked for the merged
  // convolution). Eval takes their oneDNN copy from the weight cache (the
  // Python side registers w[0] of each stage for release); training, whose
  // weights change every step, reorders them per call.
  void conv_forward(const ConvGeometry& cg,
                    const std::vector<onednn::WeightPart>& parts,
                    const float* in, const float* b, float* z) {
    onednn::ConvFwdOptions o;
    o.with_bias = b != nullptr;
    o.inference = !a.training;
    o.allow_own_kernels = !a.training;  // eval: the prepared weights are cached
    auto plan = onednn::ConvForwardPlan::get(cg, o);
    std::shared_ptr<const onednn::PreparedWeights> hold;
    plan->execute(in,
                  onednn::plan_weights(*plan, onednn::ConvForwardPlan::key_of(cg, o),
                                       parts, !a.training, s, &hold),
                  b, nullptr, z, s);
  }

  // y = act(BN(z)) of stage st (z includes the conv bias). Records the
  // statistics used; training updates the running ones.
  void stage_forward(int st, Buf z, Buf y) {
    const int64_t C = g.C[st];
    const ChannelView v = view(C);
    float* mean = mean_of(st);
    float* invstd = invstd_of(st);
    std::vector<float> ca(C, 1.f), cb(C, 0.f);
    if (g.bn[st]) {
      if (a.training) {
        std::vector<float> var(C);
        cpu::channel_stats(z.p, v, mean, var.data(), RowStrides{z.stride});
        const float m = a.momentum;
        for (int64_t c = 0; c < C; ++c) {
          invstd[c] = 1.f / std::sqrt(var[c] + a.epsilon);
          rmean[st][c] = m * rmean[st][c] + (1.f - m) * mean[c];
          rvar[st][c] = m * rvar[st][c] + (1.f - m) * var[c];
        }
      } else if (!stats_given) {
        for (int64_t c = 0; c < C; ++c) {
          mean[c] = rmean[st][c];
          invstd[c] = 1.f / std::sqrt(rvar[st][c] + a.epsilon);
        }
      }
      cpu::bn_affine_coefficients(gamma[st], beta[st], mean, invstd, C,
                                  ca.data(), cb.data());
    } else {
      std::fill(mean, mean + C, 0.f);
      std::fill(invstd, invstd + C, 1.f);
    }
    RowStrides rs;
    rs.z = z.stride;
    rs.y = y.stride;
    cpu::bn_act_forward(z.p, nullptr, ca.data(), cb.data(), stage_relu(a, st),
                        y.p, v, rs);
  }

  // The whole forward. kept[k]: where to keep tensor k (Kept) for backward;
  // null: not kept, use scratch.
  void forward(const float* x, float* out, float* const* kept) {
    const int64_t px = g.pixels(), Cm = g.merged_channels(),
                  Co = g.out_channels();
    auto keep = [&](int k) {
      return kept[k] ? kept[k] : scratch(px * g.kept_channels(k));
    };
    PhaseTimer timer("inception forward");
    float* merged = keep(kKeptMerged);
    conv_forward(g.merged(), merged_parts(), x, merged_bias(), merged);
    timer.mark("merged 1x1 conv");
    float* reduce3 = keep(kKeptReduce3);
    float* reduce5 = keep(kKeptReduce5);
    stage_forward(kBranch1, slice(merged, Cm, 0),
                  slice(out, Co, g.out_offset(kBranch1)));
    stage_forward(kReduce3, slice(merged, Cm, g.merged_offset(kReduce3)),
                  dense(reduce3, g.C[kReduce3]));
    stage_forward(kReduce5, slice(merged, Cm, g.merged_offset(kReduce5)),
                  dense(reduce5, g.C[kReduce5]));
    timer.mark("1x1 epilogues");
    const float* pooled = pool_forward(x);
    timer.mark("max pool");
    const float* input[kStages] = {nullptr, nullptr, reduce3,
                                   nullptr, reduce5, pooled};
    for (int st : {kConv3, kConv5, kPoolProj}) {
      float* z = keep(kept_z(st));
      conv_forward(g.stage(st), {part(st)}, input[st], bias[st], z);
      timer.mark(st == kConv3 ? "3x3 conv" : st == kConv5 ? "5x5 conv" : "proj conv");
      stage_forward(st, dense(z, g.C[st]), slice(out, Co, g.out_offset(st)));
      timer.mark("epilogue");
    }
  }

  // BN/ReLU backward of stage st: dz from dy (its output's gradient), y (its
  // output: the ReLU mask) and z (pre-BN; only read with BN). Writes the
  // parameter gradients given.
  void stage_backward(int st, Buf dy, Buf y, Buf z, Buf dz, float* dscale,
                      float* dshift, float* dbias) {
    const int64_t C = g.C[st];
    const ChannelView v = view(C);
    const bool relu = stage_relu(a, st);
    RowStrides rs;
    rs.dy = dy.stride;
    rs.y = y.stride;
    rs.z = z.stride;
    rs.dz = dz.stride;
    std::vector<float> k1(C, 1.f), k2(C, 0.f), k3(C, 0.f);
    const float* mean = mean_of(st);
    if (g.bn[st]) {
      std::vector<double> sum_g(C), sum_gxmu(C);
      cpu::bn_act_backward_reduce(dy.p, y.p, z.p, mean, relu, v, sum_g.data(),
                                  sum_gxmu.data(), rs);
      const float* invstd = invstd_of(st);
      for (int64_t c = 0; c < C; ++c) {
        dshift[c] = static_cast<float>(sum_g[c]);
        dscale[c] = static_cast<float>(sum_gxmu[c] * invstd[c]);
      }
      cpu::bn_backward_coefficients(gamma[st], invstd, sum_g.data(),
                                    sum_gxmu.data(),
                                    static_cast<double>(v.count()), a.training,
                                    C, k1.data(), k2.data(), k3.data());
    }
    cpu::bn_act_backward_apply(dy.p, y.p, z.p, mean, k1.data(), k2.data(),
                               k3.data(), relu, v, dz.p, nullptr, rs);
    if (!dbias) return;
    if (g.bn[st] && a.training) {
      // Batch statistics remove the mean: the bias gradient is exactly 0
      // (see conv_bn_act_cpu.cc).
      std::fill(dbias, dbias + C, 0.f);
      return;
    }
    std::vector<double> sums(C);
    cpu::channel_sum(dz.p, v, sums.data(), rs);
    for (int64_t c = 0; c < C; ++c) dbias[c] = static_cast<float>(sums[c]);
  }
};

template <typename T>
std::vector<T> data_of(const TensorList& ts, const std::array<bool, kStages>* given) {
  std::vector<T> out(ts.size(), nullptr);
  for (size_t i = 0; i < ts.size(); ++i)
    if (!given || (*given)[i]) out[i] = const_cast<T>(ts[i].data<float>());
  return out;
}

Ctx make_ctx(const InceptionGeometry& g, const InceptionAttrs& a,
             const TensorList& w, const TensorList& bias,
             const TensorList& scale, const TensorList& shift,
             const TensorList* mean, const TensorList* var, float* stats) {
  Ctx c(g, a);
  c.w = data_of<const float*>(w, nullptr);
  for (const paddle::Tensor& t : w) c.w_numel.push_back(t.numel());
  c.bias = data_of<const float*>(bias, &g.bias);
  c.gamma = data_of<const float*>(scale, &g.bn);
  c.beta = data_of<const float*>(shift, &g.bn);
  if (mean) {
    c.rmean = data_of<float*>(*mean, &g.bn);
    c.rvar = data_of<float*>(*var, &g.bn);
  }
  c.stats = stats;
  return c;
}

void check_cpu(const paddle::Tensor& x, const InceptionGeometry& g) {
  FC_CHECK_ARG(x.dtype() == paddle::DataType::FLOAT32, kInceptionOp, "x",
               "on CPU must be float32, got ", x.dtype());
  FC_CHECK_ARG(cpu_conv_engine() == CpuConvEngine::kOneDNN, kInceptionOp,
               "x", "on CPU needs the oneDNN engine; the current CPU "
               "convolution engine is 'paddle' (set_cpu_conv_engine('onednn'))");
  for (const ConvGeometry& cg : {g.merged(), g.stage(kConv3), g.stage(kConv5),
                                 g.stage(kPoolProj)})
    check_cpu_conv_sizes(cg, kInceptionOp);
}

}  // namespace

TensorList inception_forward_cpu(const paddle::Tensor& x, const TensorList& w,
                                 const TensorList& bias,
                                 const TensorList& scale,
                                 const TensorList& shift, TensorList& mean,
                                 TensorList& var, const InceptionGeometry& g,
                                 const InceptionAttrs& a) {
  check_cpu(x, g);
  return run_guarded<dnnl::error>(kInceptionOp, "input " + shape_str(x.shape()), [&] {
    onednn::ScratchScope scope;
    const auto place = x.place();
    paddle::Tensor out = host_empty(g.out_shape(), x.dtype(), place);
    paddle::Tensor stats =
        host_empty({g.stats_size()}, paddle::DataType::FLOAT32, place);
    TensorList result{out};
    float* kept[kKeptCount] = {};
    for (int k = 0; k < kKeptCount; ++k) {
      result.push_back(host_empty(g.kept_shape(k, a.training), x.dtype(), place));
      if (a.training && g.keeps(k)) kept[k] = result.back().data<float>();
    }
    Ctx c = make_ctx(g, a, w, bias, scale, shift, &mean, &var,
                     stats.data<float>());
    c.forward(x.data<float>(), out.data<float>(), kept);
    result.push_back(stats);
    return result;
  });
}

TensorList inception_backward_cpu(
    const paddle::Tensor& x, const TensorList& w, const TensorList& bias,
    const TensorList& scale, const TensorList& shift,
    const paddle::Tensor& out_in,
    const TensorList& kept_in, const paddle::Tensor& saved_stats,
    const paddle::Tensor& dout, const InceptionGeometry& g,
    const InceptionAttrs& a) {
  check_cpu(x, g);
  return run_guarded<dnnl::error>(kInceptionOp, "the backward of input " + shape_str(x.shape()), [&] {
    onednn::ScratchScope scope;
    const auto place = x.place();
    const int64_t px = g.pixels(), Cm = g.merged_channels(),
                  Co = g.out_channels();
    float* kept[kKeptCount] = {};
    float* out = const_cast<float*>(out_in.data<float>());
    Ctx c = make_ctx(g, a, w, bias, scale, shift, nullptr, nullptr,
                     const_cast<float*>(saved_stats.data<float>()));
    c.stats_given = true;
    if (a.training) {
      for (int k = 0; k < kKeptCount; ++k)
        if (g.keeps(k)) kept[k] = const_cast<float*>(kept_in[k].data<float>());
    } else {
      // Frozen statistics: nothing was kept; recompute it (same arithmetic,
      // so the same output).
      for (int k = 0; k < kKeptCount; ++k)
        kept[k] = scratch(px * g.kept_channels(k));
      out = scratch(px * Co);
      c.forward(x.data<float>(), out, kept);
    }

    paddle::Tensor dx = host_empty(x.shape(), x.dtype(), place);
    TensorList dw(kStages), dbias(kStages), dscale(kStages), dshift(kStages);
    for (int st = 0; st < kStages; ++st) {
      dw[st] = host_empty(w[st].shape(), x.dtype(), place);
      if (g.bias[st]) dbias[st] = host_empty({g.C[st]}, x.dtype(), place);
      if (g.bn[st]) {
        dscale[st] = host_empty({g.C[st]}, paddle::DataType::FLOAT32, place);
        dshift[st] = host_empty({g.C[st]}, paddle::DataType::FLOAT32, place);
      }
    }
    auto ptr = [](paddle::Tensor& t) {
      return t.initialized() ? t.data<float>() : nullptr;
    };
    auto stage_bwd = [&](int st, Buf dy, Buf y, Buf z, Buf dz) {
      c.stage_backward(st, dy, y, g.bn[st] ? z : y, dz, ptr(dscale[st]),
                       ptr(dshift[st]), ptr(dbias[st]));
    };
    PhaseTimer timer("inception backward");
    timer.mark(a.training ? "setup" : "recompute forward");
    float* d_out = const_cast<float*>(dout.data<float>());
    float* merged = kept[kKeptMerged];  // null: training kept it not (no BN)
    float* dmerged = scratch(px * Cm);

    // Final stages: their slices of dOut.
    const Buf no_z{nullptr, 0};
    stage_bwd(kBranch1, c.slice(d_out, Co, 0), c.slice(out, Co, 0),
              merged ? c.slice(merged, Cm, 0) : no_z,
              c.slice(dmerged, Cm, 0));
    float* dz[kStages] = {};
    for (int st : {kConv3, kConv5, kPoolProj}) {
      dz[st] = scratch(px * g.C[st]);
      const int64_t off = g.out_offset(st);
      stage_bwd(st, c.slice(d_out, Co, off), c.slice(out, Co, off),
                kept[kept_z(st)] ? c.dense(kept[kept_z(st)], g.C[st]) : no_z,
                c.dense(dz[st], g.C[st]));
    }
    timer.mark("final stages bn/relu bwd");
    // KxK convolutions, then the reduce stages into the merged dz.
    for (int st : {kConv3, kConv5}) {
      const int red = st - 1;
      float* in = kept[st == kConv3 ? kKeptReduce3 : kKeptReduce5];
      float* din = scratch(px * g.C[red]);
      onednn::ConvBackwardPlan::get(g.stage(st), false)
          ->execute(in, c.w[st], dz[st], din, dw[st].data<float>(), nullptr,
                    c.s);
      stage_bwd(red, c.dense(din, g.C[red]), c.dense(in, g.C[red]),
                merged ? c.slice(merged, Cm, g.merged_offset(red)) : no_z,
                c.slice(dmerged, Cm, g.merged_offset(red)));
      timer.mark(st == kConv3 ? "3x3 conv bwd + reduce" : "5x5 conv bwd + reduce");
    }
    // Pool projection (the pool is recomputed: cheaper than keeping it).
    const float* pooled = c.pool_forward(x.data<float>());
    float* dpooled = scratch(px * g.Cin);
    onednn::ConvBackwardPlan::get(g.stage(kPoolProj), false)
        ->execute(pooled, c.w[kPoolProj], dz[kPoolProj], dpooled,
                  dw[kPoolProj].data<float>(), nullptr, c.s);
    timer.mark("pool + proj conv bwd");
    // The merged 1x1 convolution; its filter gradient splits into three.
    float* dwm = scratch(Cm * g.Cin);
    onednn::ConvBackwardPlan::get(g.merged(), false)
        ->execute(x.data<float>(), c.merged_weights(), dmerged,
                  dx.data<float>(), dwm, nullptr, c.s);
    for (int st : {kBranch1, kReduce3, kReduce5})
      std::memcpy(dw[st].data<float>(), dwm + g.merged_offset(st) * g.Cin,
                  sizeof(float) * g.C[st] * g.Cin);
    timer.mark("merged 1x1 conv bwd");
    c.pool_backward(x.data<float>(), pooled, dpooled, dx.data<float>());
    timer.mark("pool bwd");

    TensorList grads{dx};
    for (const TensorList* l : {&dw, &dbias, &dscale, &dshift})
      grads.insert(grads.end(), l->begin(), l->end());
    return grads;
  });
}

#else  // no oneDNN in this build

TensorList inception_forward_cpu(const paddle::Tensor&, const TensorList&,
                                 const TensorList&, const TensorList&,
                                 const TensorList&, TensorList&, TensorList&,
                                 const InceptionGeometry&,
                                 const InceptionAttrs&) {
  PD_THROW(kInceptionOp, ": argument 'x' is a CPU tensor, but this build has "
           "no oneDNN engine (the CPU Inception op needs it)");
}

TensorList inception_backward_cpu(
    const paddle::Tensor&, const TensorList&, const TensorList&,
    const TensorList&, const TensorList&, const paddle::Tensor&,
    const TensorList&, const paddle::Tensor&, const paddle::Tensor&,
    const InceptionGeometry&, const InceptionAttrs&) {
  PD_THROW(kInceptionOp, ": this build has no oneDNN engine");
}

#endif

}  // namespace fastconv
