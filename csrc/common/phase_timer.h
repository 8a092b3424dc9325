// Opt-in phase timing for profiling the CPU engine: with
// PADDLE_FASTCONV_PROFILE=1 in the environment, each PhaseTimer prints the
// wall time between its construction/mark() calls to stderr. Off by default;
// costs one branch per phase then.
#pragma once

#include <chrono>
#include <cstdio>
#include <cstdlib>

namespace fastconv {

class PhaseTimer {
 public:
  explicit PhaseTimer(const char* scope) : scope_(scope) {
    if (enabled()) last_ = Clock::now();
  }
  void mark(const char* phase) {
    if (!enabled()) return;
    const auto now = Clock::now();
    std::fprintf(stderr, "[fastconv profile] %s %-24s %8.3f ms\n", scope_, phase,
                 std::chrono::duration<double, std::milli>(now - last_).count());
    last_ = now;
  }
  static bool enabled() {
    static const bool on = [] {
      const char* v = std::getenv("PADDLE_FASTCONV_PROFILE");
      return v && v[0] == '1';
    }();
    return on;
  }

 private:
  using Clock = std::chrono::steady_clock;
  const char* scope_;
  Clock::time_point last_;
};

}  // namespace fastconv
