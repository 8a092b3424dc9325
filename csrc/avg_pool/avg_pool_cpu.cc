// Average pooling, NHWC in, NCHW out (CPU). The sums run over the contiguous
// channels (vectorized); only the small output is written with a stride.
// Windows and divisors follow Paddle's avg_pool2d (floor mode): a window
// starts at o * stride - padding, is clipped to the image, and divides by its
// clipped size (exclusive) or by kh * kw.
#include "avg_pool/avg_pool.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/vector_clones.h"

namespace fastconv {
namespace {

struct Window {
  int64_t h0, h1, w0, w1;
  float scale;  // 1 / divisor
};

Window window(const AvgPoolGeometry& g, int64_t oh, int64_t ow) {
  Window win;
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  win.h0 = std::max<int64_t>(hs, 0);
  win.h1 = std::min<int64_t>(hs + g.kh, g.H);
  win.w0 = std::max<int64_t>(ws, 0);
  win.w1 = std::min<int64_t>(ws + g.kw, g.W);
  const int64_t n = g.exclusive ? (win.h1 - win.h0) * (win.w1 - win.w0) : g.kh * g.kw;
  win.scale = n > 0 ? 1.f / static_cast<float>(n) : 0.f;
  return win;
}

}  // namespace

FC_VECTOR_CLONES
void avg_pool_nhwc_to_nchw_forward(const float* x, float* y,
                                   const AvgPoolGeometry& g) {
  const int64_t C = g.C, plane = g.OH * g.OW;
#pragma omp parallel
  {
    std::vector<float> acc(C);
#pragma omp for schedule(static) collapse(2)
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const Window win = window(g, oh, ow);
          float* a = acc.data();
          std::fill(a, a + C, 0.f);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) {
              const float* xv = x + ((n * g.H + h) * g.W + w) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) a[c] += xv[c];
            }
          float* yo = y + n * C * plane + oh * g.OW + ow;
          for (int64_t c = 0; c < C; ++c) yo[c * plane] = a[c] * win.scale;
        }
  }
}

FC_VECTOR_CLONES
void avg_pool_nhwc_to_nchw_backward(const float* dy, float* dx,
                                    const AvgPoolGeometry& g) {
  const int64_t C = g.C, plane = g.OH * g.OW;
  // Windows overlap when stride < kernel: each thread owns whole images.
#pragma omp parallel
  {
    std::vector<float> grad(C);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      float* dxn = dx + n * g.H * g.W * C;
      std::memset(dxn, 0, sizeof(float) * g.H * g.W * C);
      for (int64_t oh = 0; oh < g.OH; ++oh)
        for (int64_t ow = 0; ow < g.OW; ++ow) {
          const Window win = window(g, oh, ow);
          const float* go = dy + n * C * plane + oh * g.OW + ow;
          float* gv = grad.data();
          for (int64_t c = 0; c < C; ++c) gv[c] = go[c * plane] * win.scale;
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) {
              float* d = dxn + (h * g.W + w) * C;
#pragma omp simd
              for (int64_t c = 0; c < C; ++c) d[c] += gv[c];
            }
        }
    }
  }
}

}  // namespace fastconv
