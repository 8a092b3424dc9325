#include "conv_bn_act/folded_weights.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/fingerprint.h"
#include "common/frozen_weights.h"

namespace fastconv {
namespace {

constexpr size_t kDefaultFoldedCapacity = 256;

onednn::LruCache<const FoldedWeights>& cache() {
  static onednn::LruCache<const FoldedWeights> c(kDefaultFoldedCapacity);
  return c;
}

bool same(const std::vector<float>& copy, const float* p, size_t n) {
  return copy.size() == n && (n == 0 || std::memcmp(copy.data(), p, n * 4) == 0);
}

bool still_valid(const FoldedWeights& f, const paddle::Tensor& w,
                 const OptTensor& bias, const paddle::Tensor& scale,
                 const paddle::Tensor& shift, const paddle::Tensor& rm,
                 const paddle::Tensor& rv, float eps) {
  const size_t O = static_cast<size_t>(scale.numel());
  return f.eps == eps && same(f.gamma, scale.data<float>(), O) &&
         same(f.beta, shift.data<float>(), O) &&
         same(f.mean, rm.data<float>(), O) && same(f.var, rv.data<float>(), O) &&
         same(f.src_b, bias ? bias->data<float>() : nullptr, bias ? O : 0) &&
         f.w_numel == w.numel() &&
         (weight_trusted(w.data<float>()) ||
          f.w_fingerprint ==
              fingerprint64(w.data<float>(), w.numel() * sizeof(float)));
}

std::string key_prefix(uintptr_t weight_data) {
  return std::to_string(weight_data) + "|";
}

std::vector<float> copy_of(const float* p, int64_t n) {
  return std::vector<float>(p, p + n);
}

}  // namespace

std::shared_ptr<const FoldedWeights> get_folded_weights(
    const ConvGeometry& g, const paddle::Tensor& w, const OptTensor& bias,
    const paddle::Tensor& scale, const paddle::Tensor& shift,
    const paddle::Tensor& running_mean, const paddle::Tensor& running_var,
    float eps, bool residual, bool relu, dnnl::stream& s) {
  // One entry per layer: the weight buffer identifies the layer, the geometry
  // and options pick the primitive (its weight layout depends on them).
  const std::string key =
      key_prefix(reinterpret_cast<uintptr_t>(w.data<float>())) + g.key() + (residual ? "|r" : "|-") + (relu ? "a" : "-");
  auto hit = cache().get(key);
  if (hit && still_valid(*hit, w, bias, scale, shift, running_mean,
                         running_var, eps))
    return hit;

  auto f = std::make_shared<FoldedWeights>();
  onednn::ConvFwdOptions o;
  o.with_bias = true;  // the folded bias
  o.residual = residual;
  o.relu = relu;
  o.inference = true;
  o.allow_own_kernels = true;  // the prepared weights are cached here
  f->plan = onednn::ConvForwardPlan::get(g, o);

  const int64_t O = g.O, per = w.numel() / O;
  f->w_numel = w.numel();
  f->w_fingerprint = fingerprint64(w.data<float>(), w.numel() * sizeof(float));
  if (bias) f->src_b = copy_of(bias->data<float>(), O);
  f->gamma = copy_of(scale.data<float>(), O);
  f->beta = copy_of(shift.data<float>(), O);
  f->mean = copy_of(running_mean.data<float>(), O);
  f->var = copy_of(running_var.data<float>(), O);
  f->eps = eps;

  std::vector<float> folded(static_cast<size_t>(w.numel()));
  f->bias.resize(O);
  for (int64_t o_ = 0; o_ < O; ++o_) {
    const double sc = f->gamma[o_] / std::sqrt(double(f->var[o_]) + eps);
    const double b0 = bias ? f->src_b[o_] : 0.0;
    f->bias[o_] = static_cast<float>((b0 - f->mean[o_]) * sc + f->beta[o_]);
    for (int64_t k = 0; k < per; ++k)
      folded[o_ * per + k] = static_cast<float>(w.data<float>()[o_ * per + k] * sc);
  }
  f->w_block = std::make_unique<onednn::AlignedBlock>(
      f->plan->weights_desc().get_size());
  f->plan->prepare_weights(folded.data(), f->w_block->data(), s);
  cache().put(key, f);
  return f;
}

void set_folded_cache_capacity(size_t n) { cache().set_capacity(n); }
void clear_folded_cache() { cache().clear(); }
size_t release_folded_weights(uintptr_t weight_data) {
  return cache().erase_prefix(key_prefix(weight_data));
}
size_t folded_cache_size() { return cache().size(); }

}  // namespace fastconv
