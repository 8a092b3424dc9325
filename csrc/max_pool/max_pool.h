// NHWC max pooling (CPU): geometry and kernels. See max_pool_cpu.cc.
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
// dx: [N, H, W, C], zeroed here, then every dy added at its argmax.
void max_pool_nhwc_backward(const float* dy, const int32_t* argmax, float* dx,
                            const PoolGeometry& p);

}  // namespace fastconv
