// Max pooling on the CPU, forward (with the argmax of every output) and
// backward (gradient routed to the argmax). Paddle's own NHWC max pool is
// about 3x slower than its NCHW one; the NHWC kernels are the pool of the
// channels_last ResNet stem (channels are the innermost, contiguous axis: the
// inner loops run over them and vectorize). The NCHW kernels serve
// GoogLeNet's stride-2 pools and the NCHW ResNet stem's; the 3x3/stride-1
// kernels (either layout) the Inception op's pool branch. Ties: the first
// maximum in row-major window order wins, as in Paddle's max pool; NaN
// propagates.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "common/vector_clones.h"
#include "max_pool/max_pool.h"

// The kernels are cloned for AVX-512 / AVX2 (common/vector_clones.h):
// GoogLeNet's four stride-2 pools, batch 8, NHWC: 13.4 ms -> 4.1 ms on the
// 2-core AVX-512 machine.

namespace fastconv {

namespace {
// Whether v replaces a window's running maximum m (the forward kernels): the
// strict '>' keeps the first maximum; NaN is taken and kept. Written with ||
// and && (GCC if-converts them, branch-free): the bitwise form kept the NCHW
// kernel's three-column loop from vectorizing.
inline bool takes(float v, float m) { return v > m || (v != v && m == m); }
}  // namespace

FC_VECTOR_CLONES
void max_pool_nhwc_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p) {
  const int64_t C = p.C;
  // One (image, output row) per iteration: outputs never overlap.
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t n = 0; n < p.N; ++n) {
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const float* xn = x + n * p.H * p.W * C;
      const int64_t h0 = std::max<int64_t>(oh * p.sh - p.ph, 0);
      const int64_t h1 = std::min<int64_t>(oh * p.sh - p.ph + p.kh, p.H);
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * p.sw - p.pw, 0);
        const int64_t w1 = std::min<int64_t>(ow * p.sw - p.pw + p.kw, p.W);
        float* yo = y + ((n * p.OH + oh) * p.OW + ow) * C;
        int32_t* ao = argmax + ((n * p.OH + oh) * p.OW + ow) * C;
        for (int64_t c = 0; c < C; ++c) {
          yo[c] = -std::numeric_limits<float>::infinity();
          ao[c] = static_cast<int32_t>(h0 * p.W + w0);
        }
        // Window in row-major order, strict '>': the first maximum wins, as in
        // Paddle's max pool. NaN propagates (a NaN input is taken and kept).
        for (int64_t h = h0; h < h1; ++h) {
          for (int64_t w = w0; w < w1; ++w) {
            const float* xv = xn + (h * p.W + w) * C;
            const int32_t idx = static_cast<int32_t>(h * p.W + w);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) {
              const float v = xv[c], m = yo[c];
              const bool take = takes(v, m);
              yo[c] = take ? v : m;
              ao[c] = take ? idx : ao[c];
            }
          }
        }
      }
    }
  }
}

FC_VECTOR_CLONES
void max_pool_nhwc_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p) {
  const int64_t C = p.C;
  // Windows overlap across output rows, so each thread owns whole images.
  // Per output pixel, each window input takes the gradients whose argmax is
  // it: contiguous masked adds over the channels (a scatter to
  // dx[argmax[c] * C + c] does not vectorize).
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    float* dxn = dx + n * p.H * p.W * C;
    std::memset(dxn, 0, sizeof(float) * p.H * p.W * C);
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const int64_t h0 = std::max<int64_t>(oh * p.sh - p.ph, 0);
      const int64_t h1 = std::min<int64_t>(oh * p.sh - p.ph + p.kh, p.H);
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * p.sw - p.pw, 0);
        const int64_t w1 = std::min<int64_t>(ow * p.sw - p.pw + p.kw, p.W);
        const int64_t o = ((n * p.OH + oh) * p.OW + ow) * C;
        const float* g = dy + o;
        const int32_t* a = argmax + o;
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const int32_t idx = static_cast<int32_t>(h * p.W + w);
            float* d = dxn + (h * p.W + w) * C;
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) d[c] += a[c] == idx ? g[c] : 0.f;
          }
      }
    }
  }
}

