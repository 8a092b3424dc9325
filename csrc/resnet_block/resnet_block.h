// The fused ResNet block op: paddle.vision's BottleneckBlock (three Conv+BN
// stages) or BasicBlock (two), with an identity or Conv+BN ("downsample")
// shortcut, as one op:
//
//   h1  = relu(BN1(conv1(x)))
//   h2  = relu(BN2(conv2(h1)))                    (bottleneck only)
//   sc  = x,  or BNd(convd(x)) with a downsample
//   out = relu(BN3(conv3(h2)) + sc)               (bottleneck)
//   out = relu(BN2(conv2(h1)) + sc)               (basic)
//
// Each stage is the Conv+BN(+residual)+ReLU engine of fastconv_conv_bn_act
// (CPU: oneDNN; GPU: cuDNN through Paddle plus our CUDA kernels), so training
// (batch statistics, running statistics updated in place as
// paddle.nn.BatchNorm2D does) and eval (BN folded into cached weights, the
// residual add and final ReLU as post-ops of the last convolution) behave
// exactly as the single-stage op. The block adds:
// - one op for the whole block (one dispatch, one grad node);
// - in eval on CPU with oneDNN and NCHW tensors, the stages run in NHWC
//   (oneDNN's fastest activation layout here, needing no reorder around
//   each convolution): x is reordered once on entry and the output once on
//   exit, instead of around each of the block's 3-4 convolutions;
// - what backward needs is kept once.
//
// Slots: 0 conv1, 1 conv2, 2 conv3 (absent in a BasicBlock), 3 downsample
// (absent for an identity shortcut). An absent slot's weight is a [1, 1]
// placeholder (real weights are 4-D); its BN inputs are placeholders too.
//
// Saved for backward (training; in eval all are 1-element placeholders and
// backward recomputes the hidden activations), in data_format's layout:
//   Hidden1, Hidden2  outputs of conv1's and conv2's stages (h1, h2; Hidden2
//                     is a placeholder in a BasicBlock)
//   Z0..Z3            each stage's pre-BN convolution output
//   SavedStats        per present stage: mean, then 1/std (batch statistics
//                     in training, running ones in eval)
// Memory against stock paddle.vision blocks: stock keeps, per stage, the
// convolution output (for BatchNorm's backward) and the ReLU output (for
// ReLU's backward, also the next convolution's input); the BN output dies
// after the ReLU. That is exactly Z and Hidden here, plus the block output
// kept by autograd in both.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/conv_geometry.h"
#include "conv_bn_act/conv_bn_act.h"
#include "paddle/extension.h"

namespace fastconv {

constexpr const char* kResnetBlockOp = "fastconv_resnet_block";
constexpr int kBlockSlots = 4;
enum BlockSlot { kConv1 = 0, kConv2 = 1, kConv3 = 2, kDownsample = 3 };
// Names used in error messages, as the paddle.vision block names the layers.
extern const char* const kBlockSlotNames[kBlockSlots];

struct ResnetBlockAttrs {
  std::string data_format = "NCHW";
  bool training = true;
  // Per slot: strides/dilations 2 values each, paddings 4 (top, bottom,
  // left, right), groups 1, momentum 1, epsilon 1. Absent slots' entries are
  // ignored.
  std::vector<int> strides, paddings, dilations, groups;
  std::vector<float> momentum, epsilon;

  std::vector<int> slot_strides(int s) const;
  std::vector<int> slot_paddings(int s) const;
  std::vector<int> slot_dilations(int s) const;
  // The single-stage op's attributes for slot s, in `layout`.
  ConvBnActAttrs stage(int s, bool relu, bool nhwc) const;
};

// Validates attribute vector sizes and values (messages name the argument).
ResnetBlockAttrs make_block_attrs(
    const std::string& data_format, bool training, const std::vector<int>& strides,
    const std::vector<int>& paddings, const std::vector<int>& dilations,
    const std::vector<int>& groups, const std::vector<float>& momentum,
    const std::vector<float>& epsilon);

struct ResnetBlockGeometry {
  std::array<bool, kBlockSlots> present{};
  std::array<ConvGeometry, kBlockSlots> conv{};  // in data_format's layout
  int last = kConv3;   // the main path's last slot (kConv2 in a BasicBlock)
  bool nhwc = false;   // data_format

  std::vector<int64_t> out_shape() const { return conv[last].out_shape(); }
  // The stage geometries in the layout the stages run in.
  ConvGeometry in_layout(int s, bool nhwc_inside) const;
  int64_t stats_offset(int s) const;  // mean at +0, 1/std at +O
  int64_t stats_size() const;
};

// Geometry from the input and weight shapes; validates them (messages name
// the slot and the argument).
ResnetBlockGeometry make_block_geometry(
    const std::vector<int64_t>& x,
    const std::array<std::vector<int64_t>, kBlockSlots>& w,
    const ResnetBlockAttrs& a);

// Output shapes for static-graph inference (sizes may be -1): {Out, Hidden1,
// Hidden2, Z0..Z3, SavedStats}.
std::vector<std::vector<int64_t>> infer_block_shapes(
    const std::vector<int64_t>& x,
    const std::array<std::vector<int64_t>, kBlockSlots>& w,
    const ResnetBlockAttrs& a);

using TensorList = std::vector<paddle::Tensor>;

// Returns {Out, Hidden1, Hidden2, Z0, Z1, Z2, Z3, SavedStats}; training
// updates mean/var[s] in place. CPU or GPU (the tensors' device).
TensorList resnet_block_forward(const paddle::Tensor& x, const TensorList& w,
                                const TensorList& scale,
                                const TensorList& shift, TensorList& mean,
                                TensorList& var, const ResnetBlockGeometry& g,
                                const ResnetBlockAttrs& a);

// Returns {dX, dW[4], dScale[4], dShift[4]}; absent slots' entries are
// undefined tensors (the registration fills them).
TensorList resnet_block_backward(const paddle::Tensor& x, const TensorList& w,
                                 const TensorList& scale,
                                 const TensorList& shift,
                                 const paddle::Tensor& out,
                                 const paddle::Tensor& hidden1,
                                 const paddle::Tensor& hidden2,
                                 const TensorList& z,
                                 const paddle::Tensor& saved_stats,
                                 const paddle::Tensor& dout,
                                 const ResnetBlockGeometry& g,
                                 const ResnetBlockAttrs& a);

}  // namespace fastconv
