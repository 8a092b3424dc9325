// Paddle's own convolution and pooling through its C++ API, shared by the
// CUDA engine and the CPU engine's non-oneDNN path.
#pragma once

#include <string>
#include <type_traits>
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

// Same for the pooling gradient, whose strides and paddings are
// std::vector<int> in Paddle 2.6 and std::vector<int64_t> in 3.x: both are
// declared; a call picks (and links) the one of the installed Paddle through
// fastconv::PoolInts below.
PADDLE_API void pool2d_grad(
    const Tensor& x, const Tensor& out, const Tensor& out_grad,
    const IntArray& kernel_size, const std::vector<int>& strides,
    const std::vector<int>& paddings, bool ceil_mode, bool exclusive,
    const std::string& data_format, const std::string& pooling_type,
    bool global_pooling, bool adaptive, const std::string& padding_algorithm,
    Tensor* x_grad);
PADDLE_API void pool2d_grad(
    const Tensor& x, const Tensor& out, const Tensor& out_grad,
    const IntArray& kernel_size, const std::vector<int64_t>& strides,
    const std::vector<int64_t>& paddings, bool ceil_mode, bool exclusive,
    const std::string& data_format, const std::string& pooling_type,
    bool global_pooling, bool adaptive, const std::string& padding_algorithm,
    Tensor* x_grad);
}  // namespace experimental
}  // namespace paddle

namespace fastconv {

namespace detail {
template <typename F>
struct ThirdParam;
template <typename R, typename A0, typename A1, typename A2, typename... Rest>
struct ThirdParam<R (*)(A0, A1, A2, Rest...)> {
  using type = std::decay_t<A2>;
};
}  // namespace detail

// The vector type of pool2d's strides in the installed Paddle (the header's
// declaration tells).
using PoolInts =
    typename detail::ThirdParam<decltype(&paddle::experimental::pool2d)>::type;

// [top, bottom, left, right], the explicit form Paddle's conv2d takes.
inline std::vector<int> paddings4(const ConvGeometry& g) {
  return {static_cast<int>(g.pad_top), static_cast<int>(g.pad_bottom),
          static_cast<int>(g.pad_left), static_cast<int>(g.pad_right)};
}

}  // namespace fastconv
