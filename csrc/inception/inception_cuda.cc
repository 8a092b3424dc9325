// CUDA engine of fastconv_inception: convolutions through Paddle's conv2d /
// conv2d_grad (cuDNN), the 3x3 max pool through Paddle's pool2d /
// pool2d_grad (the kernels stock MaxPool2D runs, so ties route the gradient
// as stock does), BN statistics / normalize / ReLU and their backward in our
// kernels (bn_act_cuda.h), which read and write channel slices in place.
//
// forward:  one 1x1 convolution over the stacked filters of stages 0/1/3
//           reads x once; the normalize kernel writes stage 0's slice of its
//           output straight into the output's first channel slice and the
//           reduce slices into the KxK convolutions' inputs; the KxK and
//           projection stages' normalize kernels write their slices of the
//           output. No concat pass.
// backward: the same in reverse, as the CPU engine (inception_cpu.cc): the
//           final stages' BN/ReLU backward reads its slice of dOut (stage 0
//           writes its slice of the merged convolution's dz), the KxK and
//           projection convolutions' backward, the reduce stages' BN/ReLU
//           backward into the merged dz, one backward of the merged
//           convolution, plus the pool's gradient.
#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "common/check.h"
#include "common/cuda_checks.h"
#include "common/paddle_conv_api.h"
#include "conv_bn_act/bn_act_cuda.h"
#include "inception/inception.h"

namespace fastconv {
namespace {

namespace pe = paddle::experimental;
using cuda::SliceStrides;
using paddle::Tensor;

constexpr std::array<int, 3> kMergedStages = {kBranch1, kReduce3, kReduce5};

// Channels [c0, ...) of an activation with `total` channels: its first
// element and its row stride (SliceStrides), as the launchers take them.
struct Slice {
  void* p;
  int64_t ld;  // 0: dense
};

struct Engine {
  Engine(const InceptionGeometry& geometry, const InceptionAttrs& attrs,
         const Tensor& x)
      : g(geometry),
        a(attrs),
        dt(cuda_dtype(x, kInceptionOp, "x")),
        place(x.place()),
        stream(cuda_stream_of(x)) {}

  const InceptionGeometry& g;
  const InceptionAttrs& a;
  const cuda::DType dt;
  const paddle::Place place;
  const cudaStream_t stream;

  void check(cudaError_t err, const char* what) const {
    check_launch(err, kInceptionOp, what);
  }
  cuda::ChannelView view(int64_t channels) const {
    return channel_view(g.N, g.H, g.W, channels, g.nhwc);
  }
  Slice slice(const Tensor& t, int64_t total, int64_t c0) const {
    const int64_t plane = g.nhwc ? 1 : g.H * g.W;
    char* base = static_cast<char*>(const_cast<void*>(t.data()));
    return {base + c0 * plane * static_cast<int64_t>(phi::SizeOf(t.dtype())),
            total};
  }
  Slice dense(const Tensor& t) const {
    return {const_cast<void*>(t.data()), 0};
  }
  Tensor activation(int64_t channels, paddle::DataType dtype) const {
    return paddle::empty(g.activation_shape(channels), dtype, place);
  }
  Tensor f32(int64_t n, float value) const {
    return pe::full({n}, value, paddle::DataType::FLOAT32, place);
  }
  Tensor f32_empty(int64_t n) const {
    return paddle::empty({n}, paddle::DataType::FLOAT32, place);
  }
  Tensor workspace() const {
    int64_t most = 1;
    for (int s = 0; s < kStages; ++s)
      most = std::max<int64_t>(
          most, static_cast<int64_t>(cuda::bn_workspace_bytes(view(g.C[s]))));
    return paddle::empty({most}, paddle::DataType::UINT8, place);
  }
  Tensor conv(const Tensor& in, const Tensor& w,
              const ConvGeometry& cg) const {
    return pe::conv2d(in, w, {1, 1}, paddings4(cg), "EXPLICIT", {1, 1}, 1,
                      a.data_format);
  }
  void conv_grad(const Tensor& in, const Tensor& w, const Tensor& dz,
                 const ConvGeometry& cg, Tensor* din, Tensor* dw) const {
    pe::conv2d_grad(in, w, dz, {1, 1}, paddings4(cg), "EXPLICIT", {1, 1}, 1,
                    a.data_format, din, dw);
  }
  // Stock MaxPool2D(3, stride=1, padding=1).
  Tensor pool(const Tensor& x) const {
    return pe::pool2d(x, {3, 3}, PoolInts{1, 1}, PoolInts{1, 1}, false, true,
                      a.data_format, "max", false, false, "EXPLICIT");
  }
  Tensor pool_grad(const Tensor& x, const Tensor& pooled,
                   const Tensor& dpooled) const {
    Tensor dx;
    pe::pool2d_grad(x, pooled, dpooled, {3, 3}, PoolInts{1, 1},
                    PoolInts{1, 1}, false, true, a.data_format, "max", false,
                    false, "EXPLICIT", &dx);
    return dx;
  }
  // z += bias[c] in place (bias: float32 [channels]).
  void add_bias(const Tensor& z, const Tensor& bias, int64_t channels) const {
    check(cuda::launch_bias_act_forward(dt, z.data(), nullptr,
                                        bias.data<float>(), false,
                                        const_cast<void*>(z.data()),
                                        view(channels), stream),
          "bias_act_forward");
  }
};

Tensor stats_slice(const Tensor& stats, int64_t begin, int64_t channels) {
  return pe::slice(stats, {0}, {begin}, {begin + channels}, {}, {});
}

// The whole forward: fills out, the tensors backward needs (kept) and the
// per-stage statistics used. `saved_stats` (eval-mode backward's recompute):
// use those statistics instead of the running ones.
struct Forward {
  Forward(const Engine& engine, const TensorList& weights,
          const TensorList& biases, const TensorList& bn_scale,
          const TensorList& bn_shift)
      : e(engine), w(weights), bias(biases), scale(bn_scale), shift(bn_shift) {}

