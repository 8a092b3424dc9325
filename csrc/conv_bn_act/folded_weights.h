// Eval-mode folding of BatchNorm into the convolution, cached per layer.
//
//   s = gamma / sqrt(running_var + eps)
//   W' = W * s (per output channel),  b' = (conv_bias - running_mean) * s + beta
//
// W' is stored already reordered into the layout the oneDNN primitive wants,
// so an eval call does no weight work at all. The entry keeps a copy of every
// source (W, conv bias, gamma, beta, running mean/var, eps) and is rebuilt
// when any of them differs from the copy: an optimizer step, set_state_dict
// or a training-mode call between two eval calls is always seen. The check is
// a memcmp of the parameters, far cheaper than the convolution.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/conv_geometry.h"
#include "conv_bn_act/conv_bn_act.h"
#include "onednn/conv_onednn.h"

namespace fastconv {

struct FoldedWeights {
  std::shared_ptr<const onednn::ConvForwardPlan> plan;
  std::vector<float> bias;  // folded bias, fp32
  std::unique_ptr<char[]> storage;
  void* aligned = nullptr;  // W' in plan->weights_desc()
  const void* weights() const { return aligned; }
  // Copies of the sources, for change detection.
  std::vector<float> src_w, src_b, gamma, beta, mean, var;
  float eps = 0.f;
};

std::shared_ptr<const FoldedWeights> get_folded_weights(
    const ConvGeometry& g, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    const paddle::Tensor& running_mean, const paddle::Tensor& running_var,
    float eps, bool residual, bool relu, dnnl::stream& s);

void set_folded_cache_capacity(size_t n);
void clear_folded_cache();
// Drops the entries of the layer whose weight buffer is at `weight_data`
// (called when that weight is freed, so a cache never outlives its layer).
size_t release_folded_weights(uintptr_t weight_data);
size_t folded_cache_size();

}  // namespace fastconv
