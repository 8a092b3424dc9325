// The fused ResNet block: its stages chained on the Conv+BN+act engines
// (CPU or CUDA, by the tensors' device), in the layout the engine runs
// fastest. See resnet_block.h.
#include <string>
#include <vector>

#include "common/check.h"
#include "common/host_pool.h"
#include "common/phase_timer.h"
#include "conv_bn_act/conv_bn_act.h"
#include "conv_bn_act/cpu_conv_engine.h"
#include "layout/relayout.h"
#include "resnet_block/resnet_block.h"

namespace fastconv {

namespace {

using Tensor = paddle::Tensor;

// NCHW blocks in eval on CPU run their stages in NHWC when oneDNN runs the
// convolutions (one reorder of x in and of the output back), except
// ungrouped bottlenecks whose convolutions all have stride 1 on planes of
// 14x14 or more: their 1x1 convolutions run on NCHW directly (oneDNN's GEMM
// path) and only the 3x3 one reorders its narrower activations (grouped
// ResNeXt-style 3x3 convolutions were not measured). Measured on the
// project's machine (AMD EPYC, 2 threads), eval, batch 8, stages in NHWC
// against NCHW:
//   256-64-256 at 56x56 28.6 / 20.0 ms, 64-64-256 (stride-1 downsample) at
//   56x56 26.6 / 21.6, 512-128-512 at 28x28 23.6 / 20.1, 1024-256-1024 at
//   14x14 20.0 / 17.7, but 2048-512-2048 at 7x7 18.0 / 20.4 (GEMMs over 49
//   values per plane are slow); BasicBlocks (3x3 only) 18.8 / 20.8; stride-2
//   blocks even. Not in training: there the stages keep NCHW (the extra
//   reorders of x, the output and their gradients cost more than they save:
//   160 ms against 94 ms for the 256-64-256 training step, measured on an
//   Intel Xeon VM).
bool stays_nchw_in_eval(const ResnetBlockGeometry& g) {
  if (g.last != kConv3) return false;
  for (int s = 0; s < kBlockSlots; ++s)
    if (g.present[s] && (g.conv[s].stride_h != 1 || g.conv[s].stride_w != 1 ||
                         g.conv[s].groups != 1))
      return false;
  const ConvGeometry& out = g.conv[g.last];
  return out.OH * out.OW >= 14 * 14;
}

bool nhwc_inside(const Tensor& x, const ResnetBlockGeometry& g,
                 const ResnetBlockAttrs& a) {
#ifdef FASTCONV_WITH_ONEDNN
  return !a.training && x.is_cpu() && !runs_on_cuda_engine(x) && !g.nhwc &&
         x.dtype() == paddle::DataType::FLOAT32 &&
         cpu_conv_engine() == CpuConvEngine::kOneDNN &&
         !stays_nchw_in_eval(g);
#else
  return false;
#endif
}

std::vector<Tensor> stage_forward(const Tensor& in, const Tensor& w,
                                  const Tensor& scale, const Tensor& shift,
                                  Tensor& mean, Tensor& var,
                                  const OptTensor& residual,
                                  const ConvGeometry& g,
                                  const ConvBnActAttrs& a) {
  return conv_bn_act_forward(in, w, paddle::none, scale, shift, mean, var,
                             residual, g, a, kResnetBlockOp);
}

std::vector<Tensor> stage_backward(const Tensor& in, const Tensor& w,
                                   const Tensor& scale,
                                   const OptTensor& residual, const Tensor& y,
                                   const Tensor& z, const Tensor& mean,
                                   const Tensor& invstd, const Tensor& dy,
                                   const ConvGeometry& g,
                                   const ConvBnActAttrs& a) {
  return conv_bn_act_backward(in, w, paddle::none, scale, residual, y, z,
                              mean, invstd, dy, g, a, kResnetBlockOp);
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
  // (a separate 1-element tensor for each absent output)
  auto placeholder = [&] { return host_empty({1}, x.dtype(), x.place()); };
  PhaseTimer timer("block forward");
  const Tensor xin = inside ? relayout(x, true, kResnetBlockOp) : x;
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

  Tensor out = inside ? relayout(res[g.last][0], false, kResnetBlockOp) : res[g.last][0];
  timer.mark("out to NCHW");

  // Training keeps what backward needs (stages ran in data_format's
  // layout); eval keeps nothing: its backward (rare: gradients through a
  // frozen network) recomputes the hidden activations.
  const bool keep = a.training;
  TensorList r{out, keep ? res[kConv1][0] : placeholder(),
               keep && g.last == kConv3 ? res[kConv2][0] : placeholder()};
  std::vector<Tensor> stats;
  for (int s = 0; s < kBlockSlots; ++s) {
    r.push_back(keep && g.present[s] ? res[s][1] : placeholder());
    if (g.present[s]) {
      stats.push_back(res[s][2]);
      stats.push_back(res[s][3]);
    }
  }
  r.push_back(paddle::experimental::concat(stats, 0));
  return r;
}

TensorList resnet_block_backward(const Tensor& x, const TensorList& w,
                                 const TensorList& scale,
                                 const TensorList& shift, const Tensor& out,
                                 const Tensor& hidden1, const Tensor& hidden2,
                                 const TensorList& z, const Tensor& saved_stats,
                                 const Tensor& dout,
                                 const ResnetBlockGeometry& g,
                                 const ResnetBlockAttrs& a) {
  const char* op = kResnetBlockOp;
  FC_CHECK_ARG(saved_stats.numel() == g.stats_size(), op, "SavedStats",
               "has ", saved_stats.numel(), " values, expected ",
               g.stats_size(), " (was the forward run with the same inputs?)");
  PhaseTimer timer("block backward");
  auto mean_of = [&](int s) {
    const int64_t o = g.stats_offset(s);
    return saved_stats.slice(o, o + g.conv[s].O);
  };
  auto invstd_of = [&](int s) {
    const int64_t o = g.stats_offset(s) + g.conv[s].O;
    return saved_stats.slice(o, o + g.conv[s].O);
  };

  Tensor input[kBlockSlots];
  input[kConv1] = input[kDownsample] = x;
  if (a.training) {
    auto check = [&](const Tensor& t, int s, const char* name) {
      FC_CHECK_ARG(t.shape() == g.conv[s].out_shape(), op, name,
                   "does not match ", kBlockSlotNames[s], "'s output (was the "
                   "forward run in training mode with the same inputs?)");
    };
    check(hidden1, kConv1, "Hidden1");
    input[kConv2] = hidden1;
    if (g.last == kConv3) {
      check(hidden2, kConv2, "Hidden2");
      input[kConv3] = hidden2;
    }
  } else {
    // Eval kept nothing: recompute the hidden activations with the
    // statistics the forward used (running variance from the saved 1/std).
    for (int s = kConv1; s < g.last; ++s) {
      Tensor mean = mean_of(s);
      Tensor var = paddle::experimental::scale(
          paddle::experimental::reciprocal(
              paddle::experimental::square(invstd_of(s))),
          1.f, -a.epsilon[s], true);
      input[s + 1] = stage_forward(input[s], w[s], scale[s], shift[s], mean,
                                   var, paddle::none, g.conv[s],
                                   a.stage(s, true, g.nhwc))[0];
    }
    timer.mark("recompute hidden (eval)");
  }

  TensorList grads(1 + 3 * kBlockSlots);
  auto back = [&](int s, const OptTensor& residual, const Tensor& ys,
                  const Tensor& dys, bool relu) {
    // (eval: z[s] is a placeholder and the stage recomputes z)
    std::vector<Tensor> r = stage_backward(
        input[s], w[s], scale[s], residual, ys, z[s], mean_of(s),
        invstd_of(s), dys, g.conv[s], a.stage(s, relu, g.nhwc));
    grads[1 + s] = r[1];                    // dW
    grads[1 + kBlockSlots + s] = r[3];      // dScale
    grads[1 + 2 * kBlockSlots + s] = r[4];  // dShift
    timer.mark(kBlockSlotNames[s]);
    return r;
  };
  // Last stage: its residual input is the shortcut (only its presence
  // matters to backward, which returns the residual's gradient).
  std::vector<Tensor> r = back(g.last, OptTensor(out), out, dout, true);
  const Tensor dshortcut = r[5];
  Tensor dh = r[0];
  for (int s = g.last - 1; s >= kConv1; --s) {
    // Stage s's output (after its ReLU) is stage s+1's input.
    dh = back(s, paddle::none, input[s + 1], dh, true)[0];
  }
  if (g.present[kDownsample]) {
    // No activation: the stage never reads its output (pass any tensor).
    accumulate(dh,
               back(kDownsample, paddle::none, dshortcut, dshortcut, false)[0]);
  } else {
    accumulate(dh, dshortcut);
  }
  grads[0] = dh;
  timer.mark("dx");
  return grads;
}

}  // namespace fastconv
