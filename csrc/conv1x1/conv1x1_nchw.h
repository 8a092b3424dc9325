// 1x1 convolution of NCHW tensors with the fused eval epilogue, AVX-512:
//   y[n][o][p] = act(sum_c w[o][c] * x[n][c][p] + bias[o] + residual[n][o][p])
// for unpadded, stride-1, ungrouped 1x1 convolutions (p: the H*W pixels of
// an image), act = ReLU or none.
//
// Why: on plain NCHW a 1x1 convolution is a GEMM per image, and oneDNN runs
// it as one (its sgemm; post-ops on that path cost an extra slow pass). The
// CPU plans therefore run sgemm on per-thread pieces and apply bias, residual
// and ReLU to each piece afterwards (onednn/conv_onednn.h). Where the output
// has several times the channels of the input (ResNet's expanding 1x1
// convolutions, 64->256 and 128->512), that after-pass over the output
// weighs most: 1.07-1.14x the bare GEMM. This kernel applies the epilogue to
// its register tile before the tile is stored, so the output is written once
// and never re-read.
//
// Per thread, an equal share of the batch's output pixels, walked in panels
// of 64 pixels: the panel's C x 64 inputs are copied into a contiguous
// buffer (the next panel prefetched meanwhile), then every 6 output channels
// x 64 pixels are one register tile (24 AVX-512 accumulators; per input
// channel 4 vector loads, 6 broadcast weights, 24 multiply-adds) with the
// epilogue on it. Large outputs are written with streaming stores: they do
// not stay in cache for the next layer anyway, and the stores then skip
// reading each line first.
//
// Plain C++ on raw pointers: no Paddle or oneDNN types.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {
namespace conv1x1 {

struct NchwProblem {
  int64_t N = 0;   // images
  int64_t C = 0;   // input channels
  int64_t O = 0;   // output channels
  int64_t HW = 0;  // pixels per image (input and output)
};

// Whether this build and this CPU run the kernel (x86-64 with AVX-512F).
bool cpu_supported();

// Whether the CPU plans should run this kernel rather than oneDNN's sgemm
// plus the after-pass, for C -> O channels: where it measured faster (see
// the .cc).
bool preferred(int64_t C, int64_t O);

// x: [N, C, HW]; w: plain [O, C]; bias: [O] or null; residual: [N, O, HW]
// or null, must not overlap y; y: [N, O, HW]. Throws std::runtime_error
// where !cpu_supported(), std::bad_alloc when its scratch cannot be had.
void forward_nchw(const NchwProblem& p, const float* x, const float* w,
                  const float* bias, const float* residual, bool relu,
                  float* y);

}  // namespace conv1x1
}  // namespace fastconv