namespace {
// max that propagates NaN from either side (branch-free, vectorizes)
inline float max_nan(float a, float b) { return a != a ? a : (a > b ? a : b); }

// One image of max_pool3x3s1_forward ([H, W, C]; NCHW planes are C = 1) as
// two flat passes over its H * W * C values: the 3-wide row maximum into r
// (horizontal neighbours are C apart), then the maximum of three of those
// rows, W * C apart. Flat loops vectorize for any C, where per-row loops of an
// NCHW plane's 7..56 values did not (3.7 ms for Inception 4a's 3840 planes of
// 14x14, batch 8, against 0.5 ms now).
FC_VECTOR_CLONES
void pool3x3s1_image_forward(const float* x, float* y, int64_t H, int64_t W,
                             int64_t C, float* r) {
  const int64_t n = W * C, all = H * n;
  if (W == 1) {
    std::memcpy(r, x, sizeof(float) * all);
  } else {
#pragma omp simd
    for (int64_t o = C; o < all - C; ++o)
      r[o] = max_nan(max_nan(x[o - C], x[o]), x[o + C]);
    // the row ends saw a neighbour from the adjacent row: redo them
    for (int64_t h = 0; h < H; ++h) {
      const int64_t first = h * n, last = first + n - C;
      for (int64_t k = 0; k < C; ++k) {
        r[first + k] = max_nan(x[first + k], x[first + C + k]);
        r[last + k] = max_nan(x[last - C + k], x[last + k]);
      }
    }
  }
  if (H == 1) {
    std::memcpy(y, r, sizeof(float) * all);
    return;
  }
  for (int64_t o = 0; o < n; ++o) y[o] = max_nan(r[o], r[o + n]);
#pragma omp simd
  for (int64_t o = n; o < all - n; ++o)
    y[o] = max_nan(max_nan(r[o - n], r[o]), r[o + n]);
  for (int64_t o = all - n; o < all; ++o) y[o] = max_nan(r[o - n], r[o]);
}
}  // namespace

void max_pool3x3s1_forward(const float* x, float* y, int64_t images,
                           int64_t H, int64_t W, int64_t C) {
  const int64_t all = H * W * C;
#pragma omp parallel
  {
    std::vector<float> r(all);  // an NHWC image: 0.6 MB for Inception 3a
#pragma omp for schedule(static)
    for (int64_t im = 0; im < images; ++im)
      pool3x3s1_image_forward(x + im * all, y + im * all, H, W, C, r.data());
  }
}

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return a <= 0 ? 0 : (a + b - 1) / b; }

// How max_pool_nchw_forward reads a plane. Output rows are 6..56 values wide
// (GoogLeNet, the ResNet stem): per-row vector loops over them spent their
// time in scalar tails, integer divisions and, with stride 2, a gather per
// value (11.5 ms for GoogLeNet's first pool, 8 x 64 x 112 x 112, where the
// NHWC kernel takes 1.5 ms; 3.5-5.4 ms now). So each plane is first copied
// into its sw column phases (phase r holds columns r, r + sw, r + 2 sw, ...
// of each row), each phase row padded with -inf on both sides; then for
// every window row and kernel column all `padded` outputs of an output row
// (OW rounded up to 16) read one contiguous run of a phase row. Padding and
// columns outside the plane read -inf, which never wins the strict '>' (nor
// the NaN rule), so no loop needs a range check.
struct NchwPoolPlan {
  int64_t padded;   // OW rounded up to a multiple of 16
  int64_t left;     // -inf columns before each phase row's first value
  int64_t stride;   // floats per phase row
  std::vector<int64_t> d, r, q;  // kernel column j reads input column
                                 // ow * sw + d[j] = (ow + q[j]) * sw + r[j]
};

NchwPoolPlan plan_nchw_pool(const PoolGeometry& p) {
  NchwPoolPlan pl;
  pl.padded = (p.OW + 15) / 16 * 16;
  pl.left = ceil_div(p.pw, p.sw);
  pl.stride = pl.left + pl.padded + p.kw + 1;
  for (int64_t j = 0; j < p.kw; ++j) {
    const int64_t d = j - p.pw, r = ((d % p.sw) + p.sw) % p.sw;
    pl.d.push_back(d);
    pl.r.push_back(r);
    pl.q.push_back((d - r) / p.sw);
  }
  return pl;
}

// plane [H, W] -> phases [sw][H][stride] (see NchwPoolPlan)
FC_VECTOR_CLONES
void split_phases(const float* xp, float* phases, const PoolGeometry& p,
                  const NchwPoolPlan& pl) {
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t H = p.H, W = p.W, sw = p.sw;
  for (int64_t h = 0; h < H; ++h) {
    const float* row = xp + h * W;
    for (int64_t r = 0; r < sw; ++r) {
      float* ph = phases + (r * H + h) * pl.stride;
      const int64_t n = ceil_div(W - r, sw);
      std::fill(ph, ph + pl.left, ninf);
      std::fill(ph + pl.left + n, ph + pl.stride, ninf);
      float* dst = ph + pl.left;
      if (sw == 1) {
        std::memcpy(dst, row, sizeof(float) * W);
      } else if (sw == 2) {  // constant stride: vectorizes
        const float* src = row + r;
        for (int64_t i = 0; i < n; ++i) dst[i] = src[2 * i];
      } else {
        for (int64_t i = 0; i < n; ++i) dst[i] = row[i * sw + r];
      }
    }
  }
}