  const Engine& e;
  const TensorList &w, &bias, &scale, &shift;
  TensorList* running_mean = nullptr;
  TensorList* running_var = nullptr;
  const Tensor* saved_stats = nullptr;

  std::array<Tensor, kStages> mean, invstd;

  // y = act(BN(z)) of stage st; records the statistics used and, training,
  // updates the running ones.
  void stage(int st, Slice z, Slice y, const Tensor& ws) {
    const InceptionGeometry& g = e.g;
    const int64_t C = g.C[st];
    const bool relu = stage_relu(e.a, st);
    const cuda::ChannelView v = e.view(C);
    if (!g.bn[st]) {
      // Recorded as mean 0 and 1/std 1 (backward reads them so); y =
      // act(z + 0), the conv bias being in z already.
      mean[st] = e.f32(C, 0.f);
      invstd[st] = e.f32(C, 1.f);
      e.check(cuda::launch_bias_act_forward(e.dt, z.p, nullptr,
                                            mean[st].data<float>(), relu, y.p,
                                            v, e.stream, lds(z, y)),
              "bias_act_forward");
      return;
    }
    Tensor ca, cb;
    if (e.a.training) {  // (all four written by the statistics kernel)
      mean[st] = e.f32_empty(C);
      invstd[st] = e.f32_empty(C);
      ca = e.f32_empty(C);
      cb = e.f32_empty(C);
      e.check(cuda::launch_bn_stats(
                  e.dt, z.p, v, scale[st].data<float>(),
                  shift[st].data<float>(),
                  (*running_mean)[st].data<float>(),
                  (*running_var)[st].data<float>(), e.a.momentum,
                  e.a.epsilon, mean[st].data<float>(),
                  invstd[st].data<float>(), ca.data<float>(),
                  cb.data<float>(), const_cast<void*>(ws.data()), e.stream,
                  lds(z, Slice{nullptr, 0})),
              "bn_stats");
    } else {
      if (saved_stats) {
        mean[st] = stats_slice(*saved_stats, g.stats_offset(st), C);
        invstd[st] = stats_slice(*saved_stats,
                                 g.stats_size() / 2 + g.stats_offset(st), C);
      } else {
        mean[st] = pe::assign((*running_mean)[st]);
        invstd[st] = pe::rsqrt(
            pe::scale((*running_var)[st], 1.0f, e.a.epsilon, true));
      }
      ca = pe::multiply(scale[st], invstd[st]);
      cb = pe::subtract(shift[st], pe::multiply(mean[st], ca));
    }
    e.check(cuda::launch_bn_act_forward(e.dt, z.p, nullptr, ca.data<float>(),
                                        cb.data<float>(), relu, y.p, v,
                                        e.stream, lds(z, y)),
            "bn_act_forward");
  }

  static SliceStrides lds(Slice z, Slice y) {
    SliceStrides s;
    s.z = z.ld;
    s.y = y.ld;
    return s;
  }

