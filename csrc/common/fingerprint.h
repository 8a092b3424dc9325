// A 64-bit fingerprint of a buffer's bytes, for cache invalidation where the
// buffer is too large to keep a copy of and compare (a model's conv weights:
// ~100 MB for ResNet-50). MurmurHash3's 32-bit block step in 64 independent
// lanes per 256 KiB chunk (vectorized, cloned for AVX-512/AVX2), the chunks
// in parallel (OpenMP) and combined in order with xxHash64's avalanche, so
// the result does not depend on the thread count. Two different buffers get
// the same value with probability ~2^-64.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {

uint64_t fingerprint64(const void* data, size_t bytes);

// How many fingerprints this process has taken (cache_info()'s
// "weight_checks": tells whether eval calls still read their weights).
uint64_t fingerprint_count();

}  // namespace fastconv