// The phase row that kernel column j reads for window row h, at output 0.
inline const float* phase_row(const float* phases, const PoolGeometry& p,
                              const NchwPoolPlan& pl, int64_t j, int64_t h) {
  return phases + (pl.r[j] * p.H + h) * pl.stride + pl.left + pl.q[j];
}

// One plane of max_pool_nchw_forward from its phases; ymax / amax: scratch
// rows of pl.padded values.
FC_VECTOR_CLONES
void pool_plane_forward(const float* phases, float* yp, int32_t* ap,
                        const PoolGeometry& p, const NchwPoolPlan& pl,
                        float* ymax, int32_t* amax) {
  const int64_t padded = pl.padded;
  const int32_t sw = static_cast<int32_t>(p.sw);
  const int32_t pw = static_cast<int32_t>(p.pw);
  for (int64_t oh = 0; oh < p.OH; ++oh) {
    const int64_t h0 = std::max<int64_t>(oh * p.sh - p.ph, 0);
    const int64_t h1 = std::min<int64_t>(oh * p.sh - p.ph + p.kh, p.H);
    // Start from the window's first valid input (a window of -inf keeps it).
    const int32_t first = static_cast<int32_t>(h0 * p.W);
#pragma omp simd
    for (int64_t ow = 0; ow < padded; ++ow) {
      const int32_t w0 = static_cast<int32_t>(ow) * sw - pw;
      ymax[ow] = -std::numeric_limits<float>::infinity();
      amax[ow] = first + (w0 > 0 ? w0 : 0);
    }
    for (int64_t h = h0; h < h1; ++h) {
      int64_t j = 0;
      // Three kernel columns per pass over the outputs (3x3 pools: one pass
      // per window row), each in row-major order.
      for (; j + 3 <= p.kw; j += 3) {
        const float* s0 = phase_row(phases, p, pl, j, h);
        const float* s1 = phase_row(phases, p, pl, j + 1, h);
        const float* s2 = phase_row(phases, p, pl, j + 2, h);
        const int32_t b0 = static_cast<int32_t>(h * p.W + pl.d[j]);
        const int32_t b1 = b0 + 1, b2 = b0 + 2;  // columns j + 1, j + 2
        for (int64_t ow = 0; ow < padded; ++ow) {
          const int32_t step = static_cast<int32_t>(ow) * sw;
          const float v0 = s0[ow], v1 = s1[ow], v2 = s2[ow];
          const float m0 = ymax[ow];
          const bool t0 = takes(v0, m0);
          const float m1 = t0 ? v0 : m0;
          const int32_t a1 = t0 ? b0 + step : amax[ow];
          const bool t1 = takes(v1, m1);
          const float m2 = t1 ? v1 : m1;
          const int32_t a2 = t1 ? b1 + step : a1;
          const bool t2 = takes(v2, m2);
          ymax[ow] = t2 ? v2 : m2;
          amax[ow] = t2 ? b2 + step : a2;
        }
      }
      for (; j < p.kw; ++j) {
        const float* s = phase_row(phases, p, pl, j, h);
        const int32_t b = static_cast<int32_t>(h * p.W + pl.d[j]);
        for (int64_t ow = 0; ow < padded; ++ow) {
          const float v = s[ow], m = ymax[ow];
          const bool t = takes(v, m);
          ymax[ow] = t ? v : m;
          amax[ow] = t ? b + static_cast<int32_t>(ow) * sw : amax[ow];
        }
      }
    }
    std::memcpy(yp + oh * p.OW, ymax, sizeof(float) * p.OW);
    std::memcpy(ap + oh * p.OW, amax, sizeof(int32_t) * p.OW);
  }
}
}  // namespace

void max_pool_nchw_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p) {
  const NchwPoolPlan pl = plan_nchw_pool(p);
#pragma omp parallel
  {
    std::vector<float> phases(p.sw * p.H * pl.stride), ymax(pl.padded);
    std::vector<int32_t> amax(pl.padded);
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
      split_phases(x + nc * p.H * p.W, phases.data(), p, pl);
      pool_plane_forward(phases.data(), y + nc * p.OH * p.OW,
                         argmax + nc * p.OH * p.OW, p, pl, ymax.data(),
                         amax.data());
    }
  }
}

FC_VECTOR_CLONES
void max_pool_nchw_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p) {
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
    float* d = dx + nc * p.H * p.W;
    std::memset(d, 0, sizeof(float) * p.H * p.W);
    const float* g = dy + nc * p.OH * p.OW;
    const int32_t* a = argmax + nc * p.OH * p.OW;
    for (int64_t o = 0; o < p.OH * p.OW; ++o) d[a[o]] += g[o];
  }
}

