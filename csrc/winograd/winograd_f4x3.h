// Winograd F(4x4, 3x3) convolution for the CPU engine's eval path: 3x3,
// stride 1, dilation 1, ungrouped convolutions with channel counts that are
// multiples of 16, plus the fused epilogue (bias, residual, ReLU).
//
// Why: a direct 3x3 convolution spends 9 multiply-adds per output pixel and
// channel pair; F(4x4, 3x3) spends 36 per 4x4 output tile, 2.25 per pixel:
// 4x fewer (the transforms add a little, linear in C + O). oneDNN 3.x ships no fp32
// Winograd kernel for x86, and its direct kernels already run near this
// CPU's peak, so fewer multiplications is the only way left to go faster.
// The algorithm (Lavin and Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016): per input tile d (6x6) and filter g (3x3),
//   y = A^T [ (G g G^T) .* (B^T d B) ] A,
// where the elementwise product over the 36 positions, summed over input
// channels, is 36 independent GEMMs [tiles x C] . [C x O].
//
// Each thread takes blocks of tiles through three steps while they are in
// its cache: input transform into V[36][tiles][C], the 36 GEMMs into
// M[36][tiles][O] (an AVX-512 register-blocked kernel), then the output
// transform with bias, residual and ReLU straight into y.
//
// Accuracy: the transforms' constants (up to 8 and 1/24) cost about 2-3
// bits over a direct convolution in fp32. Measured with unit-scale random
// inputs, the largest error relative to the largest output, against a
// float64 convolution (2000 sampled outputs): 3.4e-6 at 64 input channels,
// 5.4e-6 at 128, 6.5e-6 at 256, 1.2e-5 at 512; the fused eval layer against
// stock Paddle: 2-8e-6 (oneDNN's direct kernel: 5e-7 to 1e-6). The tests'
// fp32 output tolerance (2e-5 of the largest output) holds without change.
//
// Activations are handed over as "channel-vectorized" layouts: 16 channels
// of one pixel are contiguous, and the address of the 16-channel vector of
// (image n, channel block cb, row y, column x) is
//   base + n*n_stride + cb*cb_stride + y*y_stride + x*x_stride   (floats).
// NHWC is one (cb_stride 16, x_stride C), oneDNN's nChw16c another.
// Plain C++ on raw pointers: no Paddle or oneDNN types.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {
namespace winograd {

struct VecLayout {
  int64_t n_stride = 0, cb_stride = 0, y_stride = 0, x_stride = 0;
  static VecLayout nhwc(int64_t C, int64_t H, int64_t W) {
    return {H * W * C, 16, W * C, C};
  }
  static VecLayout nchw16c(int64_t C, int64_t H, int64_t W) {
    return {C * H * W, H * W * 16, W * 16, 16};
  }
};

struct F4x3Problem {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t O = 0, OH = 0, OW = 0;       // output
  int64_t pad_top = 0, pad_left = 0;   // other sides: zero beyond the input
  VecLayout src, dst;                  // dst also describes the residual
};

// Whether this build and this CPU run the kernels (x86-64 with AVX-512F).
bool cpu_supported();

// Whether the kernels take a convolution of these channel counts (both
// multiples of 16).
bool channels_supported(int64_t C, int64_t O);

// Floats of the transformed filters of a C -> O convolution: 36 * C * O.
size_t transformed_weights_floats(int64_t C, int64_t O);

// w: plain [O, C, 3, 3] filters -> u: [36][C][O], U = G g G^T per filter
// (computed in double).
void transform_weights(const float* w, int64_t O, int64_t C, float* u);

// y = act(conv(x, w) + bias + residual), act = ReLU when relu. bias and
// residual may be null. residual uses p.dst's layout and must not overlap y.
// Throws std::runtime_error where !cpu_supported() or the channels are not
// supported, std::bad_alloc when its per-thread scratch cannot be had.
void forward(const F4x3Problem& p, const float* x, const float* u,
             const float* bias, const float* residual, bool relu, float* y);

}  // namespace winograd
}  // namespace fastconv
