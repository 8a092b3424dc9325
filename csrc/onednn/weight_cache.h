// Eval copies of convolution weights in a forward plan's layout, cached per
// layer across calls, for the convolutions that have no BatchNorm to fold
// (the Inception op's, the bare oneDNN convolution's). Without it every eval
// call reorders its filters again: 39 reorders, ~7 ms of a batch-8 GoogLeNet
// eval forward on the project's machine.
//
// An entry is keyed by the first part's buffer address (the layer), the
// plan's key and the other parts' addresses, and holds a 64-bit fingerprint
// of every part (common/fingerprint.h); a call whose parts' contents differ
// rebuilds it, so an optimizer step or set_state_dict between two calls is
// always seen (Paddle's optimizers do not bump a tensor's version; the
// contents are what tells), unless every part is frozen
// (common/frozen_weights.h). See conv_bn_act/folded_weights.h for the
// BN-folding counterpart.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "onednn/conv_onednn.h"

namespace fastconv {
namespace onednn {

// Plain [O_i, C/g, KH, KW] filters; a plan's weights are its parts stacked
// along O, in order (one part for a single convolution; the Inception op's
// merged 1x1 convolution stacks three).
struct WeightPart {
  const float* data;
  int64_t numel;
};

// The parts as one plain filter array: the single part itself, or the parts
// stacked in the calling thread's scratch arena (valid until its reset).
const float* plain_weights(const std::vector<WeightPart>& parts);

// The fingerprint of each part (common/fingerprint.h), with its numel.
struct PartsFingerprint {
  std::vector<uint64_t> fingerprints;
  std::vector<int64_t> numels;
  explicit PartsFingerprint(const std::vector<WeightPart>& parts);
  bool operator==(const PartsFingerprint& o) const {
    return fingerprints == o.fingerprints && numels == o.numels;
  }
};

class PreparedWeights {
 public:
  // parts' fingerprint `fp` is the caller's (computed once per call).
  PreparedWeights(const ConvForwardPlan& plan, const std::vector<WeightPart>& parts,
                  PartsFingerprint fp, dnnl::stream& s);
  // The weights in plan.weights_desc(), for ConvForwardPlan::execute.
  const void* data() const { return block_.data(); }
  const PartsFingerprint& fingerprint() const { return fp_; }

 private:
  AlignedBlock block_;
  PartsFingerprint fp_;
};

// The cached weights of `plan` made from `parts`, rebuilt when missing or
// stale. The returned pointer keeps the entry alive while the caller uses it.
std::shared_ptr<const PreparedWeights> get_prepared_weights(
    const ConvForwardPlan& plan, const std::string& plan_key,
    const std::vector<WeightPart>& parts, dnnl::stream& s);

// The weights `plan` executes with, made from `parts`: with `cached`, the
// eval copy from the cache (get_prepared_weights; *hold keeps it alive),
// else reordered per call into the scratch arena (training, whose weights
// change every step).
const void* plan_weights(const ConvForwardPlan& plan, const std::string& plan_key,
                         const std::vector<WeightPart>& parts, bool cached,
                         dnnl::stream& s,
                         std::shared_ptr<const PreparedWeights>* hold);

void set_prepared_cache_capacity(size_t n);
void clear_prepared_cache();
// Drops the entries whose first part is at `weight_data` (called when that
// weight is freed, so the cache never outlives its layer).
size_t release_prepared_weights(uintptr_t weight_data);
size_t prepared_cache_size();

}  // namespace onednn
}  // namespace fastconv
