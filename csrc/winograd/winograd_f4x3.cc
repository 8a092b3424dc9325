// Winograd F(4x4, 3x3) forward convolution, AVX-512. See winograd_f4x3.h.
// The AVX-512 code is compiled function by function (common/x86_avx512.h);
// forward() is reached only where cpu_supported() says the CPU has it.
#include "winograd/winograd_f4x3.h"

#include <omp.h>

#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#include "common/avx512_gemm_tile.h"
#include "common/x86_avx512.h"

namespace fastconv {
namespace winograd {

bool cpu_supported() { return avx512_supported(); }

bool channels_supported(int64_t C, int64_t O) {
  return C > 0 && O > 0 && C % 16 == 0 && O % 16 == 0;
}

size_t transformed_weights_floats(int64_t C, int64_t O) {
  return static_cast<size_t>(36 * C * O);
}

void transform_weights(const float* w, int64_t O, int64_t C, float* u) {
  // G of F(4x4, 3x3); U = G g G^T is 6x6 per (o, c) filter.
  static const double G[6][3] = {{1.0 / 4, 0, 0},
                                 {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                 {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                 {0, 0, 1}};
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t o = 0; o < O; ++o) {
      const float* g = w + (o * C + c) * 9;
      double t[6][3];
      for (int a = 0; a < 6; ++a)
        for (int j = 0; j < 3; ++j)
          t[a][j] = G[a][0] * g[j] + G[a][1] * g[3 + j] + G[a][2] * g[6 + j];
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b)
          u[((a * 6 + b) * C + c) * O + o] = static_cast<float>(
              t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
    }
  }
}

#if FC_X86_AVX512
namespace {

FC_AVX512_INLINE __m512 k(float v) { return _mm512_set1_ps(v); }

// V = B^T d B for one tile's 16-channel vectors d[6][6]; V[a][b] is stored
// at dst + (a*6 + b) * pstride.
FC_AVX512_INLINE void input_transform(const __m512 (&d)[6][6], float* dst,
                                      int64_t pstride) {
  __m512 r[6][6];
  for (int j = 0; j < 6; ++j) {  // r = B^T d, column by column
    const __m512 d0 = d[0][j], d1 = d[1][j], d2 = d[2][j], d3 = d[3][j],
                 d4 = d[4][j], d5 = d[5][j];
    r[0][j] = _mm512_fmadd_ps(k(4.f), d0, _mm512_fmadd_ps(k(-5.f), d2, d4));
    r[1][j] = _mm512_fmadd_ps(k(-4.f), _mm512_add_ps(d1, d2),
                              _mm512_add_ps(d3, d4));
    r[2][j] = _mm512_fmadd_ps(k(4.f), _mm512_sub_ps(d1, d2),
                              _mm512_sub_ps(d4, d3));
    r[3][j] = _mm512_fmadd_ps(k(2.f), _mm512_sub_ps(d3, d1),
                              _mm512_sub_ps(d4, d2));
    r[4][j] = _mm512_fmadd_ps(k(2.f), _mm512_sub_ps(d1, d3),
                              _mm512_sub_ps(d4, d2));
    r[5][j] = _mm512_fmadd_ps(k(4.f), d1, _mm512_fmadd_ps(k(-5.f), d3, d5));
  }
  for (int i = 0; i < 6; ++i) {  // V = r B, row by row
    const __m512 d0 = r[i][0], d1 = r[i][1], d2 = r[i][2], d3 = r[i][3],
                 d4 = r[i][4], d5 = r[i][5];
    float* o = dst + i * 6 * pstride;
    _mm512_storeu_ps(o, _mm512_fmadd_ps(k(4.f), d0,
                                        _mm512_fmadd_ps(k(-5.f), d2, d4)));
    _mm512_storeu_ps(o + pstride,
                     _mm512_fmadd_ps(k(-4.f), _mm512_add_ps(d1, d2),
                                     _mm512_add_ps(d3, d4)));
    _mm512_storeu_ps(o + 2 * pstride,
                     _mm512_fmadd_ps(k(4.f), _mm512_sub_ps(d1, d2),
                                     _mm512_sub_ps(d4, d3)));
    _mm512_storeu_ps(o + 3 * pstride,
                     _mm512_fmadd_ps(k(2.f), _mm512_sub_ps(d3, d1),
                                     _mm512_sub_ps(d4, d2)));
    _mm512_storeu_ps(o + 4 * pstride,
                     _mm512_fmadd_ps(k(2.f), _mm512_sub_ps(d1, d3),
                                     _mm512_sub_ps(d4, d2)));
    _mm512_storeu_ps(o + 5 * pstride,
                     _mm512_fmadd_ps(k(4.f), d1,
                                     _mm512_fmadd_ps(k(-5.f), d3, d5)));
  }
}

// One row of A^T (.) over six values: the 4 outputs of F(4, 3).
FC_AVX512_INLINE void output_row(__m512 m0, __m512 m1, __m512 m2, __m512 m3,
                                 __m512 m4, __m512 m5, __m512* o) {
  const __m512 s12 = _mm512_add_ps(m1, m2), d12 = _mm512_sub_ps(m1, m2);
  const __m512 s34 = _mm512_add_ps(m3, m4), d34 = _mm512_sub_ps(m3, m4);
  o[0] = _mm512_add_ps(_mm512_add_ps(m0, s12), s34);
  o[1] = _mm512_fmadd_ps(k(2.f), d34, d12);
  o[2] = _mm512_fmadd_ps(k(4.f), s34, s12);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(k(8.f), d34, d12), m5);
}

// Y = A^T M A for one tile's 16-channel vectors M[a][b] at
// src + (a*6 + b) * pstride.
FC_AVX512_INLINE void output_transform(const float* src, int64_t pstride,
                                       __m512 (&y)[4][4]) {
  __m512 t[4][6];
  for (int j = 0; j < 6; ++j) {
    __m512 col[4];
    output_row(_mm512_loadu_ps(src + (0 * 6 + j) * pstride),
               _mm512_loadu_ps(src + (1 * 6 + j) * pstride),
               _mm512_loadu_ps(src + (2 * 6 + j) * pstride),
               _mm512_loadu_ps(src + (3 * 6 + j) * pstride),
               _mm512_loadu_ps(src + (4 * 6 + j) * pstride),
               _mm512_loadu_ps(src + (5 * 6 + j) * pstride), col);
    for (int i = 0; i < 4; ++i) t[i][j] = col[i];
  }
  for (int i = 0; i < 4; ++i)
    output_row(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], y[i]);
}

// C[R x 16*NV] = A[R x K] . B[K x 16*NV]: R rows of A (lda apart), NV
// vectors of output channels; R * NV accumulators stay in registers.
template <int R, int NV>
FC_AVX512_INLINE void gemm_tile(const float* a, int64_t lda, const float* b,
                                int64_t ldb, float* c, int64_t ldc,
                                int64_t K) {
  __m512 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_ps();
  gemm_accumulate<R, NV>(acc, a, lda, b, ldb, K);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(c + i * ldc + 16 * j, acc[i][j]);
}

template <int NV>
FC_AVX512 void gemm_rows(int rows, const float* a, int64_t lda, const float* b,
                         int64_t ldb, float* c, int64_t ldc, int64_t K) {
  int r = 0;
  for (; r + 6 <= rows; r += 6)
    gemm_tile<6, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K);
  switch (rows - r) {
    case 5: gemm_tile<5, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K); break;
    case 4: gemm_tile<4, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K); break;
    case 3: gemm_tile<3, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K); break;
    case 2: gemm_tile<2, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K); break;
    case 1: gemm_tile<1, NV>(a + r * lda, lda, b, ldb, c + r * ldc, ldc, K); break;
    default: break;
  }
}

