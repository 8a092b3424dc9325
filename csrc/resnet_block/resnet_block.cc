// The fused ResNet block: its stages chained on the Conv+BN+act engines
// (CPU or CUDA, by the tensors' device), in the layout the engine runs
// fastest. See resnet_block.h.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "common/phase_timer.h"
#include "common/tensor_view.h"
#include "conv_bn_act/conv_bn_act.h"
#include "conv_bn_act/cpu_conv_engine.h"
#include "resnet_block/resnet_block.h"
#ifdef FASTCONV_WITH_ONEDNN
#include "onednn/layout_reorder.h"
#endif

namespace fastconv {

namespace {

using Tensor = paddle::Tensor;

// NCHW blocks in eval on CPU run their stages in NHWC when oneDNN runs the
// convolutions: its NHWC kernels take plain activations, NCHW ones reorder to
// a blocked layout around every convolution. Measured on the project's
// machine, bottleneck 256-64-256 at 56x56, batch 8: eval 30.7 ms against
// 40.1 ms per stage in NCHW. Not in training: there the 1x1 convolutions run
// on NCHW directly (oneDNN's GEMM path) and the extra reorders of x, the
// output and their gradients cost more than they save (160 ms against 94 ms
// for the training step).
bool nhwc_inside(const Tensor& x, const ResnetBlockGeometry& g,
                 const ResnetBlockAttrs& a) {
#ifdef FASTCONV_WITH_ONEDNN
  return !a.training && x.is_cpu() && !g.nhwc &&
         x.dtype() == paddle::DataType::FLOAT32 &&
         cpu_conv_engine() == CpuConvEngine::kOneDNN;
#else
  return false;
#endif
}

// t (4-D, logical dims N, C, H, W) copied into the other layout.
Tensor relayout(const Tensor& t, bool to_nhwc) {
#ifdef FASTCONV_WITH_ONEDNN
  const std::vector<int64_t> s = t.shape();
  const int64_t N = s[0], C = to_nhwc ? s[1] : s[3], H = to_nhwc ? s[2] : s[1],
                W = to_nhwc ? s[3] : s[2];
  const std::vector<int64_t> shape = to_nhwc ? std::vector<int64_t>{N, H, W, C}
                                             : std::vector<int64_t>{N, C, H, W};
  Tensor r = host_empty(shape, t.dtype(), t.place());
  onednn::reorder_layout(t.data<float>(), r.data<float>(), N, C, H, W, to_nhwc);
  return r;
#else
  PD_THROW(kResnetBlockOp, ": internal error: layout change without oneDNN");
#endif
}

std::vector<Tensor> stage_forward(const Tensor& in, const Tensor& w,
                                  const Tensor& scale, const Tensor& shift,
                                  Tensor& mean, Tensor& var,
                                  const OptTensor& residual,
                                  const ConvGeometry& g,
                                  const ConvBnActAttrs& a) {
  if (in.is_cpu())
    return conv_bn_act_forward_cpu(in, w, paddle::none, scale, shift, mean,
                                   var, residual, g, a);
#ifdef PADDLE_WITH_CUDA
  if (in.is_gpu())
    return conv_bn_act_forward_cuda(in, w, paddle::none, scale, shift, mean,
                                    var, residual, g, a);
#endif
  PD_THROW(kResnetBlockOp, ": argument 'x' is on ", in.place(),
           ", but this build supports CPU",
#ifdef PADDLE_WITH_CUDA
           " and GPU",
#else
           " only (built without CUDA)",
#endif
           " tensors");
}

std::vector<Tensor> stage_backward(const Tensor& in, const Tensor& w,
                                   const Tensor& scale,
                                   const OptTensor& residual, const Tensor& y,
                                   const Tensor& z, const Tensor& mean,
                                   const Tensor& invstd, const Tensor& dy,
                                   const ConvGeometry& g,
                                   const ConvBnActAttrs& a) {
  if (in.is_cpu())
    return conv_bn_act_backward_cpu(in, w, paddle::none, scale, residual, y, z,
                                    mean, invstd, dy, g, a);
#ifdef PADDLE_WITH_CUDA
  if (in.is_gpu())
    return conv_bn_act_backward_cuda(in, w, paddle::none, scale, residual, y,
                                     z, mean, invstd, dy, g, a);
#endif
  PD_THROW(kResnetBlockOp, "_grad: unsupported device ", in.place());
}

// a += b (same shape and dtype).
void accumulate(Tensor& a, const Tensor& b) {
  if (a.is_cpu() && a.dtype() == paddle::DataType::FLOAT32) {
    float* pa = a.data<float>();
    const float* pb = b.data<float>();
    const int64_t n = a.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] += pb[i];
    return;
  }
  a = paddle::experimental::add(a, b);
}

}  // namespace