  // Returns {out, kept[kKeptCount]} (all kept when keep_all: the eval-mode
  // backward's recompute).
  TensorList run(const Tensor& x, bool keep_all) {
    const InceptionGeometry& g = e.g;
    const int64_t Cm = g.merged_channels(), Co = g.out_channels();
    const Tensor ws = e.workspace();
    Tensor out = e.activation(Co, x.dtype());

    Tensor merged = e.conv(x, pe::concat({w[0], w[1], w[3]}, 0), g.merged());
    if (g.bias[kBranch1] || g.bias[kReduce3] || g.bias[kReduce5]) {
      std::vector<Tensor> parts;
      for (int st : kMergedStages)
        parts.push_back(g.bias[st] ? float32_of(bias[st])
                                   : e.f32(g.C[st], 0.f));
      e.add_bias(merged, pe::concat(parts, 0), Cm);
    }
    Tensor reduce3 = e.activation(g.C[kReduce3], x.dtype());
    Tensor reduce5 = e.activation(g.C[kReduce5], x.dtype());
    stage(kBranch1, e.slice(merged, Cm, 0),
          e.slice(out, Co, g.out_offset(kBranch1)), ws);
    stage(kReduce3, e.slice(merged, Cm, g.merged_offset(kReduce3)),
          e.dense(reduce3), ws);
    stage(kReduce5, e.slice(merged, Cm, g.merged_offset(kReduce5)),
          e.dense(reduce5), ws);

    const Tensor inputs[3] = {reduce3, reduce5, e.pool(x)};
    std::array<Tensor, kStages> z;
    int k = 0;
    for (int st : {kConv3, kConv5, kPoolProj}) {
      z[st] = e.conv(inputs[k++], w[st], g.stage(st));
      if (g.bias[st]) e.add_bias(z[st], float32_of(bias[st]), g.C[st]);
      stage(st, e.dense(z[st]), e.slice(out, Co, g.out_offset(st)), ws);
    }

    const Tensor kept_all[kKeptCount] = {merged, reduce3, reduce5,
                                         z[kConv3], z[kConv5], z[kPoolProj]};
    TensorList result{out};
    for (int kk = 0; kk < kKeptCount; ++kk) {
      const bool kept = keep_all || (e.a.training && g.keeps(kk));
      result.push_back(kept ? kept_all[kk]
                            : paddle::empty({1}, x.dtype(), e.place));
    }
    return result;
  }

