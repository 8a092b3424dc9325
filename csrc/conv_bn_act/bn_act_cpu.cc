#include "conv_bn_act/bn_act_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace fastconv {
namespace cpu {

int num_threads() { return omp_get_max_threads(); }

void bn_affine_coefficients(const float* gamma, const float* beta,
                            const float* mean, const float* invstd,
                            int64_t channels, float* a, float* b) {
  for (int64_t c = 0; c < channels; ++c) {
    a[c] = gamma[c] * invstd[c];
    b[c] = beta[c] - mean[c] * a[c];
  }
}

void bn_backward_coefficients(const float* gamma, const float* invstd,
                              const double* sum_g, const double* sum_gxmu,
                              double count, bool batch_stats, int64_t channels,
                              float* k1, float* k2, float* k3) {
  for (int64_t c = 0; c < channels; ++c) {
    const double is = invstd[c], gm = gamma[c];
    k1[c] = static_cast<float>(gm * is);
    k2[c] = batch_stats
                ? static_cast<float>(-gm * is * is * is * sum_gxmu[c] / count)
                : 0.f;
    k3[c] = batch_stats ? static_cast<float>(sum_g[c] / count) : 0.f;
  }
}
void set_num_threads(int n) { omp_set_num_threads(std::max(1, n)); }

namespace {

// Relu mask on the gradient, with Paddle's relu_grad convention (out > 0).
inline float masked(float dy, float y, bool relu) {
  return relu ? (y > 0.f ? dy : 0.f) : dy;
}

// dy where y > 0, else +0 (as `masked`), as a bit mask: GCC keeps a float
// select such as `y > 0 ? dy : 0` as a branch in some loops (with floating-
// point traps assumed), which on a random ReLU mask mispredicts per element;
// an integer AND vectorizes.
inline float relu_mask_bits(float dy, float y) {
  uint32_t bits;
  std::memcpy(&bits, &dy, sizeof bits);
  bits &= y > 0.f ? 0xffffffffu : 0u;
  float g;
  std::memcpy(&g, &bits, sizeof g);
  return g;
}

// Per-channel reductions: each thread streams through one contiguous range of
// `rows` in memory order (prefetch-friendly; a channel-parallel loop would
// hop between N strided streams per array) into its own per-channel arrays;
// the partials are then summed in thread order, so results are deterministic
// for a fixed thread count. NHWC: a row is one pixel (C channels); NCHW: a
// row is one (image, channel) plane of `inner` elements.
template <typename RowFn>
void reduce_rows(int64_t rows, int64_t C, int nvals, std::vector<double>& out,
                 RowFn fn) {
  const int nt = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows)));
  std::vector<double> part(static_cast<size_t>(nt) * nvals * C, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    const int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
    double* acc = part.data() + static_cast<size_t>(t) * nvals * C;
    for (int64_t r = lo; r < hi; ++r) fn(r, acc);
  }
  out.assign(static_cast<size_t>(nvals) * C, 0.0);
  for (int t = 0; t < nt; ++t)
    for (int64_t k = 0; k < nvals * C; ++k)
      out[k] += part[static_cast<size_t>(t) * nvals * C + k];
}

// Row strides: the given one, or the dense one.
inline int64_t dense_or(int64_t stride, const ChannelView& v) {
  return stride ? stride : v.channels * v.inner;
}

// NCHW: start of plane `row` (= image * C + channel) in an array whose images
// are `stride` apart.
inline int64_t plane_at(int64_t row, int64_t C, int64_t I, int64_t stride) {
  return (row / C) * stride + (row % C) * I;
}

}  // namespace

void channel_stats(const float* z, ChannelView v, float* mean, float* var,
                   const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner, zs = dense_or(s.z, v);
  const double n = static_cast<double>(v.count());
  std::vector<double> sums;
  std::vector<float> shift(C);
  if (I > 1) {
    // NCHW: shift by each channel's first value (image 0) for accuracy.
    for (int64_t c = 0; c < C; ++c) shift[c] = z[c * I];
    reduce_rows(v.outer * C, C, 2, sums, [&](int64_t row, double* acc) {
      const int64_t c = row % C;
      const float* p = z + plane_at(row, C, I, zs);
      const float k = shift[c];
      float r1 = 0.f, r2 = 0.f;  // one plane in float, vectorized
#pragma omp simd reduction(+ : r1, r2)
      for (int64_t i = 0; i < I; ++i) {
        const float d = p[i] - k;
        r1 += d;
        r2 += d * d;
      }
      acc[c] += r1;
      acc[C + c] += r2;
    });
  } else {
    // NHWC: channels contiguous within a row.
    for (int64_t c = 0; c < C; ++c) shift[c] = z[c];
    reduce_rows(v.outer, C, 2, sums, [&](int64_t r, double* acc) {
      const float* p = z + r * zs;
      double* a1 = acc;
      double* a2 = acc + C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const double d = static_cast<double>(p[c] - shift[c]);
        a1[c] += d;
        a2[c] += d * d;
      }
    });
  }
  for (int64_t c = 0; c < C; ++c) {
    const double m = sums[c] / n;
    mean[c] = static_cast<float>(shift[c] + m);
    var[c] = static_cast<float>(std::max(0.0, sums[C + c] / n - m * m));
  }
}

void channel_sum(const float* t, ChannelView v, double* sums,
                 const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner, ts = dense_or(s.dz, v);
  std::vector<double> out;
  if (I > 1) {
    reduce_rows(v.outer * C, C, 1, out, [&](int64_t row, double* acc) {
      const float* p = t + plane_at(row, C, I, ts);
      float r = 0.f;
#pragma omp simd reduction(+ : r)
      for (int64_t i = 0; i < I; ++i) r += p[i];
      acc[row % C] += r;
    });
  } else {
    reduce_rows(v.outer, C, 1, out, [&](int64_t r, double* acc) {
      const float* p = t + r * ts;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) acc[c] += p[c];
    });
  }
  for (int64_t c = 0; c < C; ++c) sums[c] = out[c];
}

