// Elementwise kernels of the fused Conv+BN+act op: the forward
// normalize + residual + act (launch_bn_act_forward), the eval bias epilogue
// (launch_bias_act_forward) and the backward apply
// (launch_bn_act_backward_apply).  See bn_kernels_common.cuh for the design
// notes.

#include "bn_kernels_common.cuh"

namespace fastconv {
namespace cuda {
using namespace bn_detail;  // shared internals, bn_kernels_common.cuh
namespace {

// ---------------------------------------------------------------------------
// Elementwise kernels: 1-D grid-stride over units, kIlp units per thread per
// batch (all loads of a batch are issued before any store).
// ---------------------------------------------------------------------------

// Unit u covers elements [u * VEC, (u + 1) * VEC).  Its channel unit is
// cu = (u / inner_u) % chans_u; the channel of element j is cu (NCHW) or
// cu * VEC + j (channels-last, inner_u == 1, chans_u == C / VEC).
struct EwGeom {
  int64_t units, inner_u, chans_u;
  int64_t stride;          // gridDim.x * kBlock
  int64_t step_i, step_c;  // stride % inner_u, (stride / inner_u) % chans_u
};

struct EwCursor {
  int64_t u, i, cu;

  __device__ EwCursor(const EwGeom& g, int64_t u0) : u(u0) {
    const int64_t row = div_nonneg(u0, g.inner_u);
    i = u0 - row * g.inner_u;
    cu = row - div_nonneg(row, g.chans_u) * g.chans_u;
  }
  // u += stride.  i + step_i < 2 * inner_u and cu + step_c + carry <
  // 2 * chans_u, so one conditional subtraction each suffices.
  __device__ void next(const EwGeom& g) {
    u += g.stride;
    i += g.step_i;
    int64_t carry = 0;
    if (i >= g.inner_u) {
      i -= g.inner_u;
      carry = 1;
    }
    cu += g.step_c + carry;
    if (cu >= g.chans_u) cu -= g.chans_u;
  }
};

template <bool kChannelsLast, int VEC>
__device__ __forceinline__ int64_t channel_of(int64_t cu, int j) {
  return kChannelsLast ? cu * VEC + j : cu;
}

// y = act(z * a[c] + b[c] (+ residual)); a == nullptr means a = 1.  No
// __restrict__ on activations: y may alias z (each element is read before it
// is written, by the same thread).  Nor on the coefficients: it would let the
// compiler hoist VEC * kIlp coefficient loads and blow up register use.
template <typename T, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlock)
    bn_act_forward_kernel(const T* z, const T* residual, const float* coef_a,
                          const float* coef_b, bool relu, T* y, EwGeom g) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  EwCursor cur(g, static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x);
  while (cur.u < g.units) {
    int64_t u[kIlp], cu[kIlp];
    AlignedVec<T, VEC> vz[kIlp], vr[kIlp];
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      u[r] = cur.u;
      cu[r] = cur.cu;
      if (u[r] < g.units) {
        vz[r] = load_vec<VEC>(z + u[r] * VEC);
        if (residual != nullptr) vr[r] = load_vec<VEC>(residual + u[r] * VEC);
      }
      cur.next(g);
    }
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      if (u[r] >= g.units) break;  // units of a batch are increasing
      AlignedVec<T, VEC> out;
      FC_UNROLL
      for (int j = 0; j < VEC; ++j) {
        const int64_t c = channel_of<kChannelsLast, VEC>(cu[r], j);
        const float a = coef_a != nullptr ? coef_a[c] : 1.f;
        float v = fmaf(to_float(vz[r].val[j]), a, coef_b[c]);
        if (residual != nullptr) v += to_float(vr[r].val[j]);
        out.val[j] = from_float<T>(relu_if(relu, v));
      }
      store_vec(y + u[r] * VEC, out);
    }
  }
}