  Tensor stats() const {
    std::vector<Tensor> parts(mean.begin(), mean.end());
    parts.insert(parts.end(), invstd.begin(), invstd.end());
    return pe::concat(parts, 0);
  }
};

}  // namespace

TensorList inception_forward_cuda(const Tensor& x, const TensorList& w,
                                  const TensorList& bias,
                                  const TensorList& scale,
                                  const TensorList& shift, TensorList& mean,
                                  TensorList& var, const InceptionGeometry& g,
                                  const InceptionAttrs& a) {
  const Engine e(g, a, x);
  Forward f(e, w, bias, scale, shift);
  f.running_mean = &mean;
  f.running_var = &var;
  TensorList result = f.run(x, false);
  result.push_back(f.stats());
  return result;
}

TensorList inception_backward_cuda(const Tensor& x, const TensorList& w,
                                   const TensorList& bias,
                                   const TensorList& scale,
                                   const TensorList& shift,
                                   const Tensor& out_in,
                                   const TensorList& kept_in,
                                   const Tensor& saved_stats,
                                   const Tensor& dout,
                                   const InceptionGeometry& g,
                                   const InceptionAttrs& a) {
  const Engine e(g, a, x);
  const int64_t Cm = g.merged_channels(), Co = g.out_channels();
  Tensor out = out_in;
  TensorList kept = kept_in;
  if (!a.training) {
    // Frozen statistics: nothing was kept; recompute it with the statistics
    // the forward used (same arithmetic, so the same output).
    Forward f(e, w, bias, scale, shift);
    f.saved_stats = &saved_stats;
    TensorList r = f.run(x, true);
    out = r[0];
    kept.assign(r.begin() + 1, r.end());
  }
  const Tensor ws = e.workspace();
  const float* stats = saved_stats.data<float>();
  auto mean_of = [&](int st) { return stats + g.stats_offset(st); };
  auto invstd_of = [&](int st) {
    return stats + g.stats_size() / 2 + g.stats_offset(st);
  };

  TensorList dw(kStages), dbias(kStages), dscale(kStages), dshift(kStages);
  // BN/ReLU backward of stage st: dz from dy, y (the ReLU mask) and z
  // (pre-BN, read with BN only).
  auto stage_bwd = [&](int st, Slice dy, Slice y, Slice z, Slice dz) {
    const int64_t C = g.C[st];
    const bool relu = stage_relu(a, st);
    SliceStrides lds;
    lds.dy = dy.ld;
    lds.y = y.ld;
    lds.z = z.ld;
    lds.dz = dz.ld;
    if (!g.bn[st]) {
      // dz = relu ? dy * (y > 0) : dy: the eval formula gamma * invstd * g
      // with the saved invstd, all ones for stages without BN, as gamma too.
      e.check(cuda::launch_bn_act_backward_apply(
                  e.dt, dy.p, y.p, nullptr, nullptr, invstd_of(st),
                  invstd_of(st), nullptr, nullptr, relu, false, e.view(C),
                  dz.p, nullptr, e.stream, lds),
              "bn_act_backward_apply");
      return;
    }
    dscale[st] = e.f32_empty(C);  // (written by the reduction)
    dshift[st] = e.f32_empty(C);
    e.check(cuda::launch_bn_act_backward_reduce(
                e.dt, dy.p, y.p, z.p, mean_of(st), invstd_of(st), relu,
                e.view(C), dscale[st].data<float>(), dshift[st].data<float>(),
                const_cast<void*>(ws.data()), e.stream, lds),
            "bn_act_backward_reduce");
    e.check(cuda::launch_bn_act_backward_apply(
                e.dt, dy.p, y.p, z.p, mean_of(st), invstd_of(st),
                scale[st].data<float>(), dscale[st].data<float>(),
                dshift[st].data<float>(), relu, a.training, e.view(C), dz.p,
                nullptr, e.stream, lds),
            "bn_act_backward_apply");
  };
  const Slice no_z{nullptr, 0};
  const Tensor& merged = kept[kKeptMerged];
  const bool have_merged = !a.training || g.keeps(kKeptMerged);

  // Final stages: their slices of dOut.
  Tensor dmerged = e.activation(Cm, x.dtype());
  stage_bwd(kBranch1, e.slice(dout, Co, 0), e.slice(out, Co, 0),
            have_merged ? e.slice(merged, Cm, 0) : no_z,
            e.slice(dmerged, Cm, 0));
  std::array<Tensor, kStages> dz;
  for (int st : {kConv3, kConv5, kPoolProj}) {
    dz[st] = e.activation(g.C[st], x.dtype());
    const int64_t off = g.out_offset(st);
    const Tensor& z = kept[kept_z(st)];
    stage_bwd(st, e.slice(dout, Co, off), e.slice(out, Co, off),
              g.bn[st] ? e.dense(z) : no_z, e.dense(dz[st]));
  }
  // KxK convolutions, then the reduce stages into the merged dz.
  for (int st : {kConv3, kConv5}) {
    const int red = st - 1;
    const Tensor& in = kept[st == kConv3 ? kKeptReduce3 : kKeptReduce5];
    Tensor din;
    e.conv_grad(in, w[st], dz[st], g.stage(st), &din, &dw[st]);
    stage_bwd(red, e.dense(din), e.dense(in),
              have_merged ? e.slice(merged, Cm, g.merged_offset(red)) : no_z,
              e.slice(dmerged, Cm, g.merged_offset(red)));
  }
  // Pool projection (the pool is recomputed: cheaper than keeping it).
  const Tensor pooled = e.pool(x);
  Tensor dpooled;
  e.conv_grad(pooled, w[kPoolProj], dz[kPoolProj], g.stage(kPoolProj),
              &dpooled, &dw[kPoolProj]);
  // The merged 1x1 convolution; its filter gradient splits into three.
  Tensor dx, dwm;
  e.conv_grad(x, pe::concat({w[0], w[1], w[3]}, 0), dmerged, g.merged(), &dx,
              &dwm);
  for (int st : kMergedStages)
    dw[st] = pe::slice(dwm, {0}, {g.merged_offset(st)},
                       {g.merged_offset(st) + g.C[st]}, {}, {});
  dx = pe::add(dx, e.pool_grad(x, pooled, dpooled));

  // Conv biases: with batch statistics the gradient is exactly 0 (BN removes
  // the mean, see conv_bn_act_cuda.cc); otherwise the sum of dz.
  const std::vector<int64_t> axes = g.nhwc ? std::vector<int64_t>{0, 1, 2}
                                           : std::vector<int64_t>{0, 2, 3};
  Tensor dmerged_sum;
  for (int st = 0; st < kStages; ++st) {
    if (!g.bias[st]) continue;
    if (g.bn[st] && a.training) {
      dbias[st] = pe::full({g.C[st]}, 0, bias[st].dtype(), e.place);
      continue;
    }
    Tensor sums;
    if (st == kBranch1 || st == kReduce3 || st == kReduce5) {
      if (!dmerged_sum.initialized())
        dmerged_sum = pe::sum(dmerged, axes, paddle::DataType::FLOAT32, false);
      const int64_t off = g.merged_offset(st);
      sums = pe::slice(dmerged_sum, {0}, {off}, {off + g.C[st]}, {}, {});
    } else {
      sums = pe::sum(dz[st], axes, paddle::DataType::FLOAT32, false);
    }
    dbias[st] = pe::cast(sums, bias[st].dtype());
  }

  TensorList grads{dx};
  for (const TensorList* l : {&dw, &dbias, &dscale, &dshift})
    grads.insert(grads.end(), l->begin(), l->end());
  return grads;
}

}  // namespace fastconv