TensorList resnet_block_forward(const Tensor& x, const TensorList& w,
                                const TensorList& scale,
                                const TensorList& shift, TensorList& mean,
                                TensorList& var, const ResnetBlockGeometry& g,
                                const ResnetBlockAttrs& a) {
  const bool inside = nhwc_inside(x, g, a);
  const bool nhwc = g.nhwc || inside;
  const Tensor placeholder = host_empty({1}, x.dtype(), x.place());
  PhaseTimer timer("block forward");
  const Tensor xin = inside ? relayout(x, true) : x;
  timer.mark("x to NHWC");

  std::vector<Tensor> res[kBlockSlots];  // each stage's {y, z, mean, invstd}
  auto run = [&](int s, const Tensor& in, const OptTensor& residual,
                 bool relu) {
    res[s] = stage_forward(in, w[s], scale[s], shift[s], mean[s], var[s],
                           residual, g.in_layout(s, inside),
                           a.stage(s, relu, nhwc));
    timer.mark(kBlockSlotNames[s]);
  };
  run(kConv1, xin, paddle::none, true);
  if (g.last == kConv3) run(kConv2, res[kConv1][0], paddle::none, true);
  Tensor shortcut = xin;
  if (g.present[kDownsample]) {
    run(kDownsample, xin, paddle::none, false);
    shortcut = res[kDownsample][0];
  }
  run(g.last, res[g.last - 1][0], shortcut, true);

  Tensor out = inside ? relayout(res[g.last][0], false) : res[g.last][0];
  timer.mark("out to NCHW");

  TensorList r{out, flat_view(res[kConv1][0], kResnetBlockOp, "hidden1"),
               g.last == kConv3
                   ? flat_view(res[kConv2][0], kResnetBlockOp, "hidden2")
                   : placeholder};
  std::vector<Tensor> stats;
  for (int s = 0; s < kBlockSlots; ++s) {
    const bool keep_z = g.present[s] && a.training;
    r.push_back(keep_z ? flat_view(res[s][1], kResnetBlockOp, "z")
                       : placeholder);
    if (g.present[s]) {
      stats.push_back(res[s][2]);
      stats.push_back(res[s][3]);
    }
  }
  stats.push_back(paddle::full({1}, inside ? 1 : 0, paddle::DataType::FLOAT32,
                               x.place()));
  r.push_back(paddle::experimental::concat(stats, 0));
  return r;
}

TensorList resnet_block_backward(const Tensor& x, const TensorList& w,
                                 const TensorList& scale, const Tensor& out,
                                 const Tensor& hidden1, const Tensor& hidden2,
                                 const TensorList& z, const Tensor& saved_stats,
                                 const Tensor& dout,
                                 const ResnetBlockGeometry& g,
                                 const ResnetBlockAttrs& a) {
  const char* op = kResnetBlockOp;
  FC_CHECK_ARG(saved_stats.numel() == g.stats_size(), op, "SavedStats",
               "has ", saved_stats.numel(), " values, expected ",
               g.stats_size(), " (was the forward run with the same inputs?)");
  // The layout the forward ran its stages in (its engine may have been
  // switched since).
  const Tensor flag = saved_stats.slice(g.stats_size() - 1, g.stats_size());
  const bool inside = flag.is_cpu() && flag.data<float>()[0] != 0.f;
  const bool nhwc = g.nhwc || inside;
  PhaseTimer timer("block backward");
  const Tensor xin = inside ? relayout(x, true) : x;
  const Tensor dy = inside ? relayout(dout, true) : dout;
  const Tensor y = inside ? relayout(out, true) : out;
  timer.mark("to NHWC");

  ConvGeometry geo[kBlockSlots];
  Tensor input[kBlockSlots], zs[kBlockSlots];
  for (int s = 0; s < kBlockSlots; ++s) {
    if (!g.present[s]) continue;
    geo[s] = g.in_layout(s, inside);
    zs[s] = a.training ? view_as_shape(z[s], geo[s].out_shape(), op, "z")
                       : z[s];  // eval: the stage recomputes z
  }
  input[kConv1] = xin;
  input[kConv2] = view_as_shape(hidden1, geo[kConv1].out_shape(), op,
                                "hidden1");
  if (g.last == kConv3)
    input[kConv3] = view_as_shape(hidden2, geo[kConv2].out_shape(), op,
                                  "hidden2");
  input[kDownsample] = xin;
  auto mean_of = [&](int s) {
    const int64_t o = g.stats_offset(s);
    return saved_stats.slice(o, o + geo[s].O);
  };
  auto invstd_of = [&](int s) {
    const int64_t o = g.stats_offset(s) + geo[s].O;
    return saved_stats.slice(o, o + geo[s].O);
  };

  TensorList grads(1 + 3 * kBlockSlots);
  auto back = [&](int s, const OptTensor& residual, const Tensor& ys,
                  const Tensor& dys, bool relu) {
    std::vector<Tensor> r = stage_backward(
        input[s], w[s], scale[s], residual, ys, zs[s], mean_of(s),
        invstd_of(s), dys, geo[s], a.stage(s, relu, nhwc));
    grads[1 + s] = r[1];                    // dW
    grads[1 + kBlockSlots + s] = r[3];      // dScale
    grads[1 + 2 * kBlockSlots + s] = r[4];  // dShift
    timer.mark(kBlockSlotNames[s]);
    return r;
  };
  // Last stage: its residual input is the shortcut (only its presence
  // matters to backward, which returns the residual's gradient).
  std::vector<Tensor> r = back(g.last, OptTensor(y), y, dy, true);
  const Tensor dshortcut = r[5];
  Tensor dh = r[0];
  for (int s = g.last - 1; s >= kConv1; --s) {
    // Stage s's output is stage s+1's input, saved as hidden.
    dh = back(s, paddle::none, input[s + 1], dh, true)[0];
  }
  Tensor dxin = dh;
  if (g.present[kDownsample]) {
    // No activation: the stage never reads its output (pass any tensor).
    accumulate(dxin,
               back(kDownsample, paddle::none, dshortcut, dshortcut, false)[0]);
  } else {
    accumulate(dxin, dshortcut);
  }
  grads[0] = inside ? relayout(dxin, false) : dxin;
  timer.mark("dx");
  return grads;
}

}  // namespace fastconv