// Scratch kept between calls (grown, never shrunk): a worker thread's V and
// M blocks, or the calling thread's whole-problem V and M.
struct Scratch {
  std::unique_ptr<float, void (*)(void*)> mem{nullptr, std::free};
  size_t floats = 0;
  float* get(size_t n) {
    if (n > floats) {
      const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      mem.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      floats = mem ? n : 0;
    }
    return mem.get();
  }
};

struct Work {
  const F4x3Problem* p;
  int64_t tiles_h, tiles_w;
  const float *x, *u, *bias, *residual;
  bool relu;
  float* y;
};

// Input transform of tiles [t0, t0 + nt) into V[pos][row][c], tile t0 + t
// at row t; rows rows per position.
FC_AVX512 void input_tiles(const Work& w, int64_t t0, int64_t nt, float* V,
                           int64_t rows) {
  const F4x3Problem& p = *w.p;
  const int64_t C = p.C, per_image = w.tiles_h * w.tiles_w;
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t g = t0 + t, n = g / per_image, r = g % per_image;
    const int64_t iy0 = (r / w.tiles_w) * 4 - p.pad_top;
    const int64_t ix0 = (r % w.tiles_w) * 4 - p.pad_left;
    for (int64_t cb = 0; cb < C / 16; ++cb) {
      const float* base = w.x + n * p.src.n_stride + cb * p.src.cb_stride;
      __m512 d[6][6];
      for (int i = 0; i < 6; ++i) {
        const int64_t iy = iy0 + i;
        const bool row_in = iy >= 0 && iy < p.H;
        for (int j = 0; j < 6; ++j) {
          const int64_t ix = ix0 + j;
          d[i][j] = row_in && ix >= 0 && ix < p.W
                        ? _mm512_loadu_ps(base + iy * p.src.y_stride +
                                          ix * p.src.x_stride)
                        : _mm512_setzero_ps();
        }
      }
      input_transform(d, V + t * C + cb * 16, rows * C);
    }
  }
}

