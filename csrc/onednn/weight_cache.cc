#include "onednn/weight_cache.h"

#include <cstring>
#include <string>
#include <utility>

#include "common/fingerprint.h"
#include "common/frozen_weights.h"

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

}  // namespace

const float* plain_weights(const std::vector<WeightPart>& parts) {
  if (parts.size() == 1) return parts[0].data;
  int64_t total = 0;
  for (const WeightPart& p : parts) total += p.numel;
  float* dst = static_cast<float*>(
      ScratchArena::local().alloc(sizeof(float) * total));
  float* at = dst;
  for (const WeightPart& p : parts) {
    std::memcpy(at, p.data, sizeof(float) * p.numel);
    at += p.numel;
  }
  return dst;
}

PartsFingerprint::PartsFingerprint(const std::vector<WeightPart>& parts) {
  for (const WeightPart& p : parts) {
    fingerprints.push_back(
        fingerprint64(p.data, static_cast<size_t>(p.numel) * sizeof(float)));
    numels.push_back(p.numel);
  }
}

PreparedWeights::PreparedWeights(const ConvForwardPlan& plan,
                                 const std::vector<WeightPart>& parts,
                                 PartsFingerprint fp, dnnl::stream& s)
    : block_(plan.weights_desc().get_size()), fp_(std::move(fp)) {
  plan.prepare_weights(plain_weights(parts), block_.data(), s);
}

std::shared_ptr<const PreparedWeights> get_prepared_weights(
    const ConvForwardPlan& plan, const std::string& plan_key,
    const std::vector<WeightPart>& parts, dnnl::stream& s) {
  std::string key =
      key_prefix(reinterpret_cast<uintptr_t>(parts[0].data)) + plan_key;
  for (size_t i = 1; i < parts.size(); ++i)
    key += "|" + std::to_string(reinterpret_cast<uintptr_t>(parts[i].data));
  auto hit = cache().get(key);
  if (hit && hit->fingerprint().numels.size() == parts.size()) {
    bool trusted = true;
    for (size_t i = 0; i < parts.size() && trusted; ++i)
      trusted = weight_trusted(parts[i].data) &&
                hit->fingerprint().numels[i] == parts[i].numel;
    if (trusted) return hit;
  }
  PartsFingerprint fp(parts);
  if (hit && hit->fingerprint() == fp) return hit;
  auto entry = std::make_shared<const PreparedWeights>(plan, parts, std::move(fp), s);
  cache().put(key, entry);
  return entry;
}

const void* plan_weights(const ConvForwardPlan& plan, const std::string& plan_key,
                         const std::vector<WeightPart>& parts, bool cached,
                         dnnl::stream& s,
                         std::shared_ptr<const PreparedWeights>* hold) {
  if (cached) {
    *hold = get_prepared_weights(plan, plan_key, parts, s);
    return (*hold)->data();
  }
  void* w = ScratchArena::local().alloc(plan.weights_desc().get_size());
  plan.prepare_weights(plain_weights(parts), w, s);
  return w;
}

void set_prepared_cache_capacity(size_t n) { cache().set_capacity(n); }
void clear_prepared_cache() { cache().clear(); }
size_t release_prepared_weights(uintptr_t weight_data) {
  return cache().erase_prefix(key_prefix(weight_data));
}
size_t prepared_cache_size() { return cache().size(); }

}  // namespace onednn
}  // namespace fastconv
