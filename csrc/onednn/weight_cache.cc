#include "onednn/weight_cache.h"

#include <cstring>
#include <string>

#include "common/fingerprint.h"

namespace fastconv {
namespace onednn {
namespace {

constexpr size_t kDefaultCapacity = 256;

LruCache<const PreparedWeights>& cache() {
  static LruCache<const PreparedWeights> c(kDefaultCapacity);
  return c;
}

std::string key_prefix(uintptr_t weight_data) {
  return std::to_string(weight_data) + "|";
}

uint64_t fingerprint_of(const WeightPart& p) {
  return fingerprint64(p.data, static_cast<size_t>(p.numel) * sizeof(float));
}

}  // namespace

PreparedWeights::PreparedWeights(const ConvForwardPlan& plan,
                                 const std::vector<WeightPart>& parts,
                                 dnnl::stream& s) {
  int64_t total = 0;
  for (const WeightPart& p : parts) {
    fingerprints_.push_back(fingerprint_of(p));
    numels_.push_back(p.numel);
    total += p.numel;
  }
  // One part is reordered from where it is; several are stacked first.
  std::vector<float> stacked;
  const float* src = parts[0].data;
  if (parts.size() > 1) {
    stacked.resize(static_cast<size_t>(total));
    float* at = stacked.data();
    for (const WeightPart& p : parts) {
      std::memcpy(at, p.data, sizeof(float) * p.numel);
      at += p.numel;
    }
    src = stacked.data();
  }
  const size_t bytes = plan.weights_desc().get_size();
  storage_.reset(new char[bytes + 64]);
  aligned_ = reinterpret_cast<void*>(
      (reinterpret_cast<uintptr_t>(storage_.get()) + 63) & ~uintptr_t(63));
  plan.prepare_weights(src, aligned_, s);
}

bool PreparedWeights::matches(const std::vector<WeightPart>& parts) const {
  if (parts.size() != numels_.size()) return false;
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i].numel != numels_[i] ||
        fingerprint_of(parts[i]) != fingerprints_[i])
      return false;
  return true;
}

std::shared_ptr<const PreparedWeights> get_prepared_weights(
    const ConvForwardPlan& plan, const std::string& plan_key,
    const std::vector<WeightPart>& parts, dnnl::stream& s) {
  std::string key =
      key_prefix(reinterpret_cast<uintptr_t>(parts[0].data)) + plan_key;
  for (size_t i = 1; i < parts.size(); ++i)
    key += "|" + std::to_string(reinterpret_cast<uintptr_t>(parts[i].data));
  auto hit = cache().get(key);
  if (hit && hit->matches(parts)) return hit;
  auto entry = std::make_shared<const PreparedWeights>(plan, parts, s);
  cache().put(key, entry);
  return entry;
}

void set_prepared_cache_capacity(size_t n) { cache().set_capacity(n); }
void clear_prepared_cache() { cache().clear(); }
size_t release_prepared_weights(uintptr_t weight_data) {
  return cache().erase_prefix(key_prefix(weight_data));
}
size_t prepared_cache_size() { return cache().size(); }

}  // namespace onednn
}  // namespace fastconv
