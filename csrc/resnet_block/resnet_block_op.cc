// Registration of fastconv_resnet_block and its grad op: argument checks,
// shape/dtype inference (static graphs), and the call into the engine (which
// branches on the device per stage).
#include <array>
#include <string>
#include <vector>

#include "common/check.h"
#include "resnet_block/resnet_block.h"

namespace fastconv {
namespace {

using Tensor = paddle::Tensor;
using Shape = std::vector<int64_t>;
using Shapes = std::vector<Shape>;
using DType = paddle::DataType;

bool is_float_type(DType t) {
  return t == DType::FLOAT32 || t == DType::FLOAT16 || t == DType::BFLOAT16;
}

std::array<Shape, kBlockSlots> shapes_of(const TensorList& w) {
  return {w[0].shape(), w[1].shape(), w[2].shape(), w[3].shape()};
}

// Checks that hold for every device; returns the geometry. mean/var are null
// for backward (which needs no running statistics).
ResnetBlockGeometry check_inputs(const Tensor& x, const TensorList& w,
                                 const TensorList& scale,
                                 const TensorList& shift,
                                 const TensorList* mean, const TensorList* var,
                                 const ResnetBlockAttrs& a) {
  const char* op = kResnetBlockOp;
  FC_CHECK_ARG(is_float_type(x.dtype()), op, "x",
               "must be float32, float16 or bfloat16, got ", x.dtype());
  FC_CHECK_ARG(!mean || (mean->size() == kBlockSlots &&
                         var->size() == kBlockSlots),
               op, "running_means", "and running_vars must be lists of 4 "
               "(conv1, conv2, conv3, downsample)");
  const ResnetBlockGeometry g = make_block_geometry(x.shape(), shapes_of(w), a);
  for (int s = 0; s < kBlockSlots; ++s) {
    if (!g.present[s]) continue;
    const char* slot = kBlockSlotNames[s];
    FC_CHECK_ARG(w[s].dtype() == x.dtype() && w[s].place() == x.place(), op,
                 "weights", "of ", slot, " must have x's dtype and device (",
                 x.dtype(), " on ", x.place(), "), got ", w[s].dtype(), " on ",
                 w[s].place());
    const Shape chan = {g.conv[s].O};
    const char* names[4] = {"bn_weights", "bn_biases", "running_means",
                            "running_vars"};
    const Tensor* ts[4] = {&scale[s], &shift[s],
                           mean ? &(*mean)[s] : nullptr,
                           var ? &(*var)[s] : nullptr};
    for (int k = 0; k < 4 && ts[k]; ++k)
      FC_CHECK_ARG(ts[k]->shape() == chan &&
                       ts[k]->dtype() == DType::FLOAT32 &&
                       ts[k]->place() == x.place(),
                   op, names[k], "of ", slot, " must be a float32 [",
                   g.conv[s].O, "] tensor on x's device (BN parameters and "
                   "statistics are fp32), got ", shape_str(ts[k]->shape()),
                   " ", ts[k]->dtype(), " on ", ts[k]->place());
    FC_CHECK_ARG(!a.training || g.conv[s].out_count_per_channel() > 1, op,
                 "x", "gives one value per channel at ", slot,
                 "; training-mode batch statistics need more than one");
  }
  return g;
}

// Parameters are separate inputs per slot (weights, BN scales, BN shifts):
// a vector input's gradient would be a vector output of the grad op, which
// Paddle's static graph (PIR) refuses unless it is in place. The running
// statistics are in-place vectors.
#define FC_FOUR(T, p) T p##0, T p##1, T p##2, T p##3
#define FC_LIST(p) {p##0, p##1, p##2, p##3}

#define FC_BLOCK_ATTR_ARGS                                                  \
  const std::string &data_format, bool training,                            \
      const std::vector<int>&strides, const std::vector<int>&paddings,      \
      const std::vector<int>&dilations, const std::vector<int>&groups,      \
      const std::vector<float>&momentum, const std::vector<float>&epsilon
#define FC_BLOCK_ATTRS                                                      \
  make_block_attrs(data_format, training, strides, paddings, dilations,     \
                   groups, momentum, epsilon)

TensorList ResnetBlockForward(const Tensor& x, FC_FOUR(const Tensor&, w),
                              FC_FOUR(const Tensor&, s),
                              FC_FOUR(const Tensor&, h), TensorList& mean,
                              TensorList& var, FC_BLOCK_ATTR_ARGS) {
  const TensorList W = FC_LIST(w), S = FC_LIST(s), H = FC_LIST(h);
  const ResnetBlockAttrs a = FC_BLOCK_ATTRS;
  const ResnetBlockGeometry g = check_inputs(x, W, S, H, &mean, &var, a);
  // {Out, Hidden1, Hidden2, Z0..Z3, SavedStats}; MeanOut/VarOut are the
  // inputs, updated in place.
  return resnet_block_forward(x, W, S, H, mean, var, g, a);
}

TensorList ResnetBlockBackward(const Tensor& x, FC_FOUR(const Tensor&, w),
                               FC_FOUR(const Tensor&, s),
                               FC_FOUR(const Tensor&, h), const Tensor& out,
                               const Tensor& hidden1, const Tensor& hidden2,
                               FC_FOUR(const Tensor&, z),
                               const Tensor& saved_stats, const Tensor& dout,
                               FC_BLOCK_ATTR_ARGS) {
  const TensorList W = FC_LIST(w), S = FC_LIST(s), H = FC_LIST(h),
                   Z = FC_LIST(z);
  const ResnetBlockAttrs a = FC_BLOCK_ATTRS;
  const ResnetBlockGeometry g = check_inputs(x, W, S, H, nullptr, nullptr, a);
  FC_CHECK_ARG(dout.shape() == g.out_shape() && dout.dtype() == x.dtype() &&
                   out.shape() == g.out_shape(),
               kResnetBlockOp, "grad_out", "must match the output (shape ",
               shape_str(g.out_shape()), "), got ", shape_str(dout.shape()));
  TensorList grads = resnet_block_backward(x, W, S, H, out, hidden1, hidden2,
                                           Z, saved_stats, dout, g, a);
  // Gradients of absent slots: zeros shaped like their placeholders.
  const TensorList* inputs[3] = {&W, &S, &H};
  for (int k = 0; k < 3; ++k)
    for (int sl = 0; sl < kBlockSlots; ++sl) {
      Tensor& gt = grads[1 + k * kBlockSlots + sl];
      const Tensor& in = (*inputs[k])[sl];
      if (!gt.initialized())
        gt = paddle::full(in.shape(), 0, in.dtype(), x.place());
    }
  return grads;
}

// ------------------------------------------------------------ inference fns

Shapes ResnetBlockInferShape(const Shape& x, FC_FOUR(const Shape&, w),
                             FC_FOUR(const Shape&, s),
                             FC_FOUR(const Shape&, h), const Shapes& mean,
                             const Shapes& var, FC_BLOCK_ATTR_ARGS) {
  // (in-place outputs are not listed)
  return infer_block_shapes(x, FC_LIST(w), FC_BLOCK_ATTRS);
}

std::vector<DType> ResnetBlockInferDtype(const DType& x,
                                         FC_FOUR(const DType&, w),
                                         FC_FOUR(const DType&, s),
                                         FC_FOUR(const DType&, h),
                                         const std::vector<DType>& mean,
                                         const std::vector<DType>& var) {
  return {x, x, x, x, x, x, x, DType::FLOAT32};
}

Shapes ResnetBlockGradInferShape(const Shape& x, FC_FOUR(const Shape&, w),
                                 FC_FOUR(const Shape&, s),
                                 FC_FOUR(const Shape&, h), const Shape& out,
                                 const Shape& hidden1, const Shape& hidden2,
                                 FC_FOUR(const Shape&, z), const Shape& stats,
                                 const Shape& dout) {
  Shapes r{x};
  for (const Shapes& l : {Shapes FC_LIST(w), Shapes FC_LIST(s),
                          Shapes FC_LIST(h)})
    r.insert(r.end(), l.begin(), l.end());
  return r;
}

std::vector<DType> ResnetBlockGradInferDtype(
    const DType& x, FC_FOUR(const DType&, w), FC_FOUR(const DType&, s),
    FC_FOUR(const DType&, h), const DType& out, const DType& hidden1, const DType& hidden2,
    FC_FOUR(const DType&, z), const DType& stats, const DType& dout) {
  std::vector<DType> r{x};
  for (const std::vector<DType>& l :
       {std::vector<DType> FC_LIST(w), std::vector<DType> FC_LIST(s),
        std::vector<DType> FC_LIST(h)})
    r.insert(r.end(), l.begin(), l.end());
  return r;
}

std::vector<std::string> numbered(const char* p, bool grad) {
  std::vector<std::string> names;
  for (int sl = 0; sl < kBlockSlots; ++sl) {
    const std::string n = p + std::to_string(sl);
    names.push_back(grad ? paddle::Grad(n) : n);
  }
  return names;
}

std::vector<std::string> concat(std::vector<std::vector<std::string>> parts) {
  std::vector<std::string> r;
  for (const auto& p : parts) r.insert(r.end(), p.begin(), p.end());
  return r;
}

// X, Filter0..3, Scale0..3, Shift0..3, RunningMean[], RunningVar[]
std::vector<std::string> forward_inputs() {
  return concat({{"X"}, numbered("Filter", false), numbered("Scale", false),
                 numbered("Shift", false),
                 {paddle::Vec("RunningMean"), paddle::Vec("RunningVar")}});
}

std::vector<std::string> forward_outputs() {
  return concat({{"Out", paddle::Vec("MeanOut"), paddle::Vec("VarOut"),
                  "Hidden1", "Hidden2"},
                 numbered("Z", false),
                 {"SavedStats"}});
}

std::vector<std::string> grad_inputs() {
  return concat({{"X"}, numbered("Filter", false), numbered("Scale", false),
                 numbered("Shift", false), {"Out", "Hidden1", "Hidden2"},
                 numbered("Z", false),
                 {"SavedStats", paddle::Grad("Out")}});
}

std::vector<std::string> grad_outputs() {
  return concat({{paddle::Grad("X")}, numbered("Filter", true),
                 numbered("Scale", true), numbered("Shift", true)});
}

}  // namespace
}  // namespace fastconv

#define FC_RESNET_BLOCK_ATTRS                                               \
  {"activation_layout: std::string", "training: bool",                            \
   "strides: std::vector<int>", "paddings: std::vector<int>",               \
   "dilations: std::vector<int>", "groups: std::vector<int>",               \
   "momentum: std::vector<float>", "epsilon: std::vector<float>"}

PD_BUILD_OP(fastconv_resnet_block)
    .Inputs(fastconv::forward_inputs())
    .Outputs(fastconv::forward_outputs())
    .Attrs(FC_RESNET_BLOCK_ATTRS)
    .SetInplaceMap({{paddle::Vec("RunningMean"), paddle::Vec("MeanOut")},
                    {paddle::Vec("RunningVar"), paddle::Vec("VarOut")}})
    .SetKernelFn(PD_KERNEL(fastconv::ResnetBlockForward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ResnetBlockInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ResnetBlockInferDtype));

PD_BUILD_GRAD_OP(fastconv_resnet_block)
    .Inputs(fastconv::grad_inputs())
    .Outputs(fastconv::grad_outputs())
    .Attrs(FC_RESNET_BLOCK_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::ResnetBlockBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::ResnetBlockGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::ResnetBlockGradInferDtype));
