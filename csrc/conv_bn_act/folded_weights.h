// Eval-mode folding of BatchNorm into the convolution, cached per layer.
//
//   s = gamma / sqrt(running_var + eps)
//   W' = W * s (per output channel),  b' = (conv_bias - running_mean) * s + beta
//
// W' is stored already reordered into the layout the oneDNN primitive wants,
// so an eval call does no weight work but a check. The entry keeps a copy of
// the per-channel sources (conv bias, gamma, beta, running mean/var, eps) and
// a 64-bit fingerprint of W (common/fingerprint.h), and is rebuilt when any
// of them differs: an optimizer step, set_state_dict or a training-mode call
// between two eval calls is always seen (Paddle's optimizers do not bump a
// tensor's version, so the contents are what tells). The fingerprint reads W
// once, in parallel; the copy of W it replaced cost a second buffer of every
// weight and a serial memcmp of both per call (a quarter of a batch-2 64x64
// ResNet-50 eval forward). A frozen W (common/frozen_weights.h) is not
// fingerprinted again.
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
  std::unique_ptr<onednn::AlignedBlock> w_block;  // W' in plan->weights_desc()
  const void* weights() const { return w_block->data(); }
  // The sources, for change detection: W's fingerprint, copies of the rest.
  uint64_t w_fingerprint = 0;
  int64_t w_numel = 0;
  std::vector<float> src_b, gamma, beta, mean, var;
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
