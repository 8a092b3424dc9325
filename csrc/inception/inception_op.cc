// Registration of fastconv_inception and its grad op: argument checks,
// shape/dtype inference (static graphs), and the device branch.
#include <string>
#include <vector>

#include "common/check.h"
#include "inception/inception.h"

namespace fastconv {
namespace {

using Shapes = std::vector<std::vector<int64_t>>;

InceptionAttrs make_attrs(const std::string& data_format, bool training,
                          float momentum, float epsilon,
                          const std::vector<int>& stage_relu,
                          bool relu_after_concat) {
  FC_CHECK_ARG(stage_relu.size() == kStages, kInceptionOp, "stage_relu",
               "must have 6 flags (one per convolution), got ",
               stage_relu.size());
  FC_CHECK_ARG(epsilon >= 0.f, kInceptionOp, "epsilon",
               "must be non-negative, got ", epsilon);
  InceptionAttrs a;
  a.data_format = data_format;
  a.training = training;
  a.momentum = momentum;
  a.epsilon = epsilon;
  a.stage_relu = stage_relu;
  a.relu_after_concat = relu_after_concat;
  return a;
}

Shapes shapes_of(const TensorList& ts) {
  Shapes s;
  for (const auto& t : ts) s.push_back(t.shape());
  return s;
}

// Checks that hold for every device; returns the geometry.
InceptionGeometry check_inputs(const paddle::Tensor& x, const TensorList& w,
                               const TensorList& bias, const TensorList& scale,
                               const TensorList& shift, const TensorList* mean,
                               const TensorList* var, const InceptionAttrs& a) {
  const char* op = kInceptionOp;
  InceptionGeometry g = make_inception_geometry(
      x.shape(), shapes_of(w), shapes_of(bias), shapes_of(scale),
      a.data_format, false);
  // (backward has no running statistics: null mean/var)
  FC_CHECK_ARG(shift.size() == kStages &&
                   (!mean || (mean->size() == kStages && var->size() == kStages)),
               op, "bn_biases", "running means and variances must be lists "
               "of 6");
  for (int s = 0; s < kStages; ++s) {
    FC_CHECK_ARG(w[s].dtype() == x.dtype() && w[s].place() == x.place(), op,
                 "weights", "entry ", s, " must have x's dtype and device (",
                 x.dtype(), "), got ", w[s].dtype(), " on ", w[s].place());
    if (g.bias[s])
      FC_CHECK_ARG(bias[s].dtype() == x.dtype() &&
                       bias[s].place() == x.place(),
                   op, "biases", "entry ", s,
                   " must have x's dtype and device");
    if (!g.bn[s]) continue;
    const std::vector<int64_t> chan = {g.C[s]};
    const char* names[4] = {"bn_weights", "bn_biases", "running_means",
                            "running_vars"};
    const paddle::Tensor* ts[4] = {&scale[s], &shift[s],
                                   mean ? &(*mean)[s] : nullptr,
                                   var ? &(*var)[s] : nullptr};
    for (int k = 0; k < 4 && ts[k]; ++k)
      FC_CHECK_ARG(ts[k]->shape() == chan &&
                       ts[k]->dtype() == paddle::DataType::FLOAT32 &&
                       ts[k]->place() == x.place(),
                   op, names[k], "entry ", s, " must be a float32 [", g.C[s],
                   "] tensor on x's device, got ", shape_str(ts[k]->shape()),
                   " ", ts[k]->dtype());
  }
  FC_CHECK_ARG(!a.training || g.pixels() > 1, op, "x",
               "training needs more than one value per channel (batch * h * "
               "w = ", g.pixels(), ")");
  return g;
}

const char* const kKeptNames[kKeptCount] = {
    "SavedMerged", "SavedReduce3", "SavedReduce5",
    "SavedZ3",     "SavedZ5",      "SavedZProj"};

// What training kept must be what this geometry keeps.
void check_kept(const TensorList& kept, const InceptionGeometry& g,
                const paddle::Tensor& x) {
  for (int k = 0; k < kKeptCount; ++k) {
    const auto want = g.kept_shape(k, true);
    FC_CHECK_ARG(kept[k].shape() == want && kept[k].dtype() == x.dtype(),
                 kInceptionOp, kKeptNames[k], "has shape ",
                 shape_str(kept[k].shape()), ", expected ", shape_str(want),
                 " (was the forward run in training mode on this input?)");
  }
}

// The differentiable parameters are six separate inputs each (weights,
// biases, BN scales, BN shifts): a vector input's gradient would be a vector
// output of the grad op, which Paddle's static graph (PIR) refuses unless it
// is in place. The running statistics are in-place vectors.
#define FC_SIX(T, p) T p##0, T p##1, T p##2, T p##3, T p##4, T p##5
#define FC_LIST(p) {p##0, p##1, p##2, p##3, p##4, p##5}
using Tensor = paddle::Tensor;
using Shape = std::vector<int64_t>;
using DType = paddle::DataType;

TensorList InceptionForward(const Tensor& x, FC_SIX(const Tensor&, w),
                            FC_SIX(const Tensor&, b), FC_SIX(const Tensor&, s),
                            FC_SIX(const Tensor&, h), TensorList& mean,
                            TensorList& var, const std::string& data_format,
                            bool training, float momentum, float epsilon,
                            const std::vector<int>& stage_relu,
                            bool relu_after_concat) {
  const TensorList W = FC_LIST(w), B = FC_LIST(b), S = FC_LIST(s),
                   H = FC_LIST(h);
  const InceptionAttrs a = make_attrs(data_format, training, momentum, epsilon,
                                      stage_relu, relu_after_concat);
  const InceptionGeometry g = check_inputs(x, W, B, S, H, &mean, &var, a);
  // {Out, Kept..., SavedStats}; MeanOut/VarOut are the inputs, updated in
  // place.
#ifdef FASTCONV_WITH_CUDA
  if (runs_on_cuda_engine(x))
    return inception_forward_cuda(x, W, B, S, H, mean, var, g, a);
#endif
  if (x.is_cpu()) return inception_forward_cpu(x, W, B, S, H, mean, var, g, a);
  unsupported_device(kInceptionOp, x.place());
}

TensorList InceptionBackward(const Tensor& x, FC_SIX(const Tensor&, w),
                             FC_SIX(const Tensor&, b),
                             FC_SIX(const Tensor&, s),
                             FC_SIX(const Tensor&, h), const Tensor& out,
                             FC_SIX(const Tensor&, k),
                             const Tensor& saved_stats, const Tensor& dout,
                             const std::string& data_format,
                             bool training, float momentum, float epsilon,
                             const std::vector<int>& stage_relu,
                             bool relu_after_concat) {
  const TensorList W = FC_LIST(w), B = FC_LIST(b), S = FC_LIST(s),
                   H = FC_LIST(h), K = FC_LIST(k);
  const InceptionAttrs a = make_attrs(data_format, training, momentum, epsilon,
                                      stage_relu, relu_after_concat);
  const InceptionGeometry g =
      check_inputs(x, W, B, S, H, nullptr, nullptr, a);
  if (a.training) check_kept(K, g, x);
  FC_CHECK_ARG(dout.shape() == g.out_shape() && dout.dtype() == x.dtype() &&
                   out.shape() == g.out_shape(),
               kInceptionOp, "grad_out", "must match the output (shape ",
               shape_str(g.out_shape()), "), got ", shape_str(dout.shape()));
  FC_CHECK_ARG(saved_stats.numel() == g.stats_size(), kInceptionOp,
               "SavedStats", "has ", saved_stats.numel(),
               " elements, expected ", g.stats_size());
  TensorList grads;
#ifdef FASTCONV_WITH_CUDA
  if (runs_on_cuda_engine(x)) {
    grads = inception_backward_cuda(x, W, B, S, H, out, K, saved_stats, dout,
                                    g, a);
  } else
#endif
  if (x.is_cpu()) {
    grads = inception_backward_cpu(x, W, B, S, H, out, K, saved_stats, dout,
                                   g, a);
  } else {
    unsupported_device(kInceptionOp, x.place());
  }
  // Gradients of absent inputs: zeros shaped like their placeholders.
  const TensorList* inputs[4] = {&W, &B, &S, &H};
  for (int k = 1; k < 4; ++k)
    for (int st = 0; st < kStages; ++st) {
      Tensor& gt = grads[1 + k * kStages + st];
      const Tensor& in = (*inputs[k])[st];
      if (!gt.initialized())
        gt = paddle::full(in.shape(), 0, in.dtype(), x.place());
    }
  return grads;
}

// ------------------------------------------------------------ inference fns

Shapes InceptionInferShape(const Shape& x, FC_SIX(const Shape&, w),
                           FC_SIX(const Shape&, b), FC_SIX(const Shape&, s),
                           FC_SIX(const Shape&, h), const Shapes& mean,
                           const Shapes& var, const std::string& data_format,
                           bool training, float momentum, float epsilon,
                           const std::vector<int>& stage_relu,
                           bool relu_after_concat) {
  const InceptionGeometry g = make_inception_geometry(
      x, FC_LIST(w), FC_LIST(b), FC_LIST(s), data_format, true);
  Shapes out{g.out_shape()};  // (in-place outputs are not listed)
  for (int k = 0; k < kKeptCount; ++k)
    out.push_back(g.kept_shape(k, training));  // unknown sizes stay -1
  out.push_back({g.stats_size()});
  return out;
}

std::vector<DType> InceptionInferDtype(const DType& x, FC_SIX(const DType&, w),
                                       FC_SIX(const DType&, b),
                                       FC_SIX(const DType&, s),
                                       FC_SIX(const DType&, h),
                                       const std::vector<DType>& mean,
                                       const std::vector<DType>& var) {
  // Out, the kept tensors (x's dtype), SavedStats. (Spelled out: GCC 12
  // flags a sized vector plus push_back with a false -Warray-bounds.)
  static_assert(kKeptCount == 6, "one x per kept tensor");
  return {x, x, x, x, x, x, x, DType::FLOAT32};
}

Shapes InceptionGradInferShape(const Shape& x, FC_SIX(const Shape&, w),
                               FC_SIX(const Shape&, b),
                               FC_SIX(const Shape&, s),
                               FC_SIX(const Shape&, h), const Shape& out,
                               FC_SIX(const Shape&, k), const Shape& stats,
                               const Shape& dout) {
  Shapes r{x};
  for (const Shapes& l : {Shapes FC_LIST(w), Shapes FC_LIST(b),
                          Shapes FC_LIST(s), Shapes FC_LIST(h)})
    r.insert(r.end(), l.begin(), l.end());
  return r;
}

std::vector<DType> InceptionGradInferDtype(
    const DType& x, FC_SIX(const DType&, w), FC_SIX(const DType&, b),
    FC_SIX(const DType&, s), FC_SIX(const DType&, h), const DType& out,
    FC_SIX(const DType&, k), const DType& stats, const DType& dout) {
  std::vector<DType> r{x};
  for (const std::vector<DType>& l :
       {std::vector<DType> FC_LIST(w), std::vector<DType> FC_LIST(b),
        std::vector<DType> FC_LIST(s), std::vector<DType> FC_LIST(h)})
    r.insert(r.end(), l.begin(), l.end());
  return r;
}

// Input and output names: X, Filter0..5, Bias0..5, Scale0..5, Shift0..5.
std::vector<std::string> param_names(bool grad) {
  std::vector<std::string> names{grad ? paddle::Grad("X") : "X"};
  for (const char* p : {"Filter", "Bias", "Scale", "Shift"})
    for (int st = 0; st < kStages; ++st) {
      const std::string n = p + std::to_string(st);
      names.push_back(grad ? paddle::Grad(n) : n);
    }
  return names;
}

const std::vector<std::string>& kept_names() {
  static const std::vector<std::string> names(kKeptNames,
                                              kKeptNames + kKeptCount);
  return names;
}

std::vector<std::string> forward_outputs() {
  std::vector<std::string> n{"Out", paddle::Vec("MeanOut"),
                             paddle::Vec("VarOut")};
  n.insert(n.end(), kept_names().begin(), kept_names().end());
  n.push_back("SavedStats");
  return n;
}

std::vector<std::string> forward_inputs() {
  std::vector<std::string> n = param_names(false);
  n.push_back(paddle::Vec("RunningMean"));
  n.push_back(paddle::Vec("RunningVar"));
  return n;
}

std::vector<std::string> grad_inputs() {
  std::vector<std::string> n = param_names(false);
  n.push_back("Out");
  n.insert(n.end(), kept_names().begin(), kept_names().end());
  n.push_back("SavedStats");
  n.push_back(paddle::Grad("Out"));
  return n;
}

}  // namespace
}  // namespace fastconv

#define FC_INCEPTION_ATTRS                                               \
  {"activation_layout: std::string", "training: bool", "momentum: float",      \
   "epsilon: float", "stage_relu: std::vector<int>",                     \
   "relu_after_concat: bool"}

PD_BUILD_OP(fastconv_inception)
    .Inputs(fastconv::forward_inputs())
    .Outputs(fastconv::forward_outputs())
    .Attrs(FC_INCEPTION_ATTRS)
    .SetInplaceMap({{paddle::Vec("RunningMean"), paddle::Vec("MeanOut")},
                    {paddle::Vec("RunningVar"), paddle::Vec("VarOut")}})
    .SetKernelFn(PD_KERNEL(fastconv::InceptionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::InceptionInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::InceptionInferDtype));

PD_BUILD_GRAD_OP(fastconv_inception)
    .Inputs(fastconv::grad_inputs())
    .Outputs(fastconv::param_names(true))
    .Attrs(FC_INCEPTION_ATTRS)
    .SetKernelFn(PD_KERNEL(fastconv::InceptionBackward))
    .SetInferShapeFn(PD_INFER_SHAPE(fastconv::InceptionGradInferShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(fastconv::InceptionGradInferDtype));