// g = relu ? (y > 0 ? dy : 0) : dy
// training: dz = gamma*invstd * (g - dbeta/count
//                                  - (z-mean)*invstd*dgamma/count)
// eval:     dz = gamma*invstd * g
// dres = g (optional).
template <typename T, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlock) bn_act_backward_apply_kernel(
    const T* dy, const T* y, const T* z, const float* mean,
    const float* invstd, const float* gamma, const float* dgamma,
    const float* dbeta, float inv_count, bool relu, bool training, T* dz,
    T* dres, EwGeom g) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  EwCursor cur(g, static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x);
  while (cur.u < g.units) {
    int64_t u[kIlp], cu[kIlp];
    AlignedVec<T, VEC> vdy[kIlp], vy[kIlp], vz[kIlp];
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      u[r] = cur.u;
      cu[r] = cur.cu;
      if (u[r] < g.units) {
        const int64_t off = u[r] * VEC;
        vdy[r] = load_vec<VEC>(dy + off);
        if (relu) vy[r] = load_vec<VEC>(y + off);
        if (training) vz[r] = load_vec<VEC>(z + off);
      }
      cur.next(g);
    }
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      if (u[r] >= g.units) break;
      AlignedVec<T, VEC> odz, ores;
      FC_UNROLL
      for (int j = 0; j < VEC; ++j) {
        const int64_t c = channel_of<kChannelsLast, VEC>(cu[r], j);
        const float dyf = to_float(vdy[r].val[j]);
        const float gr =
            relu ? (to_float(vy[r].val[j]) > 0.f ? dyf : 0.f) : dyf;
        const float scale = gamma[c] * invstd[c];
        float d = gr;
        if (training) {
          d -= dbeta[c] * inv_count +
               (to_float(vz[r].val[j]) - mean[c]) * invstd[c] * dgamma[c] *
                   inv_count;
        }
        odz.val[j] = from_float<T>(scale * d);
        ores.val[j] = from_float<T>(gr);
      }
      store_vec(dz + u[r] * VEC, odz);
      if (dres != nullptr) store_vec(dres + u[r] * VEC, ores);
    }
  }
}

EwGeom make_ew_geom(const ChannelView& v, int vec, int ilp, dim3* grid) {
  const bool cl = v.inner == 1;
  EwGeom g;
  g.units = numel(v) / vec;
  g.inner_u = cl ? 1 : v.inner / vec;
  g.chans_u = cl ? v.channels / vec : v.channels;
  const int64_t blocks =
      std::min(ceil_div(g.units, int64_t{kBlock} * ilp), kMaxEwBlocks);
  *grid = dim3(static_cast<unsigned>(blocks));
  g.stride = blocks * kBlock;
  const int64_t step_rows = g.stride / g.inner_u;
  g.step_i = g.stride - step_rows * g.inner_u;
  g.step_c = step_rows % g.chans_u;
  return g;
}

template <typename T>
cudaError_t bn_act_forward_impl(const T* z, const T* residual,
                                const float* coef_a, const float* coef_b,
                                bool relu, T* y, const ChannelView& v,
                                cudaStream_t stream) {
  const bool cl = v.inner == 1;
  return dispatch_vec<T>(
      pick_vec<T>(cl ? v.channels : v.inner, {z, residual, y}),
      [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        dim3 grid;
        const EwGeom g = make_ew_geom(v, V, ilp_for(V * sizeof(T)), &grid);
        if constexpr (V > 1) {
          if (cl) {
            return FC_CUDA_LAUNCH((bn_act_forward_kernel<T, V, true>), grid,
                                  kBlock, 0, stream, z, residual, coef_a,
                                  coef_b, relu, y, g);
          }
        }
        return FC_CUDA_LAUNCH((bn_act_forward_kernel<T, V, false>), grid,
                              kBlock, 0, stream, z, residual, coef_a, coef_b,
                              relu, y, g);
      });
}