void bn_act_forward(const float* z, const float* residual, const float* a,
                    const float* b, bool relu, float* y, ChannelView v,
                    const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner;
  const int64_t zs = dense_or(s.z, v), ys = dense_or(s.y, v),
                rs = dense_or(s.res, v);
  if (I > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < v.outer * C; ++row) {
      const int64_t c = row % C;
      const float ac = a[c], bc = b[c];
      const float* zp = z + plane_at(row, C, I, zs);
      const float* rp = residual ? residual + plane_at(row, C, I, rs) : nullptr;
      float* yp = y + plane_at(row, C, I, ys);
      if (rp) {
#pragma omp simd
        for (int64_t i = 0; i < I; ++i) {
          const float t = zp[i] * ac + bc + rp[i];
          yp[i] = relu ? (t > 0.f ? t : 0.f) : t;
        }
      } else {
#pragma omp simd
        for (int64_t i = 0; i < I; ++i) {
          const float t = zp[i] * ac + bc;
          yp[i] = relu ? (t > 0.f ? t : 0.f) : t;
        }
      }
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < v.outer; ++r) {
    const float* zp = z + r * zs;
    const float* rp = residual ? residual + r * rs : nullptr;
    float* yp = y + r * ys;
    if (rp) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float t = zp[c] * a[c] + b[c] + rp[c];
        yp[c] = relu ? (t > 0.f ? t : 0.f) : t;
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float t = zp[c] * a[c] + b[c];
        yp[c] = relu ? (t > 0.f ? t : 0.f) : t;
      }
    }
  }
}

void bn_act_backward_reduce(const float* dy, const float* y, const float* z,
                            const float* mean, bool relu, ChannelView v,
                            double* sum_g, double* sum_gxmu,
                            const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner;
  const int64_t dys = dense_or(s.dy, v), ys = dense_or(s.y, v),
                zs = dense_or(s.z, v);
  std::vector<double> sums;
  if (I > 1) {
    reduce_rows(v.outer * C, C, 2, sums, [&](int64_t row, double* acc) {
      const int64_t c = row % C;
      const float* dp = dy + plane_at(row, C, I, dys);
      const float* yp = y + plane_at(row, C, I, ys);
      const float* zp = z + plane_at(row, C, I, zs);
      const float mc = mean[c];
      float r1 = 0.f, r2 = 0.f;
      if (relu) {
#pragma omp simd reduction(+ : r1, r2)
        for (int64_t i = 0; i < I; ++i) {
          const float g = relu_mask_bits(dp[i], yp[i]);
          r1 += g;
          r2 += g * (zp[i] - mc);
        }
      } else {
#pragma omp simd reduction(+ : r1, r2)
        for (int64_t i = 0; i < I; ++i) {
          r1 += dp[i];
          r2 += dp[i] * (zp[i] - mc);
        }
      }
      acc[c] += r1;
      acc[C + c] += r2;
    });
  } else {
    reduce_rows(v.outer, C, 2, sums, [&](int64_t r, double* acc) {
      const float* dp = dy + r * dys;
      const float* yp = y + r * ys;
      const float* zp = z + r * zs;
      double* a1 = acc;
      double* a2 = acc + C;
      if (relu) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const float g = relu_mask_bits(dp[c], yp[c]);
          a1[c] += g;
          a2[c] += static_cast<double>(g * (zp[c] - mean[c]));
        }
      } else {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          a1[c] += dp[c];
          a2[c] += static_cast<double>(dp[c] * (zp[c] - mean[c]));
        }
      }
    });
  }
  for (int64_t c = 0; c < C; ++c) {
    sum_g[c] = sums[c];
    sum_gxmu[c] = sums[C + c];
  }
}

void bn_act_backward_apply(const float* dy, const float* y, const float* z,
                           const float* mean, const float* k1, const float* k2,
                           const float* k3, bool relu, ChannelView v, float* dz,
                           float* dres, const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner;
  const int64_t dys = dense_or(s.dy, v), ys = dense_or(s.y, v),
                zs = dense_or(s.z, v), dzs = dense_or(s.dz, v),
                rs = dense_or(s.res, v);
  if (I > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < v.outer * C; ++row) {
      const int64_t c = row % C;
      const float* dp = dy + plane_at(row, C, I, dys);
      const float* yp = y + plane_at(row, C, I, ys);
      const float* zp = z + plane_at(row, C, I, zs);
      float* dzp = dz ? dz + plane_at(row, C, I, dzs) : nullptr;
      float* drp = dres ? dres + plane_at(row, C, I, rs) : nullptr;
      const float a = k1[c], b = k2[c], d = k3[c], m = mean[c];
      for (int64_t i = 0; i < I; ++i) {
        const float g = masked(dp[i], relu ? yp[i] : 1.f, relu);
        if (dzp) dzp[i] = a * (g - d) + b * (zp[i] - m);
        if (drp) drp[i] = g;
      }
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < v.outer; ++r) {
    const float* dp = dy + r * dys;
    const float* yp = y + r * ys;
    const float* zp = z + r * zs;
    float* dzp = dz ? dz + r * dzs : nullptr;
    float* drp = dres ? dres + r * rs : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      const float g = masked(dp[c], relu ? yp[c] : 1.f, relu);
      if (dzp) dzp[c] = k1[c] * (g - k3[c]) + k2[c] * (zp[c] - mean[c]);
      if (drp) drp[c] = g;
    }
  }
}

}  // namespace cpu
}  // namespace fastconv
