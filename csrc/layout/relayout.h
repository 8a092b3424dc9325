// A float32 CPU tensor copied into the other layout (logical dims N, C, H, W:
// NCHW -> NHWC when to_nhwc, else back) through onednn::reorder_layout, into
// a fresh output. Shared by the fastconv_relayout op and the ResNet block's
// NHWC-inside eval path. Needs the oneDNN engine (throws naming `op` without
// it).
#pragma once

#include <cstdint>
#include <vector>

#include "paddle/extension.h"

namespace fastconv {

// The 4-D shape of t in the other layout.
std::vector<int64_t> relayout_shape(const std::vector<int64_t>& s, bool to_nhwc);

paddle::Tensor relayout(const paddle::Tensor& t, bool to_nhwc, const char* op);

}  // namespace fastconv
