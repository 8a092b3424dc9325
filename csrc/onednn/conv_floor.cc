// See conv_floor.h. Every tensor is in the format the primitive chose
// (format `any` everywhere), so nothing but the convolution runs.
#include "onednn/conv_floor.h"

#include <algorithm>
#include <unordered_map>

#include "onednn/conv_onednn.h"
#include "onednn/dnnl_common.h"

namespace fastconv {
namespace onednn {

using memory = dnnl::memory;

void ConvPassSet::add(const ConvGeometry& g, ConvPass pass, int times) {
  auto& eng = cpu_engine();
  // The plans' descriptors, with `any` activations: oneDNN picks every layout.
  const Descs d = make_descs(g, false);
  auto any = [](const memory::desc& m) {
    return memory::desc(m.get_dims(), memory::data_type::f32, memory::format_tag::any);
  };
  const memory::desc src = any(d.src_plain), dst = any(d.dst_plain), wei = d.wei;
  const memory::dims &strides = d.strides, &dilates = d.dilates;
  const memory::dims &pad_l = d.pad_l, &pad_r = d.pad_r;
  const auto alg = dnnl::algorithm::convolution_direct;
  const auto prop = pass == ConvPass::kForwardInference
                        ? dnnl::prop_kind::forward_inference
                        : dnnl::prop_kind::forward_training;
  dnnl::convolution_forward::primitive_desc fwd(eng, prop, alg, src, wei, dst, strides,
                                                dilates, pad_l, pad_r);
  Entry e;
  e.times = times;
  if (pass == ConvPass::kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc pd(
        eng, alg, src, wei, dst, strides, dilates, pad_l, pad_r, fwd);
    e.prim = dnnl::convolution_backward_data(pd);
    e.role_arg[0] = DNNL_ARG_DIFF_DST, e.role_desc[0] = pd.diff_dst_desc();
    e.role_arg[1] = DNNL_ARG_WEIGHTS, e.role_desc[1] = pd.weights_desc();
    e.role_arg[2] = DNNL_ARG_DIFF_SRC, e.role_desc[2] = pd.diff_src_desc();
  } else if (pass == ConvPass::kBackwardWeights) {
    dnnl::convolution_backward_weights::primitive_desc pd(
        eng, alg, src, wei, dst, strides, dilates, pad_l, pad_r, fwd);
    e.prim = dnnl::convolution_backward_weights(pd);
    e.role_arg[0] = DNNL_ARG_SRC, e.role_desc[0] = pd.src_desc();
    e.role_arg[1] = DNNL_ARG_DIFF_WEIGHTS, e.role_desc[1] = pd.diff_weights_desc();
    e.role_arg[2] = DNNL_ARG_DIFF_DST, e.role_desc[2] = pd.diff_dst_desc();
  } else {
    e.prim = dnnl::convolution_forward(fwd);
    e.role_arg[0] = DNNL_ARG_SRC, e.role_desc[0] = fwd.src_desc();
    e.role_arg[1] = DNNL_ARG_WEIGHTS, e.role_desc[1] = fwd.weights_desc();
    e.role_arg[2] = DNNL_ARG_DST, e.role_desc[2] = fwd.dst_desc();
  }
  for (int r = 0; r < 3; ++r)
    sizes_[r] = std::max(sizes_[r], e.role_desc[r].get_size() / sizeof(float));
  entries_.push_back(std::move(e));
}

void ConvPassSet::run() {
  if (buffers_.empty() || allocated_entries_ != entries_.size()) {
    buffers_.clear();
    for (size_t n : sizes_) {
      buffers_.emplace_back(new float[std::max<size_t>(n, 1)]);
      // Ordinary, non-denormal values: speed must not hinge on special ones.
      for (size_t i = 0; i < n; ++i)
        buffers_.back()[i] = 0.25f + 0.125f * static_cast<float>(i % 7);
    }
    allocated_entries_ = entries_.size();
  }
  dnnl::stream s = make_stream();
  auto& eng = cpu_engine();
  for (const Entry& e : entries_) {
    std::unordered_map<int, memory> args;
    for (int r = 0; r < 3; ++r)
      args.emplace(e.role_arg[r], memory(e.role_desc[r], eng, buffers_[r].get()));
    for (int t = 0; t < e.times; ++t) e.prim.execute(s, args);
  }
  s.wait();
}

}  // namespace onednn
}  // namespace fastconv
