// extern "C" face of the emulated kernel library for ctypes: the launchers of
// bn_act_cuda.h with ChannelView spelled out as (outer, channels, inner),
// SliceStrides as trailing (ld_z, ld_y, ld_dy, ld_dz) and the dtype as an
// int, plus the emulator's knobs.  Launchers return their
// cudaError_t as an int.  Built by build.py with common/cuda_emulation.h.
#include <cstdint>

#include "conv_bn_act/bn_act_cuda.h"

using fastconv::cuda::ChannelView;
using fastconv::cuda::DType;
using fastconv::cuda::SliceStrides;

namespace {
ChannelView view(int64_t outer, int64_t channels, int64_t inner) {
  return ChannelView{outer, channels, inner};
}
SliceStrides lds(int64_t z, int64_t y, int64_t dy, int64_t dz) {
  SliceStrides s;
  s.z = z;
  s.y = y;
  s.dy = dy;
  s.dz = dz;
  return s;
}
#define FC_LDS int64_t ld_z, int64_t ld_y, int64_t ld_dy, int64_t ld_dz
#define FC_LDS_ARG lds(ld_z, ld_y, ld_dy, ld_dz)
}  // namespace

extern "C" {

int64_t fc_bn_workspace_bytes(int64_t o, int64_t c, int64_t i) {
  return static_cast<int64_t>(
      fastconv::cuda::bn_workspace_bytes(view(o, c, i)));
}

int fc_bn_stats(int dt, const void* z, int64_t o, int64_t c, int64_t i,
                const float* gamma, const float* beta, float* running_mean,
                float* running_var, float momentum, float eps,
                float* save_mean, float* save_invstd, float* coef_a,
                float* coef_b, void* workspace, FC_LDS) {
  return fastconv::cuda::launch_bn_stats(
      static_cast<DType>(dt), z, view(o, c, i), gamma, beta, running_mean,
      running_var, momentum, eps, save_mean, save_invstd, coef_a, coef_b,
      workspace, nullptr, FC_LDS_ARG);
}

int fc_bn_act_forward(int dt, const void* z, const void* residual,
                      const float* coef_a, const float* coef_b, int relu,
                      void* y, int64_t o, int64_t c, int64_t i, FC_LDS) {
  return fastconv::cuda::launch_bn_act_forward(
      static_cast<DType>(dt), z, residual, coef_a, coef_b, relu != 0, y,
      view(o, c, i), nullptr, FC_LDS_ARG);
}

int fc_bias_act_forward(int dt, const void* conv_out, const void* residual,
                        const float* bias, int relu, void* y, int64_t o,
                        int64_t c, int64_t i, FC_LDS) {
  return fastconv::cuda::launch_bias_act_forward(
      static_cast<DType>(dt), conv_out, residual, bias, relu != 0, y,
      view(o, c, i), nullptr, FC_LDS_ARG);
}

int fc_bn_act_backward_reduce(int dt, const void* dy, const void* y,
                              const void* z, const float* mean,
                              const float* invstd, int relu, int64_t o,
                              int64_t c, int64_t i, float* dgamma,
                              float* dbeta, void* workspace, FC_LDS) {
  return fastconv::cuda::launch_bn_act_backward_reduce(
      static_cast<DType>(dt), dy, y, z, mean, invstd, relu != 0,
      view(o, c, i), dgamma, dbeta, workspace, nullptr, FC_LDS_ARG);
}

int fc_bn_act_backward_apply(int dt, const void* dy, const void* y,
                             const void* z, const float* mean,
                             const float* invstd, const float* gamma,
                             const float* dgamma, const float* dbeta, int relu,
                             int training, int64_t o, int64_t c, int64_t i,
                             void* dz, void* dres, FC_LDS) {
  return fastconv::cuda::launch_bn_act_backward_apply(
      static_cast<DType>(dt), dy, y, z, mean, invstd, gamma, dgamma, dbeta,
      relu != 0, training != 0, view(o, c, i), dz, dres, nullptr, FC_LDS_ARG);
}

int fc_fold_bn(int dt, const void* w, const void* conv_bias,
               const float* gamma, const float* beta,
               const float* running_mean, const float* running_var, float eps,
               int64_t out_channels, int64_t per_filter, void* w_out,
               float* bias_out) {
  return fastconv::cuda::launch_fold_bn(
      static_cast<DType>(dt), w, conv_bias, gamma, beta, running_mean,
      running_var, eps, out_channels, per_filter, w_out, bias_out, nullptr);
}

// Emulator knobs (see common/cuda_emulation.h).
void fc_emu_set_seed(uint64_t seed) { fc_emu::set_seed(seed); }
void fc_emu_set_workers(int n) { fc_emu::set_workers(n); }
const char* fc_emu_last_fault() { return fc_emu::last_fault().c_str(); }

// Launch log: grid and block of every launch since the last clear, as
// out[0..5] = grid.x, grid.y, grid.z, block.x, block.y, block.z.
int64_t fc_emu_launch_count() {
  return static_cast<int64_t>(fc_emu::launch_log().size());
}
void fc_emu_launch_get(int64_t k, uint32_t* out) {
  const auto& r = fc_emu::launch_log().at(static_cast<size_t>(k));
  const uint32_t v[6] = {r.grid.x, r.grid.y, r.grid.z,
                         r.block.x, r.block.y, r.block.z};
  for (int j = 0; j < 6; ++j) out[j] = v[j];
}
void fc_emu_clear_launch_log() { fc_emu::clear_launch_log(); }

}  // extern "C"
