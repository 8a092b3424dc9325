// Weight buffers declared constant (paddle_fastconv.freeze), whose eval
// copies the CPU caches (conv_bn_act/folded_weights.h, onednn/weight_cache.h)
// trust without re-reading them.
//
// By default every eval call fingerprints each cached layer's weights, so an
// optimizer step or set_state_dict between two calls is always seen (Paddle's
// optimizers do not bump a tensor's version). That reads every weight once per
// call: ~100 MB per ResNet-50 forward, 8 ms of a 71 ms batch-1 forward on the
// project's machine (benchmarks/test_bench_freeze.py). A frozen buffer skips
// the fingerprint; the per-channel BN sources are still compared on every
// call (they are small).
// Buffers are keyed by address; the Python side unfreezes a buffer when its
// tensor is freed, so a later tensor at the same address is not trusted.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {

void freeze_weight(uintptr_t data);
void unfreeze_weight(uintptr_t data);
bool weight_is_frozen(const void* data);
size_t frozen_weight_count();

// Process-wide switch: with checks off every cached eval copy is trusted (for
// processes whose weights never change, such as a paddle.inference server).
void set_weight_checks(bool on);
bool weight_checks_enabled();

// Whether a cache may trust its copy of `data` without a fingerprint.
inline bool weight_trusted(const void* data) {
  return !weight_checks_enabled() || weight_is_frozen(data);
}

}  // namespace fastconv
