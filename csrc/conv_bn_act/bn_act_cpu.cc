#include "conv_bn_act/bn_act_cpu.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/vector_clones.h"

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

// The ReLU mask on the gradient, with Paddle's relu_grad convention: dy where
// y > 0, else +0, as a bit mask. GCC keeps a float select such as
// `y > 0 ? dy : 0` as a branch in some loops (with floating-point traps
// assumed), which on a random ReLU mask mispredicts per element; an integer
// AND vectorizes.
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
// row is one (image, channel) plane of `inner` elements. fn(r0, r1, acc) adds
// rows [r0, r1), the thread's range, into its nvals * C sums acc.
template <typename RangeFn>
void reduce_rows(int64_t rows, int64_t C, int nvals, std::vector<double>& out,
                 RangeFn fn) {
  const int nt = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows)));
  const size_t width = static_cast<size_t>(nvals) * C;
  std::vector<double> part(static_cast<size_t>(nt) * width, 0.0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    fn(rows * t / nt, rows * (t + 1) / nt,
       part.data() + static_cast<size_t>(t) * width);
  }
  out.assign(width, 0.0);
  for (int t = 0; t < nt; ++t)
    for (size_t k = 0; k < width; ++k)
      out[k] += part[static_cast<size_t>(t) * width + k];
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

// ------------------------------------------------------------ span kernels
//
// The loops over one NCHW plane or a run of NHWC pixels, as functions cloned
// for AVX-512/AVX2 (common/vector_clones.h: the build targets baseline x86-64,
// and the lambdas of the reductions below are not cloned with their caller).
// Their bodies are branch-free over the contiguous axis so they vectorize.
// NHWC reductions add up to kPixelBlock pixels per channel in float and then
// into the thread's double sums: the per-element double accumulation they
// replace ran at 7 GB/s (batch statistics of a 56x56x256 map, batch 8: 3.8 ms
// where the normalize pass, reading and writing it, took 2.3 ms). The clones
// sum in another order (16 lanes, FMA) than the baseline code, so their
// results differ from it in the last bits; a pre-activation within rounding
// of zero can then fall on the other side of a ReLU, as it can between any
// two engines (tests/distributed/dp_train.py).

constexpr int64_t kPixelBlock = 64;

FC_VECTOR_CLONES
void stats_plane(const float* p, int64_t I, float k, float* r) {
  float r1 = 0.f, r2 = 0.f;
#pragma omp simd reduction(+ : r1, r2)
  for (int64_t i = 0; i < I; ++i) {
    const float d = p[i] - k;
    r1 += d;
    r2 += d * d;
  }
  r[0] = r1;
  r[1] = r2;
}

FC_VECTOR_CLONES
void stats_pixels(const float* z, int64_t zs, int64_t rows, int64_t C,
                  const float* shift, float* s1, float* s2) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = z + r * zs;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float d = p[c] - shift[c];
      s1[c] += d;
      s2[c] += d * d;
    }
  }
}

FC_VECTOR_CLONES
void sum_plane(const float* p, int64_t I, float* r) {
  float r1 = 0.f;
#pragma omp simd reduction(+ : r1)
  for (int64_t i = 0; i < I; ++i) r1 += p[i];
  r[0] = r1;
}

FC_VECTOR_CLONES
void sum_pixels(const float* t, int64_t ts, int64_t rows, int64_t C,
                float* s1) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = t + r * ts;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) s1[c] += p[c];
  }
}

FC_VECTOR_CLONES
void forward_plane(const float* z, const float* res, float a, float b,
                   bool relu, float* y, int64_t I) {
  if (res && relu) {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const float t = z[i] * a + b + res[i];
      y[i] = t > 0.f ? t : 0.f;
    }
  } else if (res) {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) y[i] = z[i] * a + b + res[i];
  } else if (relu) {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const float t = z[i] * a + b;
      y[i] = t > 0.f ? t : 0.f;
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) y[i] = z[i] * a + b;
  }
}

FC_VECTOR_CLONES
void forward_pixel(const float* z, const float* res, const float* a,
                   const float* b, bool relu, float* y, int64_t C) {
  if (res && relu) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float t = z[c] * a[c] + b[c] + res[c];
      y[c] = t > 0.f ? t : 0.f;
    }
  } else if (res) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = z[c] * a[c] + b[c] + res[c];
  } else if (relu) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float t = z[c] * a[c] + b[c];
      y[c] = t > 0.f ? t : 0.f;
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) y[c] = z[c] * a[c] + b[c];
  }
}

