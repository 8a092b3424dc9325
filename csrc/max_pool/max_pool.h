// Max pooling (CPU): geometry and kernels, NHWC (the channels_last stem pool
// op) and NCHW (the Inception op's pool branch). See max_pool_cpu.cc.
#pragma once

#include <cstdint>

namespace fastconv {

constexpr const char* kMaxPoolOp = "fastconv_max_pool_nhwc";

struct PoolGeometry {
  int64_t N, H, W, C, OH, OW;
  int64_t kh, kw, sh, sw, ph, pw;
};

// y, argmax: [N, OH, OW, C]; argmax holds h * W + w of each output's input.
void max_pool_nhwc_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p);
// dx: [N, H, W, C], zeroed here (unless accumulate), then every dy added at
// its argmax.
void max_pool_nhwc_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p, bool accumulate = false);

// The same on [N, C, H, W] tensors (y, argmax: [N, C, OH, OW]).
void max_pool_nchw_forward(const float* x, float* y, int32_t* argmax,
                           const PoolGeometry& p);
void max_pool_nchw_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p, bool accumulate = false);

}  // namespace fastconv
