// oneDNN convolution for the CPU engine: forward (training and inference with
// post-ops) and backward (data and weights), on Paddle's plain NCHW/NHWC
// tensors. Primitives, their reorders and layouts are planned once per
// geometry and cached.
//
// Layout policy: NHWC tensors run on the plain layout directly (oneDNN's NHWC
// kernels need no reorder of activations). NCHW convolutions let oneDNN choose
// its blocked layout and pay a reorder in and out, which its faster kernels
// more than repay; except 1x1/stride-1/unpadded ungrouped ones, which run on
// the plain layout (oneDNN's GEMM path, a plain W[O x C] . X[C x HW] per
// image) in training and eval alike. Measured on the project's machine,
// batch 8 at 56x56, eval: 1x1 256->64 6.2 ms plain against 13.2 ms blocked
// (the reorder of the 256-channel input dominated), 1x1 64->256 7.6 against
// 10.8 ms; whole GoogLeNet NCHW eval 37-44 against 34-35 img/s, ResNet-50
// NCHW eval unchanged within noise (its blocks run NHWC inside in eval).
// PADDLE_FASTCONV_CONV_LAYOUT=plain|blocked overrides the policy (for
// benchmarking).
//
// On that GEMM path oneDNN applies post-ops in a slow extra pass (ReLU as a
// post-op: 20 ms against 4.4 ms without, 64->256 at 56x56), so bias,
// residual and ReLU run in our own epilogue, and the plan runs the GEMM
// itself: each thread takes an equal share of the batch's output columns
// and, image by image, calls oneDNN's sgemm (single-threaded inside the
// parallel region) on its piece and applies the epilogue while the piece is
// still in cache. Against oneDNN's GEMM convolution followed by a separate
// epilogue pass over the whole output, on the project's machine (AMD EPYC,
// 2 threads, batch 8, eval layer medians in turns, over the bare convolution):
// 64->256 at 56x56 1.13-1.19x instead of 1.22-1.30x; 192->64 at 28x28 1.02x
// instead of 1.20x; 480->192 at 14x14 1.06x instead of 1.16x; no shape
// measured slower. PADDLE_FASTCONV_GEMM_PIECES=0 turns it off (for
// benchmarking).
// Expanding ones (at most 128 input channels, at least twice as many
// outputs), where that after-pass weighs most, run on our own kernel instead,
// which applies the epilogue to its register tiles before storing them
// (conv1x1/conv1x1_nchw.h; PADDLE_FASTCONV_CONV1X1=0 turns it off).
//
// Eval plans of callers that cache their prepared weights may run 3x3
// stride-1 convolutions on our Winograd F(4x4, 3x3) kernel instead of
// oneDNN's direct one (winograd/winograd_f4x3.h; which shapes: use_winograd
// in the .cc): 1.3-2.3x faster on ResNet-50's 3x3 shapes of 14x14 and up.
// Its prepared weights are the transformed filters. Likewise expanding NHWC
// 1x1 convolutions on our 1x1 kernel (conv1x1/conv1x1_nhwc.h, weights
// transposed), 0.8x the time of oneDNN's at 64->256.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/conv_geometry.h"
#include "onednn/dnnl_common.h"

namespace fastconv {
namespace onednn {

// The memory descriptors and parameters of a convolution on geometry g:
// plain (NCHW/NHWC, oihw/goihw) descriptors, the ones the plans create
// primitives with (activations plain or `any` by the layout policy above,
// weights `any`), and strides, oneDNN's dilations and pads.
struct Descs {
  dnnl::memory::desc src_plain, dst_plain, wei_plain, src, dst, wei, bias;
  dnnl::memory::dims strides, dilates, pad_l, pad_r;
};
Descs make_descs(const ConvGeometry& g, bool with_bias);

struct ConvFwdOptions {
  bool with_bias = false;  // add a per-output-channel bias
  bool residual = false;   // add a residual tensor (plain layout) before act
  bool relu = false;       // ReLU after bias/residual
  bool inference = false;  // forward_inference instead of forward_training
  // Inference plans only: run the convolutions that qualify on our own
  // kernels instead of oneDNN's: 3x3 ones on the Winograd F(4x4, 3x3) kernel
  // (use_winograd in the .cc), NHWC 1x1 ones on the 1x1 kernel
  // (use_conv1x1_nhwc). For callers whose prepared weights are cached:
  // transforming the filters costs more than reordering them.
  bool allow_own_kernels = false;
};

class ConvForwardPlan {
 public:
  static std::shared_ptr<const ConvForwardPlan> get(const ConvGeometry& g,
                                                    const ConvFwdOptions& o);
  // The cache key of the plan for (g, o): geometry and options.
  static std::string key_of(const ConvGeometry& g, const ConvFwdOptions& o);

