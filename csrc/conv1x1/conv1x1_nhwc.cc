// 1x1 NHWC convolution with the fused epilogue, AVX-512. See conv1x1_nhwc.h.
#include "conv1x1/conv1x1_nhwc.h"

#include <omp.h>

#include <stdexcept>
#include <string>

#include "common/avx512_gemm_tile.h"
#include "common/x86_avx512.h"
#include "conv1x1/conv1x1_nchw.h"

namespace fastconv {
namespace conv1x1 {

// Measured on the project's machine (AMD EPYC, 2 threads, batch 8, the
// kernel with bias and ReLU against oneDNN's brgemm 1x1 convolution with
// them as post-ops, timed in turns in a C++ harness): 64->256 at 56x56
// 4.6-4.9 ms against 5.7-6.1; even elsewhere: 128->512 at 28x28 4.8-5.0
// against 4.9-5.0, 64->64 at 56x56 1.46 against 1.46, 192->176 at 28x28
// 2.41 against 2.47, 256->288 at 28x28 5.1 against 5.0. So the same rule as
// the NCHW kernel's, where the gain is.
bool nhwc_preferred(int64_t C, int64_t O) {
  return preferred(C, O) && O % 16 == 0;
}

size_t nhwc_weights_floats(int64_t C, int64_t O) {
  return static_cast<size_t>(C * O);
}

void transpose_weights(const float* w, int64_t O, int64_t C, float* wt) {
  for (int64_t o = 0; o < O; ++o)
    for (int64_t c = 0; c < C; ++c) wt[c * O + o] = w[o * C + c];
}

#if FC_X86_AVX512
namespace {

constexpr int kRows = 6;      // pixels per register tile
constexpr int kVecs = 4;      // 16-channel vectors per register tile
constexpr int64_t kBlock = 96;  // pixels per block
constexpr size_t kStreamBytes = size_t{16} << 20;  // see conv1x1_nchw.cc

struct Tile {
  const float* x;    // the tile's first pixel
  const float* wt;   // the filters' first output channel of the tile
  const float* bias; // or null
  const float* res;  // or null
  float* y;
  int64_t C, O;      // O: floats between pixels of y, residual and wt rows
  bool relu, stream;
};

// R pixels x NV vectors of 16 output channels.
template <int R, int NV>
FC_AVX512_INLINE void tile(const Tile& t) {
  __m512 acc[R][NV];
  for (int j = 0; j < NV; ++j) {
    const __m512 b = t.bias ? _mm512_loadu_ps(t.bias + 16 * j) : _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) acc[i][j] = b;
  }
  if (t.res)  // wanted after the loop: ask for it now
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(t.res + i * t.O + 16 * j),
                     _MM_HINT_T0);
  gemm_accumulate<R, NV>(acc, t.x, t.C, t.wt, t.O, t.C);
  // Each branch covers whole unrolled loops, so the accumulators stay in
  // registers (see conv1x1_nchw.cc).
  if (t.res)
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        acc[i][j] = _mm512_add_ps(acc[i][j], _mm512_loadu_ps(t.res + i * t.O + 16 * j));
  if (t.relu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        acc[i][j] = _mm512_maskz_max_ps(0xFFFF, acc[i][j], zero);
  }
  if (t.stream) {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j) _mm512_stream_ps(t.y + i * t.O + 16 * j, acc[i][j]);
  } else {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j) _mm512_storeu_ps(t.y + i * t.O + 16 * j, acc[i][j]);
  }
}

template <int NV>
FC_AVX512_INLINE void tile_rows(int rows, const Tile& t) {
  switch (rows) {
    case 6: tile<6, NV>(t); break;
    case 5: tile<5, NV>(t); break;
    case 4: tile<4, NV>(t); break;
    case 3: tile<3, NV>(t); break;
    case 2: tile<2, NV>(t); break;
    case 1: tile<1, NV>(t); break;
    default: break;
  }
}

struct Args {
  const NhwcProblem* p;
  const float *x, *wt, *bias, *res;
  bool relu, stream;
  float* y;
};

// Pixels [begin, end), all output channels.
FC_AVX512 void run_pixels(const Args& a, int64_t begin, int64_t end) {
  const int64_t C = a.p->C, O = a.p->O;
  for (int64_t b0 = begin; b0 < end; b0 += kBlock) {
    const int64_t b1 = end - b0 < kBlock ? end : b0 + kBlock;
    for (int64_t o = 0; o < O; o += 16 * kVecs) {
      const int nv = O - o < 16 * kVecs ? static_cast<int>((O - o) / 16) : kVecs;
      for (int64_t p = b0; p < b1; p += kRows) {
        const int rows = b1 - p < kRows ? static_cast<int>(b1 - p) : kRows;
        Tile t{a.x + p * C, a.wt + o, a.bias ? a.bias + o : nullptr,
               a.res ? a.res + p * O + o : nullptr, a.y + p * O + o, C, O,
               a.relu, false};
        // Streaming stores want 64-byte aligned vectors in every row.
        t.stream = a.stream && reinterpret_cast<uintptr_t>(t.y) % 64 == 0;
        switch (nv) {
          case 4: tile_rows<4>(rows, t); break;
          case 3: tile_rows<3>(rows, t); break;
          case 2: tile_rows<2>(rows, t); break;
          default: tile_rows<1>(rows, t); break;
        }
      }
    }
  }
  _mm_sfence();  // streaming stores are weakly ordered: done before the join
}

}  // namespace
#endif  // FC_X86_AVX512

void forward_nhwc(const NhwcProblem& p, const float* x, const float* wt,
                  const float* bias, const float* residual, bool relu,
                  float* y) {
  if (!cpu_supported())
    throw std::runtime_error(
        "conv1x1::forward_nhwc: this CPU or build has no AVX-512F");
  if (p.O % 16 != 0)
    throw std::runtime_error(
        "conv1x1::forward_nhwc: output channels must be a multiple of 16, got " +
        std::to_string(p.O));
#if FC_X86_AVX512
  if (p.P == 0 || p.O == 0) return;
  const Args a{&p, x, wt, bias, residual, relu,
               static_cast<size_t>(p.P * p.O) * sizeof(float) >= kStreamBytes, y};
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    run_pixels(a, p.P * t / nt, p.P * (t + 1) / nt);
  }
#endif
}

}  // namespace conv1x1
}  // namespace fastconv
