// Max pooling (CPU): geometry and kernels, NHWC (the channels_last models'
// pools), NCHW (the NCHW ResNet stem's and GoogLeNet's) and 3x3/stride-1 in
// either layout (the
// Inception op's pool branch). See max_pool_cpu.cc.
#pragma once

#include <cstdint>

namespace fastconv {

constexpr const char* kMaxPoolOp = "fastconv_max_pool_nhwc";
constexpr const char* kMaxPoolNchwOp = "fastconv_max_pool_nchw";

struct PoolGeometry {
  int64_t N, H, W, C, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw;
};

// y, argmax: [N, OH, OW, C]; argmax holds h * W + w of each output's input.
void max_pool_nhwc_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p);
// dx: [N, H, W, C], zeroed here, then every dy added at its argmax.
void max_pool_nhwc_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p);

// The same on [N, C, H, W] tensors (y, argmax: [N, C, OH, OW]; argmax holds
// h * W + w within the plane).
void max_pool_nchw_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p);
void max_pool_nchw_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p);

// 3x3, stride 1, padding 1: the Inception pool branch, on `images` of
// [H, W, C] (NHWC: images = N; NCHW: images = N * C planes with C = 1).
// Forward keeps no argmax. Backward adds each window's gradient to the
// window's first input (row-major) equal to its maximum (y, the forward's
// output), as Paddle's max pool gradient does; into dx, zeroed first unless
// accumulate.
void max_pool3x3s1_forward(const float* x, float* y, int64_t images, int64_t H,
                           int64_t W, int64_t C);
void max_pool3x3s1_backward(const float* x, const float* y, const float* dy,
                            float* dx, int64_t images, int64_t H, int64_t W,
                            int64_t C, bool accumulate);

}  // namespace fastconv