FC_VECTOR_CLONES
void backward_reduce_plane(const float* dp, const float* yp, const float* zp,
                           int64_t I, float mc, bool relu, float* r) {
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
  r[0] = r1;
  r[1] = r2;
}

FC_VECTOR_CLONES
void backward_reduce_pixels(const float* dy, int64_t dys, const float* y,
                            int64_t ys, const float* z, int64_t zs,
                            int64_t rows, int64_t C, const float* mean,
                            bool relu, float* s1, float* s2) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* dp = dy + r * dys;
    const float* yp = y + r * ys;
    const float* zp = z + r * zs;
    if (relu) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const float g = relu_mask_bits(dp[c], yp[c]);
        s1[c] += g;
        s2[c] += g * (zp[c] - mean[c]);
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        s1[c] += dp[c];
        s2[c] += dp[c] * (zp[c] - mean[c]);
      }
    }
  }
}

// dz = k1 * (g - k3) + k2 * (z - mean), dres = g; one NCHW plane (scalar
// coefficients: backward_apply_plane) or one NHWC pixel (per-channel arrays:
// backward_apply_pixel).
FC_VECTOR_CLONES
void backward_apply_plane(const float* dp, const float* yp, const float* zp,
                          float a, float b, float d, float m, bool relu,
                          float* dzp, float* drp, int64_t I) {
  if (dzp && drp) {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const float g = relu ? relu_mask_bits(dp[i], yp[i]) : dp[i];
      dzp[i] = a * (g - d) + b * (zp[i] - m);
      drp[i] = g;
    }
  } else if (dzp) {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i) {
      const float g = relu ? relu_mask_bits(dp[i], yp[i]) : dp[i];
      dzp[i] = a * (g - d) + b * (zp[i] - m);
    }
  } else {
#pragma omp simd
    for (int64_t i = 0; i < I; ++i)
      drp[i] = relu ? relu_mask_bits(dp[i], yp[i]) : dp[i];
  }
}

FC_VECTOR_CLONES
void backward_apply_pixel(const float* dp, const float* yp, const float* zp,
                          const float* k1, const float* k2, const float* k3,
                          const float* mean, bool relu, float* dzp, float* drp,
                          int64_t C) {
  if (dzp && drp) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float g = relu ? relu_mask_bits(dp[c], yp[c]) : dp[c];
      dzp[c] = k1[c] * (g - k3[c]) + k2[c] * (zp[c] - mean[c]);
      drp[c] = g;
    }
  } else if (dzp) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const float g = relu ? relu_mask_bits(dp[c], yp[c]) : dp[c];
      dzp[c] = k1[c] * (g - k3[c]) + k2[c] * (zp[c] - mean[c]);
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c)
      drp[c] = relu ? relu_mask_bits(dp[c], yp[c]) : dp[c];
  }
}

// NCHW reductions add each plane in float chunks of kPlaneBlock elements
// (vectorized), each chunk into the thread's double sums: a float sum over a
// whole plane loses digits as the plane grows (a 1x1 NCHW training step over
// one plane of 2^29 elements gave outputs up to 62% off through its batch
// statistics, tests/test_large_tensors.py).
constexpr int64_t kPlaneBlock = 4096;

// fn(i0, n) for the chunks [i0, i0 + n) of a plane of I elements.
template <typename ChunkFn>
void for_plane_chunks(int64_t I, ChunkFn fn) {
  for (int64_t i0 = 0; i0 < I; i0 += kPlaneBlock)
    fn(i0, std::min(kPlaneBlock, I - i0));
}

// reduce_rows over NCHW planes: plane_fn(row, acc) per plane.
template <typename PlaneFn>
void reduce_planes(int64_t rows, int64_t C, int nvals, std::vector<double>& out,
                   PlaneFn plane_fn) {
  reduce_rows(rows, C, nvals, out, [&](int64_t r0, int64_t r1, double* acc) {
    for (int64_t r = r0; r < r1; ++r) plane_fn(r, acc);
  });
}

// reduce_rows over NHWC pixels in blocks of up to kPixelBlock: block_fn(b0,
// b1, f) adds pixels [b0, b1) into the nvals * C floats f (zeroed per block),
// which are then added into the thread's double sums.
template <typename BlockFn>
void reduce_pixels(int64_t rows, int64_t C, int nvals, std::vector<double>& out,
                   BlockFn block_fn) {
  const size_t width = static_cast<size_t>(nvals) * C;
  reduce_rows(rows, C, nvals, out, [&](int64_t r0, int64_t r1, double* acc) {
    std::vector<float> f(width);
    for (int64_t b0 = r0; b0 < r1; b0 += kPixelBlock) {
      std::fill(f.begin(), f.end(), 0.f);
      block_fn(b0, std::min(r1, b0 + kPixelBlock), f.data());
      for (size_t k = 0; k < width; ++k) acc[k] += f[k];
    }
  });
}

}  // namespace

