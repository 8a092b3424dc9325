// Shared oneDNN plumbing for the CPU engine: the engine, per-call streams,
// a thread-local scratch arena, and a bounded LRU cache used for primitives
// and pre-reordered weights.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"

namespace fastconv {
namespace onednn {

// The process-wide CPU engine (created on first use).
dnnl::engine& cpu_engine();

// Streams are cheap on the CPU; one per call keeps concurrent callers apart.
inline dnnl::stream make_stream() { return dnnl::stream(cpu_engine()); }

// Per-thread bump allocator for temporaries (blocked copies of activations,
// oneDNN scratchpads). Reusing one buffer avoids page-faulting fresh memory
// on every call; it grows to the largest call's need and is reset per call.
class ScratchArena {
 public:
  static ScratchArena& local();
  // Starts a new call: everything handed out before may be reused.
  void reset();
  // 64-byte aligned block of `bytes`, valid until the next reset().
  void* alloc(size_t bytes);
  size_t capacity() const { return capacity_; }
  void release();  // frees the memory (used by clear_caches)

 private:
  struct Block {
    std::unique_ptr<char[]> mem;
    size_t size;
  };
  std::vector<Block> blocks_;  // more than one only while growing
  size_t capacity_ = 0;
  size_t used_ = 0;
  size_t high_water_ = 0;
};

// RAII: resets the calling thread's arena on entry. Nested scopes are not
// allowed (the op entry points are the only users).
struct ScratchScope {
  ScratchScope() { ScratchArena::local().reset(); }
};

inline dnnl::memory scratch_memory(const dnnl::memory::desc& md) {
  return dnnl::memory(md, cpu_engine(),
                      ScratchArena::local().alloc(md.get_size()));
}

// An owned 64-byte aligned block of memory: cached weights in a primitive's
// layout (the folded and the reordered-only eval copies).
class AlignedBlock {
 public:
  explicit AlignedBlock(size_t bytes) : mem_(new char[bytes + 64]) {}
  void* data() const {
    return reinterpret_cast<void*>(
        (reinterpret_cast<uintptr_t>(mem_.get()) + 63) & ~uintptr_t(63));
  }

 private:
  std::unique_ptr<char[]> mem_;
};

// A thread-safe LRU map with a capacity that can be changed at run time.
template <typename V>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity) {}

  std::shared_ptr<V> get(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.second);
    return it->second.first;
  }

  void put(const std::string& key, std::shared_ptr<V> value) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      it->second.first = std::move(value);
      order_.splice(order_.begin(), order_, it->second.second);
      return;
    }
    order_.push_front(key);
    map_.emplace(key, std::make_pair(std::move(value), order_.begin()));
    evict_locked();
  }

  void set_capacity(size_t capacity) {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_ = capacity;
    evict_locked();
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    map_.clear();
    order_.clear();
  }

  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return map_.size();
  }

  // Drops every entry whose key starts with `prefix`; returns how many.
  size_t erase_prefix(const std::string& prefix) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (auto it = order_.begin(); it != order_.end();) {
      if (it->compare(0, prefix.size(), prefix) == 0) {
        map_.erase(*it);
        it = order_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
  }

 private:
  void evict_locked() {
    while (map_.size() > capacity_ && !order_.empty()) {
      map_.erase(order_.back());
      order_.pop_back();
    }
  }

  std::mutex mu_;
  size_t capacity_;
  std::list<std::string> order_;
  std::unordered_map<std::string,
                     std::pair<std::shared_ptr<V>, std::list<std::string>::iterator>>
      map_;
};

}  // namespace onednn
}  // namespace fastconv