template <typename T>
cudaError_t bn_backward_apply_impl(const T* dy, const T* y, const T* z,
                                   const float* mean, const float* invstd,
                                   const float* gamma, const float* dgamma,
                                   const float* dbeta, bool relu,
                                   bool training, const ChannelView& v, T* dz,
                                   T* dres, cudaStream_t stream) {
  const bool cl = v.inner == 1;
  const float inv_count =
      static_cast<float>(1.0 / static_cast<double>(v.outer * v.inner));
  return dispatch_vec<T>(
      pick_vec<T>(cl ? v.channels : v.inner, {dy, y, z, dz, dres}),
      [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        dim3 grid;
        const EwGeom g = make_ew_geom(v, V, ilp_for(V * sizeof(T)), &grid);
        if constexpr (V > 1) {
          if (cl) {
            return FC_CUDA_LAUNCH((bn_act_backward_apply_kernel<T, V, true>),
                                  grid, kBlock, 0, stream, dy, y, z, mean,
                                  invstd, gamma, dgamma, dbeta, inv_count,
                                  relu, training, dz, dres, g);
          }
        }
        return FC_CUDA_LAUNCH((bn_act_backward_apply_kernel<T, V, false>),
                              grid, kBlock, 0, stream, dy, y, z, mean, invstd,
                              gamma, dgamma, dbeta, inv_count, relu, training,
                              dz, dres, g);
      });
}

}  // namespace

// ---------------------------------------------------------------------------
// Public launchers.  Order of checks: malformed sizes -> InvalidValue; empty
// tensors -> Success without launching (their pointers may be null); then the
// required pointers.
// ---------------------------------------------------------------------------

cudaError_t launch_bn_act_forward(DType dt, const void* z, const void* residual,
                                  const float* coef_a, const float* coef_b,
                                  bool relu, void* y, ChannelView v,
                                  cudaStream_t stream) {
  if (invalid_view(v)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (z == nullptr || coef_a == nullptr || coef_b == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_act_forward_impl<T>(static_cast<const T*>(z),
                                    static_cast<const T*>(residual), coef_a,
                                    coef_b, relu, static_cast<T*>(y), v,
                                    stream););
}

cudaError_t launch_bias_act_forward(DType dt, const void* conv_out,
                                    const void* residual, const float* bias,
                                    bool relu, void* y, ChannelView v,
                                    cudaStream_t stream) {
  if (invalid_view(v)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (conv_out == nullptr || bias == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  // Same kernel with a == nullptr (a = 1): fmaf(x, 1, b) == x + b exactly.
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_act_forward_impl<T>(static_cast<const T*>(conv_out),
                                    static_cast<const T*>(residual), nullptr,
                                    bias, relu, static_cast<T*>(y), v,
                                    stream););
}

cudaError_t launch_bn_act_backward_apply(
    DType dt, const void* dy, const void* y, const void* z, const float* mean,
    const float* invstd, const float* gamma, const float* dgamma,
    const float* dbeta, bool relu, bool training, ChannelView v, void* dz,
    void* dres, cudaStream_t stream) {
  if (invalid_view(v)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (dy == nullptr || invstd == nullptr || gamma == nullptr ||
      dz == nullptr || (relu && y == nullptr) ||
      (training && (z == nullptr || mean == nullptr || dgamma == nullptr ||
                    dbeta == nullptr))) {
    return cudaErrorInvalidValue;
  }
  // Unused operands are passed as null so they neither get read nor restrict
  // the vector width.
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_backward_apply_impl<T>(
          static_cast<const T*>(dy), relu ? static_cast<const T*>(y) : nullptr,
          training ? static_cast<const T*>(z) : nullptr, mean, invstd, gamma,
          dgamma, dbeta, relu, training, v, static_cast<T*>(dz),
          static_cast<T*>(dres), stream););
}

}  // namespace cuda
}  // namespace fastconv