namespace {
// One NCHW plane of max_pool3x3s1_backward, as flat loops over its H * W
// outputs (rows of 7..56 pixels make too short vector loops): for each window
// offset, the outputs whose row has that neighbour form one index range, and
// `col` masks the left/right edges. Built for AVX-512, AVX2 and the baseline,
// picked at load time.
FC_VECTOR_CLONES
void pool_plane_backward(const float* xp, const float* yp, const float* gp,
                         float* dxp, int32_t H, int32_t W, const int32_t* col,
                         int32_t* at) {
  const int32_t n = H * W;
  // Start from the window's top-left valid input; then scan the offsets
  // backwards in row-major order: the first match is the last one kept.
  for (int32_t o = 0; o < n; ++o)
    at[o] = o - (o >= W ? W : 0) - (col[o] > 0 ? 1 : 0);
  for (int32_t di = 1; di >= -1; --di)
    for (int32_t dj = 1; dj >= -1; --dj) {
      const int32_t lo = di < 0 ? W : 0, hi = di > 0 ? n - W : n;
      const int32_t shift = di * W + dj;
      const int32_t edge = dj < 0 ? 0 : (dj > 0 ? W - 1 : -1);
      for (int32_t o = lo; o < hi; ++o) {
        const float v = xp[o + shift], m = yp[o];
        const bool hit = ((v == m) | ((m != m) & (v != v))) & (col[o] != edge);
        at[o] = hit ? o + shift : at[o];
      }
    }
  for (int32_t o = 0; o < n; ++o) dxp[at[o]] += gp[o];
}

// One NHWC image of max_pool3x3s1_backward with many channels: per output
// pixel, the window in row-major order; each channel's gradient is added to
// the first input equal to the maximum (a `taken` flag per channel stops the
// later ones). Every step is a contiguous, branch-free loop over the channels;
// an index-and-scatter form (dx[at[c] * C + c] += g[c]) did not vectorize and
// was 17 ms of GoogLeNet's channels_last training step (batch 8).
FC_VECTOR_CLONES
void pool_pixels_backward(const float* xn, const float* yn, const float* gn,
                          float* dn, int64_t H, int64_t W, int64_t C,
                          int32_t* taken) {
  for (int64_t h = 0; h < H; ++h)
    for (int64_t w = 0; w < W; ++w) {
      const float* yo = yn + (h * W + w) * C;
      const float* go = gn + (h * W + w) * C;
      std::fill(taken, taken + C, 0);
      for (int64_t i = std::max<int64_t>(h - 1, 0); i <= std::min(h + 1, H - 1); ++i)
        for (int64_t j = std::max<int64_t>(w - 1, 0); j <= std::min(w + 1, W - 1); ++j) {
          const float* xi = xn + (i * W + j) * C;
          float* di = dn + (i * W + j) * C;
#pragma omp simd
          for (int64_t k = 0; k < C; ++k) {
            const bool match = (xi[k] == yo[k]) | ((yo[k] != yo[k]) & (xi[k] != xi[k]));
            const bool hit = match & (taken[k] == 0);
            di[k] += hit ? go[k] : 0.f;
            taken[k] |= hit;
          }
        }
    }
}
}  // namespace

void max_pool3x3s1_backward(const float* x, const float* y, const float* dy,
                            float* dx, int64_t images, int64_t H, int64_t W,
                            int64_t C, bool accumulate) {
  // Each window's gradient goes to its first input (row-major) equal to the
  // maximum, or to its first NaN when the maximum is NaN: Paddle's rule.
  // Indices are int32 (an image has < 2^31 values, checked by the op).
  // Vectorized along the contiguous axis: whole planes when C == 1 (NCHW),
  // the channels otherwise (NHWC).
  const int64_t n = H * W * C;
  std::vector<int32_t> col;
  if (C == 1) {
    col.resize(n);
    for (int64_t o = 0; o < n; ++o) col[o] = static_cast<int32_t>(o % W);
  }
#pragma omp parallel
  {
    std::vector<int32_t> at(C == 1 ? n : C);
#pragma omp for schedule(static)
    for (int64_t im = 0; im < images; ++im) {
      float* dxp = dx + im * n;
      if (!accumulate) std::memset(dxp, 0, sizeof(float) * n);
      if (C == 1)
        pool_plane_backward(x + im * n, y + im * n, dy + im * n, dxp,
                            static_cast<int32_t>(H), static_cast<int32_t>(W),
                            col.data(), at.data());
      else
        pool_pixels_backward(x + im * n, y + im * n, dy + im * n, dxp, H, W, C,
                             at.data());
    }
  }
}

}  // namespace fastconv
