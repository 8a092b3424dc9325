// CPU kernels for the memory-bound work around the convolution: batch
// statistics, normalize+residual+ReLU, and their backward, on Paddle's plain
// layouts. OpenMP-parallel with static schedules, so results are bitwise
// reproducible for a fixed thread count.
//
// Layout view: element (o, c, i) is at (o * channels + c) * inner + i.
//   NCHW: outer = N, inner = H*W;   NHWC: outer = N*H*W, inner = 1.
#pragma once

#include <cstdint>

namespace fastconv {
namespace cpu {

struct ChannelView {
  int64_t outer;
  int64_t channels;
  int64_t inner;
  int64_t count() const { return outer * inner; }  // per channel
};

// Distance between consecutive `outer` rows of each array in a kernel call;
// 0 means dense (channels * inner). Non-dense strides let the kernels read and
// write a channel slice of a bigger tensor: the Inception op's branches write
// their slice of the concatenated output directly.
struct RowStrides {
  int64_t z = 0, y = 0, dy = 0, dz = 0, res = 0;
};

// The view of a [N, C, H, W] (nhwc=false) or [N, H, W, C] tensor.
inline ChannelView view_of_4d(int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                              bool nhwc) {
  return nhwc ? ChannelView{d0 * d1 * d2, d3, 1} : ChannelView{d0, d1, d2 * d3};
}

// Normalize as one affine map per channel: a = gamma * invstd,
// b = beta - mean * a (then y = act(z * a + b ...), see bn_act_forward).
void bn_affine_coefficients(const float* gamma, const float* beta,
                            const float* mean, const float* invstd,
                            int64_t channels, float* a, float* b);

// The coefficients of bn_act_backward_apply from the reductions of
// bn_act_backward_reduce over `count` values per channel: k1 = gamma * invstd;
// with batch statistics k2 = -gamma * invstd^3 * sum_gxmu / count and
// k3 = sum_g / count (the mean gradient), with running statistics
// k2 = k3 = 0.
void bn_backward_coefficients(const float* gamma, const float* invstd,
                              const double* sum_g, const double* sum_gxmu,
                              double count, bool batch_stats, int64_t channels,
                              float* k1, float* k2, float* k3);

// Per-channel mean and biased variance (sums of values shifted by each
// channel's first value, in float over one NCHW plane or 64 NHWC pixels, then
// in double: accurate for large counts and means far from zero).
void channel_stats(const float* z, ChannelView v, float* mean, float* var,
                   const RowStrides& s = {});

// y = act(z * a[c] + b[c] (+ residual[...])). residual may be null; y may
// alias z.
void bn_act_forward(const float* z, const float* residual, const float* a,
                    const float* b, bool relu, float* y, ChannelView v,
                    const RowStrides& s = {});

// Rows of a matrix at stride ld: y[r, 0:cols] = act(y[r, :] + bias[r]
// (+ residual[r, :])), r < rows; residual (same stride) may be null. Serial:
// for an epilogue applied by each thread to the tile it has just computed.
void bias_act_rows(float* y, const float* residual, const float* bias,
                   bool relu, int64_t rows, int64_t cols, int64_t ld);

// g = relu ? (y > 0 ? dy : 0) : dy;
// sum_g[c] = sum g, sum_gxmu[c] = sum g * (z - mean[c]).
void bn_act_backward_reduce(const float* dy, const float* y, const float* z,
                            const float* mean, bool relu, ChannelView v,
                            double* sum_g, double* sum_gxmu,
                            const RowStrides& s = {});

// dz = k1[c] * (g - k3[c]) + k2[c] * (z - mean[c]); dres = g when not null.
// (The mean gradient is subtracted before scaling, as stock Paddle does:
// where g is close to its mean, scaling first and subtracting two large
// products loses digits.)
// dz may be null (only dres wanted).
void bn_act_backward_apply(const float* dy, const float* y, const float* z,
                           const float* mean, const float* k1, const float* k2,
                           const float* k3, bool relu, ChannelView v, float* dz,
                           float* dres, const RowStrides& s = {});

// sums[c] = sum of t over channel c.
void channel_sum(const float* t, ChannelView v, double* sums,
                 const RowStrides& s = {});

// Number of OpenMP threads the kernels (and oneDNN) use from this thread.
int num_threads();
void set_num_threads(int n);

}  // namespace cpu
}  // namespace fastconv