// ----------------------------------------------------------------- kernels

void channel_stats(const float* z, ChannelView v, float* mean, float* var,
                   const RowStrides& s) {
  const int64_t C = v.channels, I = v.inner, zs = dense_or(s.z, v);
  const double n = static_cast<double>(v.count());
  std::vector<double> sums;
  std::vector<float> shift(C);
  if (I > 1) {
    // NCHW: shift by each channel's first value (image 0) for accuracy; each
    // plane is summed in float, the planes in double.
    for (int64_t c = 0; c < C; ++c) shift[c] = z[c * I];
    reduce_planes(v.outer * C, C, 2, sums, [&](int64_t row, double* acc) {
      const int64_t c = row % C;
      const float* p = z + plane_at(row, C, I, zs);
      for_plane_chunks(I, [&](int64_t i0, int64_t n) {
        float r[2];
        stats_plane(p + i0, n, shift[c], r);
        acc[c] += r[0];
        acc[C + c] += r[1];
      });
    });
  } else {
    // NHWC: channels contiguous within a pixel.
    for (int64_t c = 0; c < C; ++c) shift[c] = z[c];
    reduce_pixels(v.outer, C, 2, sums, [&](int64_t r0, int64_t r1, float* f) {
      stats_pixels(z + r0 * zs, zs, r1 - r0, C, shift.data(), f, f + C);
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
    reduce_planes(v.outer * C, C, 1, out, [&](int64_t row, double* acc) {
      const float* p = t + plane_at(row, C, I, ts);
      for_plane_chunks(I, [&](int64_t i0, int64_t n) {
        float r;
        sum_plane(p + i0, n, &r);
        acc[row % C] += r;
      });
    });
  } else {
    reduce_pixels(v.outer, C, 1, out, [&](int64_t r0, int64_t r1, float* f) {
      sum_pixels(t + r0 * ts, ts, r1 - r0, C, f);
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
      forward_plane(z + plane_at(row, C, I, zs),
                    residual ? residual + plane_at(row, C, I, rs) : nullptr,
                    a[c], b[c], relu, y + plane_at(row, C, I, ys), I);
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < v.outer; ++r)
    forward_pixel(z + r * zs, residual ? residual + r * rs : nullptr, a, b,
                  relu, y + r * ys, C);
}

void bias_act_rows(float* y, const float* residual, const float* bias,
                   bool relu, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r)
    forward_plane(y + r * ld, residual ? residual + r * ld : nullptr, 1.f,
                  bias[r], relu, y + r * ld, cols);
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
    reduce_planes(v.outer * C, C, 2, sums, [&](int64_t row, double* acc) {
      const int64_t c = row % C;
      const float* dp = dy + plane_at(row, C, I, dys);
      const float* yp = y + plane_at(row, C, I, ys);
      const float* zp = z + plane_at(row, C, I, zs);
      for_plane_chunks(I, [&](int64_t i0, int64_t n) {
        float r[2];
        backward_reduce_plane(dp + i0, yp + i0, zp + i0, n, mean[c], relu, r);
        acc[c] += r[0];
        acc[C + c] += r[1];
      });
    });
  } else {
    reduce_pixels(v.outer, C, 2, sums, [&](int64_t r0, int64_t r1, float* f) {
      backward_reduce_pixels(dy + r0 * dys, dys, y + r0 * ys, ys, z + r0 * zs,
                             zs, r1 - r0, C, mean, relu, f, f + C);
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
  if (!dz && !dres) return;
  if (I > 1) {
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < v.outer * C; ++row) {
      const int64_t c = row % C;
      backward_apply_plane(dy + plane_at(row, C, I, dys),
                           y + plane_at(row, C, I, ys),
                           z + plane_at(row, C, I, zs), k1[c], k2[c], k3[c],
                           mean[c], relu,
                           dz ? dz + plane_at(row, C, I, dzs) : nullptr,
                           dres ? dres + plane_at(row, C, I, rs) : nullptr, I);
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < v.outer; ++r)
    backward_apply_pixel(dy + r * dys, y + r * ys, z + r * zs, k1, k2, k3,
                         mean, relu, dz ? dz + r * dzs : nullptr,
                         dres ? dres + r * rs : nullptr, C);
}

}  // namespace cpu
}  // namespace fastconv
