// Max pooling on the CPU, forward (with the argmax of every output) and
// backward (gradient routed to the argmax). Paddle's own NHWC max pool is
// about 3x slower than its NCHW one; the NHWC kernels are the pool of the
// channels_last ResNet stem (channels are the innermost, contiguous axis: the
// inner loops run over them and vectorize). The NCHW kernels serve the
// Inception op's pool branch. Ties: the first maximum in row-major window
// order wins, as in Paddle's max pool; NaN propagates.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "max_pool/max_pool.h"

namespace fastconv {

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
              // branch-free, so it vectorizes: v > m, or v is NaN and m not
              const bool take = (v > m) | ((v != v) & (m == m));
              yo[c] = take ? v : m;
              ao[c] = take ? idx : ao[c];
            }
          }
        }
      }
    }
  }
}

void max_pool_nhwc_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p, bool accumulate) {
  const int64_t C = p.C;
  // Windows overlap across output rows, so each thread owns whole images.
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < p.N; ++n) {
    float* dxn = dx + n * p.H * p.W * C;
    if (!accumulate) std::memset(dxn, 0, sizeof(float) * p.H * p.W * C);
    const int64_t base = n * p.OH * p.OW * C;
    for (int64_t o = 0; o < p.OH * p.OW; ++o) {
      const float* g = dy + base + o * C;
      const int32_t* a = argmax + base + o * C;
      for (int64_t c = 0; c < C; ++c) dxn[static_cast<int64_t>(a[c]) * C + c] += g[c];
    }
  }
}

void max_pool_nchw_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p) {
  // One (image, channel) plane per iteration.
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
    const float* xp = x + nc * p.H * p.W;
    float* yp = y + nc * p.OH * p.OW;
    int32_t* ap = argmax + nc * p.OH * p.OW;
    for (int64_t oh = 0; oh < p.OH; ++oh) {
      const int64_t h0 = std::max<int64_t>(oh * p.sh - p.ph, 0);
      const int64_t h1 = std::min<int64_t>(oh * p.sh - p.ph + p.kh, p.H);
      for (int64_t ow = 0; ow < p.OW; ++ow) {
        const int64_t w0 = std::max<int64_t>(ow * p.sw - p.pw, 0);
        const int64_t w1 = std::min<int64_t>(ow * p.sw - p.pw + p.kw, p.W);
        float m = -std::numeric_limits<float>::infinity();
        int32_t a = static_cast<int32_t>(h0 * p.W + w0);
        for (int64_t h = h0; h < h1; ++h)
          for (int64_t w = w0; w < w1; ++w) {
            const float v = xp[h * p.W + w];
            if ((v > m) || (v != v && m == m)) {
              m = v;
              a = static_cast<int32_t>(h * p.W + w);
            }
          }
        yp[oh * p.OW + ow] = m;
        ap[oh * p.OW + ow] = a;
      }
    }
  }
}

void max_pool_nchw_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < p.N * p.C; ++nc) {
    float* dxp = dx + nc * p.H * p.W;
    if (!accumulate) std::memset(dxp, 0, sizeof(float) * p.H * p.W);
    const float* g = dy + nc * p.OH * p.OW;
    const int32_t* a = argmax + nc * p.OH * p.OW;
    for (int64_t o = 0; o < p.OH * p.OW; ++o) dxp[a[o]] += g[o];
  }
}

}  // namespace fastconv
