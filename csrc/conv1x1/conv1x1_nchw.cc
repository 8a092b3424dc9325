// 1x1 NCHW convolution with the fused epilogue, AVX-512. See conv1x1_nchw.h.
#include "conv1x1/conv1x1_nchw.h"

#include <omp.h>

#include <cstdlib>
#include <new>
#include <stdexcept>

#include "common/avx512_gemm_tile.h"
#include "common/x86_avx512.h"

namespace fastconv {
namespace conv1x1 {

bool cpu_supported() { return avx512_supported(); }

// Measured on the project's machine (AMD EPYC, 2 threads, the kernel
// against oneDNN's sgemm in per-thread pieces with the after-pass, timed in
// turns in a C++ harness, batch 8): 64->256 at 56x56 4.3-4.6 ms against
// 4.7-5.2 (the bare sgemm 4.1-4.5), 128->512 at 28x28 4.0-4.1 against
// 4.1-4.5; not faster where the output is no larger than the input: 64->64
// at 56x56 1.19-1.27 ms against 1.15-1.23, and slower with many input
// channels, whose 64-pixel panels no longer fit the 32 KiB L1 (256->64 at
// 56x56 5.1 against 4.1 ms, 512->128 at 28x28 4.2-4.6 against 3.8-4.1).
bool preferred(int64_t C, int64_t O) {
  return cpu_supported() && C <= 128 && O >= 2 * C;
}

#if FC_X86_AVX512
namespace {

constexpr int kRows = 6;             // output channels per register tile
constexpr int kVecs = 4;             // 16-pixel vectors per register tile
constexpr int kPanel = 16 * kVecs;   // pixels per packed panel
// Outputs at least this large are written with streaming stores: more than
// half the 32 MiB L3 of the machine the kernel was tuned on, they would not
// stay in cache for the next layer, and plain stores read each line before
// writing it (64->256 at 56x56, batch 8, 25.7 MB, an earlier version of
// this kernel: 4.3-4.4 ms streaming against 5.8-6.5 with plain stores).
constexpr size_t kStreamBytes = size_t{16} << 20;

FC_AVX512_INLINE __mmask16 lanes(int64_t n) {
  if (n >= 16) return static_cast<__mmask16>(0xFFFF);
  return n <= 0 ? static_cast<__mmask16>(0)
                : static_cast<__mmask16>((1u << n) - 1);
}

// Copies pixels [0, width) of C rows (ld apart) into panel[C][kPanel], the
// rest of each row zero; prefetches the same rows' next panel when asked.
FC_AVX512_INLINE void pack_panel(const float* x, int64_t ld, int64_t C,
                                 int64_t width, bool prefetch_next,
                                 float* panel) {
  if (width == kPanel) {
    for (int64_t c = 0; c < C; ++c) {
      const float* s = x + c * ld;
      for (int j = 0; j < kVecs; ++j)
        _mm512_store_ps(panel + c * kPanel + 16 * j, _mm512_loadu_ps(s + 16 * j));
      if (prefetch_next)
        for (int j = 0; j < kVecs; ++j)
          _mm_prefetch(reinterpret_cast<const char*>(s + kPanel + 16 * j),
                       _MM_HINT_T0);
    }
    return;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int j = 0; j < kVecs; ++j)
      _mm512_store_ps(panel + c * kPanel + 16 * j,
                      _mm512_maskz_loadu_ps(lanes(width - 16 * j), x + c * ld + 16 * j));
}

struct Out {
  float* y;             // the tile's first output
  const float* res;     // its residual, or null
  int64_t ld;           // floats between output channels (HW)
  bool relu, stream;
  __mmask16 last;       // valid lanes of the tile's last vector
};

// R output channels (weights w, C apart) x NV vectors of the packed panel.
template <int R, int NV>
FC_AVX512_INLINE void tile(const float* w, int64_t C, const float* panel,
                           const float* bias, const Out& o) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i) {
    const __m512 b = bias ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
    for (int j = 0; j < NV; ++j) acc[i][j] = b;
  }
  if (o.res)  // wanted after the loop: ask for it now
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        _mm_prefetch(reinterpret_cast<const char*>(o.res + i * o.ld + 16 * j),
                     _MM_HINT_T0);
  gemm_accumulate<R, NV>(acc, w, C, panel, kPanel, C);
  // Each branch covers whole unrolled loops, so the accumulators stay in
  // registers. No masked loads where none are needed: on the machine the
  // kernel was tuned on, a masked load, even with every lane off, from the
  // lines being written with streaming stores cost 40% of the kernel's time.
  if (o.res) {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j) {
        const float* r = o.res + i * o.ld + 16 * j;
        acc[i][j] = _mm512_add_ps(
            acc[i][j], j == NV - 1 && o.last != 0xFFFF
                           ? _mm512_maskz_loadu_ps(o.last, r)
                           : _mm512_loadu_ps(r));
      }
  }
  if (o.relu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        acc[i][j] = _mm512_maskz_max_ps(0xFFFF, acc[i][j], zero);
  }
  const __mmask16 full = 0xFFFF;
  if (o.stream) {  // full tiles only
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        _mm512_stream_ps(o.y + i * o.ld + 16 * j, acc[i][j]);
  } else {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < NV; ++j)
        _mm512_mask_storeu_ps(o.y + i * o.ld + 16 * j,
                              j == NV - 1 ? o.last : full, acc[i][j]);
  }
}

