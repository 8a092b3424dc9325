// Paddle's own convolution through its C++ API, shared by the CUDA engine
// and the CPU engine's non-oneDNN path.
#pragma once

#include <string>
#include <vector>

#include "common/conv_geometry.h"
#include "paddle/extension.h"

// Exported by Paddle's libraries but declared in no installed header; the
// signature is the same in Paddle 2.6 and 3.x.
namespace paddle {
namespace experimental {
PADDLE_API void conv2d_grad(const Tensor& input, const Tensor& filter,
                            const Tensor& out_grad,
                            const std::vector<int>& strides,
                            const std::vector<int>& paddings,
                            const std::string& padding_algorithm,
                            const std::vector<int>& dilations, int groups,
                            const std::string& data_format,
                            Tensor* input_grad, Tensor* filter_grad);
}  // namespace experimental
}  // namespace paddle

namespace fastconv {

// [top, bottom, left, right], the explicit form Paddle's conv2d takes.
inline std::vector<int> paddings4(const ConvGeometry& g) {
  return {static_cast<int>(g.pad_top), static_cast<int>(g.pad_bottom),
          static_cast<int>(g.pad_left), static_cast<int>(g.pad_right)};
}

}  // namespace fastconv
