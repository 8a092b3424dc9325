#include "onednn/dnnl_common.h"

#include <algorithm>

namespace fastconv {
namespace onednn {

dnnl::engine& cpu_engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

ScratchArena& ScratchArena::local() {
  thread_local ScratchArena arena;
  return arena;
}

void ScratchArena::reset() {
  // A call that needed more than one block: replace them by a single block of
  // the high-water size so the next call fits without growing.
  if (blocks_.size() > 1) {
    blocks_.clear();
    blocks_.push_back({std::unique_ptr<char[]>(new char[high_water_ + 64]),
                       high_water_});
    capacity_ = high_water_;
  }
  used_ = 0;
}

void* ScratchArena::alloc(size_t bytes) {
  bytes = (bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  // Serve from the last block when it has room.
  if (!blocks_.empty()) {
    Block& b = blocks_.back();
    size_t used_in_last = used_ - (capacity_ - b.size);
    if (used_in_last + bytes <= b.size) {
      char* base = b.mem.get();
      char* aligned = reinterpret_cast<char*>(
          (reinterpret_cast<uintptr_t>(base) + 63) & ~uintptr_t(63));
      void* p = aligned + used_in_last;
      used_ += bytes;
      high_water_ = std::max(high_water_, used_);
      return p;
    }
    // Skip the remainder of the last block.
    used_ = capacity_;
  }
  size_t size = std::max(bytes, size_t(1) << 20);
  blocks_.push_back({std::unique_ptr<char[]>(new char[size + 64]), size});
  capacity_ += size;
  return alloc(bytes);
}

void ScratchArena::release() {
  blocks_.clear();
  capacity_ = used_ = high_water_ = 0;
}

}  // namespace onednn
}  // namespace fastconv