template <int NV>
FC_AVX512_INLINE void tile_rows(int rows, const float* w, int64_t C,
                                const float* panel, const float* bias,
                                const Out& o) {
  switch (rows) {
    case 6: tile<6, NV>(w, C, panel, bias, o); break;
    case 5: tile<5, NV>(w, C, panel, bias, o); break;
    case 4: tile<4, NV>(w, C, panel, bias, o); break;
    case 3: tile<3, NV>(w, C, panel, bias, o); break;
    case 2: tile<2, NV>(w, C, panel, bias, o); break;
    case 1: tile<1, NV>(w, C, panel, bias, o); break;
    default: break;
  }
}

struct Args {
  const NchwProblem* p;
  const float *x, *w, *bias, *res;
  bool relu, stream;
  float* y;
};

// Output pixels [begin, end) of the whole batch (image-major), all output
// channels, through one thread's panel buffer.
FC_AVX512 void run_pixels(const Args& a, int64_t begin, int64_t end,
                          float* panel) {
  const int64_t C = a.p->C, O = a.p->O, HW = a.p->HW;
  for (int64_t at = begin; at < end;) {
    const int64_t n = at / HW, p0 = at % HW;
    const int64_t len = end - at < HW - p0 ? end - at : HW - p0;
    for (int64_t q = 0; q < len; q += kPanel) {
      const int64_t width = len - q < kPanel ? len - q : kPanel;
      pack_panel(a.x + (n * C) * HW + p0 + q, HW, C, width,
                 q + kPanel < len, panel);
      const int64_t off = (n * O) * HW + p0 + q;
      const int nv = static_cast<int>((width + 15) / 16);
      Out o{a.y + off, a.res ? a.res + off : nullptr, HW, a.relu, false,
            lanes(width - 16 * (nv - 1))};
      // Streaming stores want 64-byte aligned vectors in every row.
      o.stream = a.stream && width == kPanel && HW % 16 == 0 &&
                 reinterpret_cast<uintptr_t>(o.y) % 64 == 0;
      for (int64_t oc = 0; oc < O; oc += kRows) {
        const int rows = O - oc < kRows ? static_cast<int>(O - oc) : kRows;
        const float* w = a.w + oc * C;
        const float* b = a.bias ? a.bias + oc : nullptr;
        Out t = o;
        t.y += oc * HW;
        if (t.res) t.res += oc * HW;
        switch (nv) {
          case 4: tile_rows<4>(rows, w, C, panel, b, t); break;
          case 3: tile_rows<3>(rows, w, C, panel, b, t); break;
          case 2: tile_rows<2>(rows, w, C, panel, b, t); break;
          default: tile_rows<1>(rows, w, C, panel, b, t); break;
        }
      }
    }
    at += len;
  }
  _mm_sfence();  // streaming stores are weakly ordered: done before the join
}

}  // namespace
#endif  // FC_X86_AVX512

void forward_nchw(const NchwProblem& p, const float* x, const float* w,
                  const float* bias, const float* residual, bool relu,
                  float* y) {
  if (!cpu_supported())
    throw std::runtime_error(
        "conv1x1::forward_nchw: this CPU or build has no AVX-512F");
#if FC_X86_AVX512
  const int64_t total = p.N * p.HW;
  if (total == 0 || p.O == 0) return;
  const int threads = omp_get_max_threads();
  const size_t panel_floats = static_cast<size_t>(p.C > 0 ? p.C : 1) * kPanel;
  float* panels = static_cast<float*>(
      std::aligned_alloc(64, panel_floats * sizeof(float) * threads));
  if (!panels) throw std::bad_alloc();
  const Args a{&p, x, w, bias, residual, relu,
               static_cast<size_t>(p.N * p.O * p.HW) * sizeof(float) >= kStreamBytes,
               y};
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    run_pixels(a, total * t / nt, total * (t + 1) / nt,
               panels + panel_floats * t);
  }
  std::free(panels);
#endif
}

}  // namespace conv1x1
}  // namespace fastconv