// M[pos][0:nt][o0:o1] = V[pos][0:nt][:] . U[pos][:][o0:o1] (o1 - o0 a
// multiple of 16); rows rows per position in V and M.
FC_AVX512 void gemms(const Work& w, int pos, int64_t o0, int64_t o1,
                     int64_t nt, const float* V, float* M, int64_t rows) {
  const int64_t C = w.p->C, O = w.p->O;
  const float* a = V + pos * rows * C;
  const float* u = w.u + pos * C * O;
  float* m = M + pos * rows * O;
  const int r = static_cast<int>(nt);
  for (; o0 + 64 <= o1; o0 += 64) gemm_rows<4>(r, a, C, u + o0, O, m + o0, O, C);
  switch ((o1 - o0) / 16) {
    case 3: gemm_rows<3>(r, a, C, u + o0, O, m + o0, O, C); break;
    case 2: gemm_rows<2>(r, a, C, u + o0, O, m + o0, O, C); break;
    case 1: gemm_rows<1>(r, a, C, u + o0, O, m + o0, O, C); break;
    default: break;
  }
}

// Output transform of tiles [t0, t0 + nt) from M (tile t0 + t at row t)
// with bias, residual and ReLU, into y.
FC_AVX512 void output_tiles(const Work& w, int64_t t0, int64_t nt,
                            const float* M, int64_t rows) {
  const F4x3Problem& p = *w.p;
  const int64_t O = p.O, per_image = w.tiles_h * w.tiles_w;
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t t = 0; t < nt; ++t) {
    const int64_t g = t0 + t, n = g / per_image, r = g % per_image;
    const int64_t oy0 = (r / w.tiles_w) * 4, ox0 = (r % w.tiles_w) * 4;
    const int64_t nrow = p.OH - oy0 < 4 ? p.OH - oy0 : 4;
    const int64_t ncol = p.OW - ox0 < 4 ? p.OW - ox0 : 4;
    for (int64_t cb = 0; cb < O / 16; ++cb) {
      __m512 out[4][4];
      output_transform(M + t * O + cb * 16, rows * O, out);
      const __m512 bv = w.bias ? _mm512_loadu_ps(w.bias + cb * 16) : zero;
      const int64_t at = n * p.dst.n_stride + cb * p.dst.cb_stride;
      for (int64_t i = 0; i < nrow; ++i) {
        for (int64_t j = 0; j < ncol; ++j) {
          const int64_t off = at + (oy0 + i) * p.dst.y_stride +
                              (ox0 + j) * p.dst.x_stride;
          __m512 v = _mm512_add_ps(out[i][j], bv);
          if (w.residual) v = _mm512_add_ps(v, _mm512_loadu_ps(w.residual + off));
          // maskz_max: GCC 12's _mm512_max_ps passes an undefined vector
          // that -Wmaybe-uninitialized (an error in CI) flags.
          if (w.relu) v = _mm512_maskz_max_ps(0xFFFF, v, zero);
          _mm512_storeu_ps(w.y + off, v);
        }
      }
    }
  }
}

