// Which library runs the convolutions of the CPU engine.
//
// kOneDNN (default when built with oneDNN): primitives from the oneDNN that
//   Paddle ships, with cached plans, post-ops and folded eval weights.
// kPaddle: Paddle's own conv2d / conv2d_grad through its C++ API, with our
//   BN kernels around them. Used when this Paddle ships no oneDNN; also
//   selectable at run time (paddle_fastconv.set_cpu_conv_engine), which is
//   how the tests keep this path exercised.
#pragma once

namespace fastconv {

enum class CpuConvEngine { kOneDNN = 0, kPaddle = 1 };

bool onednn_available();
CpuConvEngine cpu_conv_engine();
// Returns false when the requested engine is not built in.
bool set_cpu_conv_engine(CpuConvEngine e);

}  // namespace fastconv