  // The weights layout the primitive wants; weights given to execute() must
  // be in it (see prepare_weights).
  dnnl::memory::desc weights_desc() const { return wei_desc_; }
  // Copies plain [O, C/g, KH, KW] weights into `dst` (weights_desc().get_size()
  // bytes) in the primitive's layout (the Winograd plan: transformed).
  void prepare_weights(const float* w, void* dst, dnnl::stream& s) const;

  // y = post_ops(conv(x, weights) + bias) on plain tensors. `weights` points
  // to data in weights_desc(); bias may be null only without with_bias;
  // residual may be null only without options.residual, and must not
  // overlap y (it may be read by a post-op while y is written).
  void execute(const float* x, const void* weights, const float* bias,
               const float* residual, float* y, dnnl::stream& s) const;

  ConvForwardPlan(const ConvGeometry& g, const ConvFwdOptions& o);

 private:
  ConvGeometry g_;
  ConvFwdOptions o_;
  dnnl::memory::desc user_src_, user_dst_, user_wei_, bias_md_;
  dnnl::convolution_forward::primitive_desc pd_;
  dnnl::convolution_forward prim_;
  dnnl::memory::desc wei_desc_;
  bool reorder_src_ = false, reorder_dst_ = false, reorder_wei_ = false;
  // Winograd F(4x4, 3x3) instead of the primitive: NHWC runs in place, NCHW
  // through nChw16c copies (src_in_, res_in_, dst_out_).
  bool winograd_ = false;
  dnnl::memory::desc wino_src_b_, wino_dst_b_;  // the NCHW path's nChw16c copies
  void build_winograd();
  void execute_winograd(const float* x, const float* u, const float* bias,
                        const float* residual, float* y, dnnl::stream& s) const;
  // An NHWC 1x1 convolution on our kernel (conv1x1/conv1x1_nhwc.h); its
  // prepared weights are the transposed filters [C][O].
  bool conv1x1_nhwc_ = false;
  // oneDNN's GEMM-based convolution applies post-ops in a slow extra pass;
  // for it bias/residual/ReLU run in our own epilogue instead.
  bool epilogue_outside_ = false;
  // ... and the GEMM runs in per-thread pieces with the epilogue on each
  // (see the layout policy above).
  bool gemm_pieces_ = false;
  void execute_gemm_pieces(const float* x, const float* w, const float* bias,
                           const float* residual, float* y) const;
  // ... or, for expanding convolutions, on our 1x1 kernel with the epilogue
  // on its register tiles (conv1x1/conv1x1_nchw.h).
  bool conv1x1_kernel_ = false;
  // The residual rides on a binary-add post-op (else: seeded dst + sum).
  bool residual_binary_ = false;
  std::vector<float> ones_, zeros_;  // the epilogue's unit scale / no bias
  dnnl::reorder src_in_, dst_out_, res_in_, wei_in_;
};

class ConvBackwardPlan {
 public:
  static std::shared_ptr<const ConvBackwardPlan> get(const ConvGeometry& g,
                                                     bool with_bias);
  // Any of dx, dw, dbias may be null (not computed). dw is written in the
  // plain [O, C/g, KH, KW] layout; dbias only when with_bias.
  void execute(const float* x, const float* w, const float* dy, float* dx,
               float* dw, float* dbias, dnnl::stream& s) const;

  ConvBackwardPlan(const ConvGeometry& g, bool with_bias);

 private:
  ConvGeometry g_;
  bool with_bias_;
  dnnl::memory::desc user_src_, user_dst_, user_wei_, bias_md_;
  dnnl::convolution_backward_data::primitive_desc data_pd_;
  dnnl::convolution_backward_data data_prim_;
  dnnl::convolution_backward_weights::primitive_desc wei_pd_;
  dnnl::convolution_backward_weights wei_prim_;
  // reorders: dy for each primitive, w for data, x for weights, dx and dw out
  bool r_dy_data_, r_dy_wei_, r_w_, r_x_, r_dx_, r_dw_;
  dnnl::reorder dy_data_in_, dy_wei_in_, w_in_, x_in_, dx_out_, dw_out_;
};

// Whether inference plans that allow it may run the Winograd kernel:
// 1 yes, 0 not on this CPU (no AVX-512F), 2 turned off by
// PADDLE_FASTCONV_WINOGRAD=0 (read on every call; plans read it when built).
int winograd_state();

// The same for the 1x1 kernels with the epilogue on their register tiles
// (conv1x1/): plans of unpadded stride-1 ungrouped 1x1 convolutions run
// them where they are preferred (expanding ones): NCHW ones with a bias,
// residual or ReLU, NHWC inference plans that allow our kernels. 1 yes, 0
// not on this CPU, 2 turned off by PADDLE_FASTCONV_CONV1X1=0 (read on every
// call; plans read it when built).
int conv1x1_state();

// Cache control (exposed to Python): capacity of each plan cache, clearing.
void set_plan_cache_capacity(size_t n);
void clear_plan_caches();
size_t plan_cache_size();

}  // namespace onednn
}  // namespace fastconv
