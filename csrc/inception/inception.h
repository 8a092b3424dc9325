// The fused Inception block op: shared definitions for the registration and
// the engines.
//
// Six convolutions ("stages"), four branches, one concatenated output:
//   branch 1: x -> 1x1                                   (stage 0)
//   branch 2: x -> 1x1 reduce (stage 1) -> KxK, "same"   (stage 2)
//   branch 3: x -> 1x1 reduce (stage 3) -> KxK, "same"   (stage 4)
//   branch 4: x -> 3x3/stride-1/pad-1 max pool -> 1x1    (stage 5)
//   out = concat(branch 1..4) along channels
// Every stage is z = conv(in, W) (+ bias), then optionally BatchNorm (batch or
// running statistics, as paddle.nn.BatchNorm2D), then optionally ReLU. A ReLU
// after the concat is the same as a ReLU on each branch's last stage, which is
// how it runs.
//
// Inputs are vectors of six (one per stage): weights, biases, BN scale, shift,
// running mean, running variance. An absent bias or BN is a placeholder of
// shape [1, 1] (the real tensors are 1-D): see `present` in conv_bn_act.h for
// why absent inputs are placeholders and not optional inputs.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/conv_geometry.h"
#include "paddle/extension.h"

namespace fastconv {

constexpr const char* kInceptionOp = "fastconv_inception";
constexpr int kStages = 6;
enum InceptionStage {
  kBranch1 = 0,
  kReduce3 = 1,
  kConv3 = 2,
  kReduce5 = 3,
  kConv5 = 4,
  kPoolProj = 5
};
// The stages whose output is a slice of the concatenated output, in order.
constexpr std::array<int, 4> kFinalStages = {kBranch1, kConv3, kConv5,
                                             kPoolProj};

struct InceptionAttrs {
  std::string data_format = "NCHW";
  bool training = true;
  float momentum = 0.9f;
  float epsilon = 1e-5f;
  std::vector<int> stage_relu = std::vector<int>(kStages, 0);
  bool relu_after_concat = true;
};

// Everything the shapes determine. Built from shapes only (also by the shape
// inference of static graphs, where sizes may be -1).
struct InceptionGeometry {
  int64_t N = 0, Cin = 0, H = 0, W = 0;
  bool nhwc = false;
  std::array<int64_t, kStages> C{};  // output channels of each stage
  std::array<int64_t, kStages> K{};  // (square) kernel size of each stage
  std::array<bool, kStages> bias{}, bn{};

  int64_t merged_channels() const { return C[0] + C[1] + C[3]; }
  int64_t out_channels() const { return C[0] + C[2] + C[4] + C[5]; }
  // First channel of a final stage's slice of the output (also of stages
  // 0/1/3 in the merged 1x1 convolution's output, via merged_offset).
  int64_t out_offset(int stage) const;
  int64_t merged_offset(int stage) const;
  std::vector<int64_t> out_shape() const;
  int64_t pixels() const { return N * H * W; }

  // Convolution geometries: the three 1x1 convolutions that read x run as one
  // over their concatenated filters ("merged"); the KxK ones and the pool
  // projection.
  ConvGeometry merged() const;
  ConvGeometry stage(int s) const;  // s in {kConv3, kConv5, kPoolProj}

  // What training keeps for backward, one tensor each (whole tensors, so
  // the GPU engine hands them to conv2d_grad as they are): the merged 1x1
  // output (if any of its stages has BN), the reduce outputs feeding the KxK
  // convolutions, and the pre-BN outputs of the KxK/projection stages that
  // have BN. Layout as x's; absent ones (and all in eval) are [1]
  // placeholders.
  bool keeps(int k) const;
  int64_t kept_channels(int k) const;
  std::vector<int64_t> activation_shape(int64_t channels) const;
  std::vector<int64_t> kept_shape(int k, bool training) const;
  // Per-stage statistics (batch or running mean, 1/std): [2 * sum(C)]
  int64_t stats_offset(int stage) const;
  int64_t stats_size() const;
};

// The tensors training keeps (InceptionGeometry::keeps), in output order.
enum Kept {
  kKeptMerged = 0,
  kKeptReduce3,
  kKeptReduce5,
  kKeptZ3,
  kKeptZ5,
  kKeptZProj,
  kKeptCount
};
// The stage whose pre-BN output kKeptZ3..kKeptZProj hold.
constexpr std::array<int, kKeptCount> kKeptStage = {-1, kReduce3, kReduce5,
                                                    kConv3, kConv5, kPoolProj};

// The Kept entry of a KxK / projection stage's pre-BN output.
inline int kept_z(int stage) {
  return stage == kConv3 ? kKeptZ3 : (stage == kConv5 ? kKeptZ5 : kKeptZProj);
}

// Geometry from the input and parameter shapes; validates them (messages name
// the argument). `allow_unknown`: shapes may hold -1 (static graph inference).
InceptionGeometry make_inception_geometry(
    const std::vector<int64_t>& x, const std::vector<std::vector<int64_t>>& w,
    const std::vector<std::vector<int64_t>>& bias,
    const std::vector<std::vector<int64_t>>& scale,
    const std::string& data_format, bool allow_unknown);

// Whether stage s applies ReLU (its own, or the one after the concat).
bool stage_relu(const InceptionAttrs& a, int s);

using TensorList = std::vector<paddle::Tensor>;

// Returns {Out, Kept[kKeptCount], SavedStats}. Kept tensors are those of
// kept_shape (training), [1] placeholders otherwise (backward then
// recomputes them). Training updates mean/var (running statistics) in place.
TensorList inception_forward_cpu(const paddle::Tensor& x, const TensorList& w,
                                 const TensorList& bias,
                                 const TensorList& scale,
                                 const TensorList& shift, TensorList& mean,
                                 TensorList& var, const InceptionGeometry& g,
                                 const InceptionAttrs& a);

// Returns {dX, dW[6], dBias[6], dScale[6], dShift[6]}; entries for absent
// biases/BN are undefined tensors (the registration fills them). SavedStats
// holds the statistics the forward used (batch or running), so backward needs
// no running statistics (which later in-place updates would change).
TensorList inception_backward_cpu(
    const paddle::Tensor& x, const TensorList& w, const TensorList& bias,
    const TensorList& scale, const TensorList& shift, const paddle::Tensor& out,
    const TensorList& kept, const paddle::Tensor& saved_stats,
    const paddle::Tensor& dout, const InceptionGeometry& g,
    const InceptionAttrs& a);

#ifdef FASTCONV_WITH_CUDA
// The CUDA engine, same contracts (float32, float16, bfloat16 activations).
TensorList inception_forward_cuda(const paddle::Tensor& x, const TensorList& w,
                                  const TensorList& bias,
                                  const TensorList& scale,
                                  const TensorList& shift, TensorList& mean,
                                  TensorList& var, const InceptionGeometry& g,
                                  const InceptionAttrs& a);
TensorList inception_backward_cuda(
    const paddle::Tensor& x, const TensorList& w, const TensorList& bias,
    const TensorList& scale, const TensorList& shift, const paddle::Tensor& out,
    const TensorList& kept, const paddle::Tensor& saved_stats,
    const paddle::Tensor& dout, const InceptionGeometry& g,
    const InceptionAttrs& a);
#endif

}  // namespace fastconv
