// What oneDNN alone needs for a model's convolutions on this machine: each
// pass on the layouts oneDNN prefers, with no reorders, no epilogue and no
// framework around it. It is the floor under any engine built on these
// kernels (ours included), and so bounds the speedup a fused model can show
// against stock Paddle (paddle_fastconv.floor, the benchmarks' floor rows).
#pragma once

#include <memory>
#include <vector>

#include "common/conv_geometry.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace fastconv {
namespace onednn {

enum class ConvPass {
  kForwardInference = 0,
  kForwardTraining = 1,
  kBackwardData = 2,
  kBackwardWeights = 3,
};

// A list of convolution passes run back to back by run(). Their tensors share
// three buffers (sized for the largest pass): the contents do not matter to
// the kernels' speed, and a model's worth of separate buffers would take GBs.
class ConvPassSet {
 public:
  // Adds `times` runs of the pass on geometry g (g.channels_last is
  // ignored: oneDNN picks the layouts). Throws dnnl::error when oneDNN has
  // no implementation.
  void add(const ConvGeometry& g, ConvPass pass, int times);
  void run();

 private:
  struct Entry {
    dnnl::primitive prim;
    int times;
    int role_arg[3];                  // DNNL_ARG_* bound to buffers 0, 1, 2
    dnnl::memory::desc role_desc[3];
  };
  std::vector<Entry> entries_;
  std::vector<std::unique_ptr<float[]>> buffers_;
  std::vector<size_t> sizes_ = {0, 0, 0};  // floats per buffer
  size_t allocated_entries_ = 0;
};

}  // namespace onednn
}  // namespace fastconv
