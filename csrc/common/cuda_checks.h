// Glue between paddle::Tensor and the CUDA launchers (CUDA engine only): the
// kernels' dtype of an activation tensor and launch-error checks, both
// raising errors that name the op.
#pragma once

#include <cuda_runtime.h>

#include "conv_bn_act/bn_act_cuda.h"
#include "paddle/extension.h"

namespace fastconv {

// The launchers' dtype of a GPU activation; other dtypes are an error naming
// the op and the argument.
inline cuda::DType cuda_dtype(const paddle::Tensor& t, const char* op,
                              const char* arg) {
  switch (t.dtype()) {
    case paddle::DataType::FLOAT32: return cuda::DType::kFloat32;
    case paddle::DataType::FLOAT16: return cuda::DType::kFloat16;
    case paddle::DataType::BFLOAT16: return cuda::DType::kBFloat16;
    default:
      PD_THROW(op, ": argument '", arg, "' dtype ", t.dtype(),
               " is not supported on GPU (float32, float16, bfloat16)");
  }
}

// The stream x's kernels run on (the host test build has none).
inline cudaStream_t cuda_stream_of(const paddle::Tensor& x) {
#ifdef FASTCONV_CUDA_ON_HOST
  (void)x;
  return nullptr;
#else
  return x.stream();
#endif
}

// t as float32 (the launchers' per-channel operands, e.g. a conv bias of
// the activation dtype, are float32).
inline paddle::Tensor float32_of(const paddle::Tensor& t) {
  return t.dtype() == paddle::DataType::FLOAT32
             ? t
             : paddle::experimental::cast(t, paddle::DataType::FLOAT32);
}

// A launcher's error (bad sizes, launch failure) as a Paddle error.
inline void check_launch(cudaError_t err, const char* op, const char* what) {
  PD_CHECK(err == cudaSuccess, op, ": CUDA kernel ", what,
           " failed: ", cudaGetErrorString(err));
}

// Activation layout of a 4-D tensor with `channels` channels for the
// launchers.
inline cuda::ChannelView channel_view(int64_t n, int64_t h, int64_t w,
                                      int64_t channels, bool channels_last) {
  return channels_last ? cuda::ChannelView{n * h * w, channels, 1}
                       : cuda::ChannelView{n, channels, h * w};
}

}  // namespace fastconv
