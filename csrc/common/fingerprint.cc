// See fingerprint.h.
#include "common/fingerprint.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "common/vector_clones.h"

namespace fastconv {
namespace {

constexpr size_t kChunk = 256 * 1024;  // bytes per parallel unit
constexpr int kLanes = 64;             // 32-bit lanes: four AVX-512 registers

inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
inline uint64_t mix64(uint64_t h) {  // xxHash64's avalanche
  h ^= h >> 33;
  h *= 14029467366897019727ULL;
  h ^= h >> 29;
  h *= 1609587929392839161ULL;
  return h ^ (h >> 32);
}

// MurmurHash3's 32-bit block step in 64 independent lanes, so the compiler
// vectorizes it (the clones pick AVX-512 or AVX2 at load time) and the chunk
// is hashed at memory speed; lane l takes words l, l + 64, l + 128, ...
FC_VECTOR_CLONES
void lanes_step(uint32_t* h, const uint32_t* w, size_t blocks) {
  for (size_t b = 0; b < blocks; ++b, w += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      uint32_t k = w[l] * 0xcc9e2d51u;
      k = rotl32(k, 15) * 0x1b873593u;
      const uint32_t x = rotl32(h[l] ^ k, 13);
      h[l] = x * 5u + 0xe6546b64u;
    }
  }
}

uint64_t chunk_hash(const unsigned char* p, size_t n, uint64_t index) {
  alignas(64) uint32_t h[kLanes];
  for (int l = 0; l < kLanes; ++l)
    h[l] = static_cast<uint32_t>(mix64(index * kLanes + l + 1));
  const size_t block_bytes = kLanes * sizeof(uint32_t);
  const size_t blocks = n / block_bytes;
  if (reinterpret_cast<uintptr_t>(p) % alignof(uint32_t) == 0) {
    lanes_step(h, reinterpret_cast<const uint32_t*>(p), blocks);
  } else {
    alignas(64) uint32_t tmp[kLanes];
    for (size_t b = 0; b < blocks; ++b) {
      std::memcpy(tmp, p + b * block_bytes, block_bytes);
      lanes_step(h, tmp, 1);
    }
  }
  uint64_t acc = mix64(index ^ n);
  for (int l = 0; l < kLanes; ++l) acc = mix64(acc ^ h[l]) + l;
  for (size_t i = blocks * block_bytes; i < n; ++i) acc = mix64(acc ^ p[i]) + i;
  return acc;
}

std::atomic<uint64_t> g_count{0};

}  // namespace

uint64_t fingerprint_count() { return g_count.load(); }

uint64_t fingerprint64(const void* data, size_t bytes) {
  g_count.fetch_add(1, std::memory_order_relaxed);
  const auto* p = static_cast<const unsigned char*>(data);
  const size_t chunks = (bytes + kChunk - 1) / kChunk;
  std::vector<uint64_t> part(chunks);
  const int nt = static_cast<int>(std::min<size_t>(
      static_cast<size_t>(omp_get_max_threads()), std::max<size_t>(chunks, 1)));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks); ++c) {
    const size_t off = static_cast<size_t>(c) * kChunk;
    part[c] = chunk_hash(p + off, std::min(kChunk, bytes - off), static_cast<uint64_t>(c));
  }
  uint64_t h = mix64(bytes);
  for (uint64_t x : part) h = mix64(h ^ x) * 0x9E3779B97F4A7C15ULL;
  return mix64(h);
}

}  // namespace fastconv