// Tiles per block. Small blocks keep a block's V and M (36 * T * (C + O)
// floats) in the 1 MiB L2, but every block reads all the transformed
// filters (36 * C * O floats), so large filters want fewer, larger blocks.
// Measured on the project's machine (AMD EPYC, 2 threads), the 3x3
// convolutions of ResNet-50 (batch 8, inside the whole model, where the
// filters do not stay in cache between calls): 64->64 at 56x56 4.4 ms at
// T=12, 5.0 at 32, 5.7 at 64; 128->128 at 28x28 3.9-4.6 at 12 and at 32,
// 5.2-5.9 at 64; 256->256 at 14x14 (9.4 MB of filters) 6.9-8.7 at 12 but
// 4.9-5.5 at 32 and at 64. Not adopted: a phased schedule (all input
// transforms, then the GEMMs split by position and output channels so the
// filters are read once, then all output transforms): 2x slower at 64->64
// 56x56 batch 8 (the kernel alone), 1.1x faster only at 256->256 14x14
// batch 1. Every thread gets a block where there are tiles enough.
int64_t tiles_per_block(int64_t C, int64_t O, int64_t tiles, int64_t threads) {
  const int64_t base = C * O > 128 * 128 ? 32 : 12;
  const int64_t even = (tiles + threads - 1) / threads;
  return even < base ? (even > 0 ? even : 1) : base;
}

// Each thread takes blocks of tiles through all three steps while they are
// in its cache.
void run_blocked(const Work& w, int64_t tiles, bool* out_of_memory) {
  const F4x3Problem& p = *w.p;
  const int64_t T = tiles_per_block(p.C, p.O, tiles, omp_get_max_threads());
  const int64_t blocks = (tiles + T - 1) / T;
  const size_t v_floats = static_cast<size_t>(36 * T * p.C);
  const size_t m_floats = static_cast<size_t>(36 * T * p.O);
#pragma omp parallel
  {
    static thread_local Scratch scratch;
    float* V = scratch.get(v_floats + m_floats);
    if (!V) {
#pragma omp atomic write
      *out_of_memory = true;
    }
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      if (!V) continue;
      const int64_t t0 = blk * T, nt = tiles - t0 < T ? tiles - t0 : T;
      float* M = V + v_floats;
      input_tiles(w, t0, nt, V, T);
      for (int pos = 0; pos < 36; ++pos) gemms(w, pos, 0, p.O, nt, V, M, T);
      output_tiles(w, t0, nt, M, T);
    }
  }
}

}  // namespace
#endif  // FC_X86_AVX512

void forward(const F4x3Problem& p, const float* x, const float* u,
             const float* bias, const float* residual, bool relu, float* y) {
  if (!cpu_supported())
    throw std::runtime_error(
        "winograd::forward: this CPU or build has no AVX-512F");
  if (!channels_supported(p.C, p.O))
    throw std::runtime_error(
        "winograd::forward: channel counts must be multiples of 16, got C=" +
        std::to_string(p.C) + ", O=" + std::to_string(p.O));
#if FC_X86_AVX512
  const Work w{&p, (p.OH + 3) / 4, (p.OW + 3) / 4, x, u, bias, residual, relu, y};
  const int64_t tiles = p.N * w.tiles_h * w.tiles_w;
  bool out_of_memory = false;
  run_blocked(w, tiles, &out_of_memory);
  if (out_of_memory) throw std::bad_alloc();
#endif
}

}  // namespace winograd
}  // namespace fastconv
