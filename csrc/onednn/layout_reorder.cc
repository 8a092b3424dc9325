#include "onednn/layout_reorder.h"

#include <string>

#include "onednn/dnnl_common.h"

namespace fastconv {
namespace onednn {

namespace {

LruCache<const dnnl::reorder>& cache() {
  static LruCache<const dnnl::reorder> c(64);
  return c;
}

dnnl::memory::desc desc(int64_t N, int64_t C, int64_t H, int64_t W, bool nhwc) {
  using tag = dnnl::memory::format_tag;
  return dnnl::memory::desc({N, C, H, W}, dnnl::memory::data_type::f32,
                            nhwc ? tag::nhwc : tag::nchw);
}

}  // namespace

void reorder_layout(const float* src, float* dst, int64_t N, int64_t C,
                    int64_t H, int64_t W, bool to_nhwc) {
  const auto src_md = desc(N, C, H, W, !to_nhwc);
  const auto dst_md = desc(N, C, H, W, to_nhwc);
  const std::string key = std::to_string(N) + "," + std::to_string(C) + "," +
                          std::to_string(H) + "," + std::to_string(W) +
                          (to_nhwc ? ">nhwc" : ">nchw");
  std::shared_ptr<const dnnl::reorder> r = cache().get(key);
  if (!r) {
    r = std::make_shared<const dnnl::reorder>(dnnl::reorder::primitive_desc(
        cpu_engine(), src_md, cpu_engine(), dst_md));
    cache().put(key, r);
  }
  dnnl::memory s(src_md, cpu_engine(), const_cast<float*>(src));
  dnnl::memory d(dst_md, cpu_engine(), dst);
  dnnl::stream st = make_stream();
  r->execute(st, s, d);
  st.wait();
}

void set_layout_reorder_capacity(size_t n) { cache().set_capacity(n); }
void clear_layout_reorders() { cache().clear(); }
size_t layout_reorder_cache_size() { return cache().size(); }

}  // namespace onednn
}  // namespace fastconv
