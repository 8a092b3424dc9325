// Output tensors of the CPU ops from a pool of reused host memory.
//
// Why: Paddle's CPU allocator hands large tensors to malloc, which maps fresh
// pages for them and unmaps them on free. Every activation-sized output then
// pays a page fault per 4 KiB on first write: measured on the project's
// machine, writing a fresh 25.7 MB output (a 56x56x256 map, batch 8) took
// 12-13 ms against 4.5-5.7 ms into reused memory, and the NHWC bottleneck
// block's last convolution 21-23 ms against 8 ms. Pooled outputs are tensors
// like any other (paddle::from_blob with a deleter that returns the block).
//
// Blocks below kMinPooledBytes come from Paddle as before, and so does
// everything on a Paddle whose from_blob cannot return blocks (see
// host_pool_available). Freed blocks are
// kept up to a byte capacity (set_host_pool_capacity; 0 disables pooling) and
// served to requests of at least 3/4 of their size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "paddle/extension.h"

namespace fastconv {

constexpr size_t kMinPooledBytes = size_t(256) << 10;

// paddle::empty(shape, dtype, place), pooled for large CPU tensors.
paddle::Tensor host_empty(const std::vector<int64_t>& shape,
                          paddle::DataType dtype, const paddle::Place& place);

// Whether this Paddle's from_blob supports the pool (Paddle 3.x); without
// it host_empty is paddle::empty.
bool host_pool_available();

void set_host_pool_capacity(size_t bytes);
size_t host_pool_capacity();
size_t host_pool_cached_bytes();  // free blocks held for reuse
void clear_host_pool();           // frees the free blocks
// High-water mark of the pooled bytes in use (like the "Allocated" statistic
// of Paddle's allocator, cached free blocks are not counted) since the last
// reset, which returns the bytes in use at that moment.
size_t host_pool_peak_bytes();
size_t reset_host_pool_peak();

}  // namespace fastconv
