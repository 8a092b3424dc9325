// See frozen_weights.h.
#include "common/frozen_weights.h"

#include <atomic>
#include <mutex>
#include <shared_mutex>
#include <unordered_set>

namespace fastconv {
namespace {

std::shared_mutex& mu() {
  static std::shared_mutex m;
  return m;
}
std::unordered_set<uintptr_t>& frozen() {
  static std::unordered_set<uintptr_t> s;
  return s;
}
std::atomic<bool> g_checks{true};

}  // namespace

void freeze_weight(uintptr_t data) {
  std::unique_lock<std::shared_mutex> lock(mu());
  frozen().insert(data);
}

void unfreeze_weight(uintptr_t data) {
  std::unique_lock<std::shared_mutex> lock(mu());
  frozen().erase(data);
}

bool weight_is_frozen(const void* data) {
  std::shared_lock<std::shared_mutex> lock(mu());
  return frozen().count(reinterpret_cast<uintptr_t>(data)) != 0;
}

size_t frozen_weight_count() {
  std::shared_lock<std::shared_mutex> lock(mu());
  return frozen().size();
}

void set_weight_checks(bool on) { g_checks.store(on); }
bool weight_checks_enabled() { return g_checks.load(); }

}  // namespace fastconv
