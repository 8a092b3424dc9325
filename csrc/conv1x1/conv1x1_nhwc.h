// 1x1 convolution of NHWC tensors with the fused eval epilogue, AVX-512:
//   y[p][o] = act(sum_c x[p][c] * wt[c][o] + bias[o] + residual[p][o])
// for unpadded, stride-1, ungrouped 1x1 convolutions (p: the N*H*W pixels
// of the batch), act = ReLU or none.
//
// Why: with few input channels oneDNN's brgemm 1x1 kernel runs these at
// about 140 GFLOP/s on the project's machine (64->256 at 56x56, batch 8,
// bias and ReLU as post-ops), well below the 200 its sgemm reaches on the
// same GEMM; this plain register-blocked kernel gets about 175 there, with
// bias, residual and ReLU applied to its register tiles.
//
// Per thread, an equal share of the pixels, in blocks of 96 (their inputs
// stay in cache across the output-channel blocks); per block and 64 output
// channels, every 6 pixels are one register tile (24 AVX-512 accumulators;
// per input channel 4 vector loads of the transposed filters, 6 broadcast
// inputs, 24 multiply-adds). Large outputs are written with streaming
// stores (see conv1x1_nchw.h).
//
// Plain C++ on raw pointers: no Paddle or oneDNN types.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {
namespace conv1x1 {

struct NhwcProblem {
  int64_t P = 0;  // pixels of the batch (N * H * W)
  int64_t C = 0;  // input channels
  int64_t O = 0;  // output channels, a multiple of 16
};

// Whether the CPU plans should run this kernel rather than oneDNN's for
// C -> O channels: O a multiple of 16, and where it measured faster (see
// the .cc).
bool nhwc_preferred(int64_t C, int64_t O);

// Floats of the transposed filters: C * O.
size_t nhwc_weights_floats(int64_t C, int64_t O);

// w: plain [O, C] filters -> wt: [C, O].
void transpose_weights(const float* w, int64_t O, int64_t C, float* wt);

// x: [P, C]; wt: transposed filters [C, O]; bias: [O] or null; residual:
// [P, O] or null, must not overlap y; y: [P, O]. Throws std::runtime_error
// where !cpu_supported() or O is not a multiple of 16.
void forward_nhwc(const NhwcProblem& p, const float* x, const float* wt,
                  const float* bias, const float* residual, bool relu,
                  float* y);

}  // namespace conv1x1
}  // namespace fastconv
