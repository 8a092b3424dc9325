// NCHW <-> NHWC copies of float32 activations through cached oneDNN reorder
// primitives (multi-threaded, vectorized). Used by ops that run a chain of
// convolutions in NHWC internally on NCHW tensors: one reorder at the chain's
// ends instead of oneDNN's reorders around every convolution.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastconv {
namespace onednn {

// dst = src in the other layout; dims are the logical N, C, H, W.
void reorder_layout(const float* src, float* dst, int64_t N, int64_t C,
                    int64_t H, int64_t W, bool to_nhwc);

void set_layout_reorder_capacity(size_t n);
void clear_layout_reorders();
size_t layout_reorder_cache_size();

}  // namespace onednn
}  // namespace fastconv
