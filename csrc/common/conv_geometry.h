// Convolution geometry shared by the CPU and CUDA engines: sizes, the
// output-shape formula (identical to paddle.nn.functional.conv2d's), and the
// channel view the BN kernels use. Plain C++, no Paddle or oneDNN types.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastconv {

struct ConvGeometry {
  int64_t N = 0, C = 0, H = 0, W = 0;  // input
  int64_t O = 0, KH = 0, KW = 0;       // filter [O, C/groups, KH, KW]
  int64_t OH = 0, OW = 0;              // output spatial size
  int64_t stride_h = 1, stride_w = 1;
  int64_t dil_h = 1, dil_w = 1;
  int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int64_t groups = 1;
  bool channels_last = false;  // NHWC when true

  // Elements per channel of the output (the BN reduction size).
  int64_t out_count_per_channel() const { return N * OH * OW; }
  int64_t out_numel() const { return N * O * OH * OW; }
  int64_t in_numel() const { return N * C * H * W; }

  std::vector<int64_t> out_shape() const {
    return channels_last ? std::vector<int64_t>{N, OH, OW, O}
                         : std::vector<int64_t>{N, O, OH, OW};
  }
  // A string that identifies the geometry, for primitive caches.
  std::string key() const {
    std::string k;
    for (int64_t v : {N, C, H, W, O, KH, KW, stride_h, stride_w, dil_h, dil_w,
                      pad_top, pad_bottom, pad_left, pad_right, groups}) {
      k += std::to_string(v);
      k += ',';
    }
    k += channels_last ? "NHWC" : "NCHW";
    return k;
  }
};

// Output size of one spatial dimension; <= 0 means the input is too small.
inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride,
                             int64_t dil, int64_t pad_lo, int64_t pad_hi) {
  const int64_t eff_k = dil * (k - 1) + 1;
  const int64_t span = in + pad_lo + pad_hi - eff_k;
  return span < 0 ? 0 : span / stride + 1;
}

// Builds and validates the geometry from tensor shapes and op attributes.
// Throws (via PD_CHECK in the .cc) with a message naming the argument.
// paddings: 2 values (symmetric h, w) or 4 values (top, bottom, left, right).
ConvGeometry make_conv_geometry(const std::vector<int64_t>& x_shape,
                                const std::vector<int64_t>& w_shape,
                                const std::vector<int>& strides,
                                const std::vector<int>& paddings,
                                const std::vector<int>& dilations, int groups,
                                const std::string& data_format,
                                const char* op_name);

// Output shape for static-graph shape inference, where x's sizes may be -1
// (unknown; they stay -1). paddings: 2 (symmetric) or 4 values; x and w 4-D.
std::vector<int64_t> infer_conv_out_shape(const std::vector<int64_t>& x,
                                          const std::vector<int64_t>& w,
                                          const std::vector<int>& strides,
                                          const std::vector<int>& paddings,
                                          const std::vector<int>& dilations,
                                          bool nhwc);

// oneDNN's CPU convolution kernels (and Paddle's) crash on tensors of 2^31
// or more elements; our own kernels index with 64 bits. Every CPU
// convolution checks its geometry here first (throws, naming `op`).
void check_cpu_conv_sizes(const ConvGeometry& g, const char* op);

}  // namespace fastconv
