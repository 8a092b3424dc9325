#include "common/host_pool.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <thread>

#include "paddle/phi/api/include/tensor_utils.h"

namespace fastconv {

namespace {

class HostPool {
 public:
  // A cached block of at least `bytes` (and at most 4/3 of it), else a new
  // one; *block_bytes is the block's real size (give() needs it back).
  void* take(size_t bytes, size_t* block_bytes) {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first / 4 * 3 <= bytes) {
        bytes = it->first;
        p = it->second;
        cached_ -= bytes;
        free_.erase(it);
      }
    }
    if (!p) {
      p = std::aligned_alloc(64, bytes);
      if (!p) throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> lock(mu_);
    live_ += bytes;
    peak_ = std::max(peak_, live_);
    *block_bytes = bytes;
    return p;
  }

  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      live_ -= bytes;
      if (cached_ + bytes <= capacity_) {
        free_.emplace(bytes, p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  // High-water mark of the bytes in use (handed out, not yet returned).
  size_t peak() {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }
  // Starts a new high-water mark; returns the bytes in use now.
  size_t reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    peak_ = live_;
    return live_;
  }

  void set_capacity(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    capacity_ = bytes;
    trim_locked();
  }
  size_t capacity() {
    std::lock_guard<std::mutex> lock(mu_);
    return capacity_;
  }
  size_t cached() {
    std::lock_guard<std::mutex> lock(mu_);
    return cached_;
  }
  void clear() {
    std::lock_guard<std::mutex> lock(mu_);
    const size_t keep = capacity_;
    capacity_ = 0;
    trim_locked();
    capacity_ = keep;
  }

 private:
  void trim_locked() {
    // Largest blocks first: they are the fewest.
    while (cached_ > capacity_ && !free_.empty()) {
      auto it = std::prev(free_.end());
      cached_ -= it->first;
      std::free(it->second);
      free_.erase(it);
    }
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
  size_t live_ = 0;
  size_t peak_ = 0;
  size_t capacity_ = size_t(1) << 30;
};

// Never destroyed: tensors may return blocks during interpreter shutdown.
HostPool& pool() {
  static HostPool* p = new HostPool;
  return *p;
}

}  // namespace

bool host_pool_available() {
  // paddle::from_blob must call each tensor's own deleter. Paddle 3.x keeps
  // one per pointer; older versions (2.6) keep the first deleter a thread
  // ever passed and call that for every tensor (and an empty one on other
  // threads), which would hand pool blocks back with wrong sizes. Probed
  // once, on a thread of its own so the probe leaves no thread state behind.
  static const bool ok = [] {
    bool result = false;
    std::thread probe([&result] {
      int hits[2] = {0, 0};
      {
        float* a = new float[1];
        float* b = new float[1];
        paddle::Tensor ta = paddle::from_blob(
            a, {1}, paddle::DataType::FLOAT32, phi::DataLayout::NCHW,
            phi::CPUPlace(), [&hits](void* p) {
              ++hits[0];
              delete[] static_cast<float*>(p);
            });
        paddle::Tensor tb = paddle::from_blob(
            b, {1}, paddle::DataType::FLOAT32, phi::DataLayout::NCHW,
            phi::CPUPlace(), [&hits](void* p) {
              ++hits[1];
              delete[] static_cast<float*>(p);
            });
      }
      result = hits[0] == 1 && hits[1] == 1;
    });
    probe.join();
    return result;
  }();
  return ok;
}

paddle::Tensor host_empty(const std::vector<int64_t>& shape,
                          paddle::DataType dtype, const paddle::Place& place) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t bytes = static_cast<size_t>(n) * phi::SizeOf(dtype);
  if (place.GetType() != phi::AllocationType::CPU || bytes < kMinPooledBytes ||
      pool().capacity() == 0 || !host_pool_available())
    return paddle::empty(shape, dtype, place);
  const size_t rounded = (bytes + 4095) / 4096 * 4096;
  size_t block = 0;
  void* p = pool().take(rounded, &block);
  return paddle::from_blob(p, shape, dtype, phi::DataLayout::NCHW, place,
                           [block](void* q) { pool().give(q, block); });
}

void set_host_pool_capacity(size_t bytes) { pool().set_capacity(bytes); }
size_t host_pool_capacity() { return pool().capacity(); }
size_t host_pool_cached_bytes() { return pool().cached(); }
void clear_host_pool() { pool().clear(); }
size_t host_pool_peak_bytes() { return pool().peak(); }
size_t reset_host_pool_peak() { return pool().reset_peak(); }

}  // namespace fastconv
