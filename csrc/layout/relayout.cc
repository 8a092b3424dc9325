#include "layout/relayout.h"

#include <vector>

#include "common/host_pool.h"
#ifdef FASTCONV_WITH_ONEDNN
#include "onednn/layout_reorder.h"
#endif

namespace fastconv {

std::vector<int64_t> relayout_shape(const std::vector<int64_t>& s,
                                    bool to_nhwc) {
  return to_nhwc ? std::vector<int64_t>{s[0], s[2], s[3], s[1]}
                 : std::vector<int64_t>{s[0], s[3], s[1], s[2]};
}

paddle::Tensor relayout(const paddle::Tensor& t, bool to_nhwc, const char* op) {
#ifdef FASTCONV_WITH_ONEDNN
  const std::vector<int64_t>& s = t.shape();
  const int64_t N = s[0], C = to_nhwc ? s[1] : s[3], H = to_nhwc ? s[2] : s[1],
                W = to_nhwc ? s[3] : s[2];
  paddle::Tensor r = host_empty(relayout_shape(s, to_nhwc), t.dtype(), t.place());
  onednn::reorder_layout(t.data<float>(), r.data<float>(), N, C, H, W, to_nhwc);
  return r;
#else
  PD_THROW(op, ": this build has no oneDNN engine (needed for a layout copy)");
#endif
}

}  // namespace fastconv
