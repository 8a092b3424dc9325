// A tensor that shares another tensor's memory under a different shape (same
// element count): how ops keep intermediates as flat outputs (shapes a static
// graph can infer whatever layout the engine picked) and read them back as
// 4-D. No copy; the view keeps the memory alive.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/check.h"
#include "paddle/extension.h"
#include "paddle/phi/core/dense_tensor.h"

namespace fastconv {

inline paddle::Tensor view_as_shape(const paddle::Tensor& t,
                                    const std::vector<int64_t>& shape,
                                    const char* op, const char* what) {
  auto src = std::dynamic_pointer_cast<phi::DenseTensor>(t.impl());
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  PD_CHECK(src && src->numel() == n, op, ": internal tensor '", what,
           "' has ", t.numel(), " elements, expected ", n, " (shape ",
           shape_str(shape), "); was the forward run with the same inputs?");
  auto v = std::make_shared<phi::DenseTensor>();
  v->ShareDataWith(*src);
  v->Resize(common::make_ddim(shape));
  return paddle::Tensor(v);
}

inline paddle::Tensor flat_view(const paddle::Tensor& t, const char* op,
                                const char* what) {
  return view_as_shape(t, {t.numel()}, op, what);
}

}  // namespace fastconv
