// A 64-bit fingerprint of a buffer's bytes, for cache invalidation where the
// buffer is too large to keep a copy of and compare (a model's conv weights:
// ~100 MB for ResNet-50). xxHash64's round on 4 lanes per 64 KiB chunk, the
// chunks in parallel (OpenMP) and combined in order, so the result does not
// depend on the thread count. Two different buffers get the same value with
// probability ~2^-64.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {

uint64_t fingerprint64(const void* data, size_t bytes);

}  // namespace fastconv
