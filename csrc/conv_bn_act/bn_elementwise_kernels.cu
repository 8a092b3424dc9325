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

// Unit u covers elements [u * VEC, (u + 1) * VEC) of the dense view.  Its
// channel unit is cu = (u / inner_u) % chans_u and its row o = u / (inner_u *
// chans_u); the channel of element j is cu (NCHW) or cu * VEC + j
// (channels-last, inner_u == 1, chans_u == C / VEC).  An operand that is a
// channel slice (SliceStrides) has its unit at element u * VEC + o * gap.
struct EwGeom {
  int64_t units, inner_u, chans_u;
  int64_t stride;                  // gridDim.x * kBlock
  int64_t step_i, step_c, step_o;  // stride split into (row, channel, inner)
};

// Row gaps (row_gap) of the operands, in elements; 0 for dense ones.
struct EwGaps {
  int64_t a = 0, b = 0, c = 0, d = 0;
};

struct EwCursor {
  int64_t u, i, cu, o;

  __device__ EwCursor(const EwGeom& g, int64_t u0) : u(u0) {
    const int64_t row = div_nonneg(u0, g.inner_u);
    i = u0 - row * g.inner_u;
    o = div_nonneg(row, g.chans_u);
    cu = row - o * g.chans_u;
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
    o += g.step_o;
    if (cu >= g.chans_u) {
      cu -= g.chans_u;
      ++o;
    }
  }
};

// Element offset of unit u (in row o) of an operand with row gap `gap`.
template <int VEC>
__device__ __forceinline__ int64_t ew_offset(int64_t u, int64_t o,
                                             int64_t gap) {
  return u * VEC + o * gap;
}

template <bool kChannelsLast, int VEC>
__device__ __forceinline__ int64_t channel_of(int64_t cu, int j) {
  return kChannelsLast ? cu * VEC + j : cu;
}

// y = act(z * a[c] + b[c] (+ residual)); a == nullptr means a = 1.  Gaps:
// a = z, b = y (the residual is dense).  No
// __restrict__ on activations: y may alias z (each element is read before it
// is written, by the same thread).  Nor on the coefficients: it would let the
// compiler hoist VEC * kIlp coefficient loads and blow up register use.
template <typename T, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlock)
    bn_act_forward_kernel(const T* z, const T* residual, const float* coef_a,
                          const float* coef_b, bool relu, T* y, EwGeom g,
                          EwGaps gap) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  EwCursor cur(g, static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x);
  while (cur.u < g.units) {
    int64_t u[kIlp], cu[kIlp], o[kIlp];
    AlignedVec<T, VEC> vz[kIlp], vr[kIlp];
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      u[r] = cur.u;
      cu[r] = cur.cu;
      o[r] = cur.o;
      if (u[r] < g.units) {
        vz[r] = load_vec<VEC>(z + ew_offset<VEC>(u[r], o[r], gap.a));
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
      store_vec(y + ew_offset<VEC>(u[r], o[r], gap.b), out);
    }
  }
}

// g = relu ? (y > 0 ? dy : 0) : dy
// training: dz = gamma*invstd * (g - dbeta/count
//                                  - (z-mean)*invstd*dgamma/count)
// eval:     dz = gamma*invstd * g
// dres = g (optional).  Gaps: a = dy, b = y, c = z, d = dz (dres is dense).
template <typename T, int VEC, bool kChannelsLast>
__global__ void __launch_bounds__(kBlock) bn_act_backward_apply_kernel(
    const T* dy, const T* y, const T* z, const float* mean,
    const float* invstd, const float* gamma, const float* dgamma,
    const float* dbeta, float inv_count, bool relu, bool training, T* dz,
    T* dres, EwGeom g, EwGaps gap) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  EwCursor cur(g, static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x);
  while (cur.u < g.units) {
    int64_t u[kIlp], cu[kIlp], o[kIlp];
    AlignedVec<T, VEC> vdy[kIlp], vy[kIlp], vz[kIlp];
    FC_UNROLL
    for (int r = 0; r < kIlp; ++r) {
      u[r] = cur.u;
      cu[r] = cur.cu;
      o[r] = cur.o;
      if (u[r] < g.units) {
        vdy[r] = load_vec<VEC>(dy + ew_offset<VEC>(u[r], o[r], gap.a));
        if (relu) vy[r] = load_vec<VEC>(y + ew_offset<VEC>(u[r], o[r], gap.b));
        if (training) {
          vz[r] = load_vec<VEC>(z + ew_offset<VEC>(u[r], o[r], gap.c));
        }
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
      store_vec(dz + ew_offset<VEC>(u[r], o[r], gap.d), odz);
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
  g.step_o = step_rows / g.chans_u;
  return g;
}

template <typename T>
cudaError_t bn_act_forward_impl(const T* z, const T* residual,
                                const float* coef_a, const float* coef_b,
                                bool relu, T* y, const ChannelView& v,
                                const SliceStrides& ld, cudaStream_t stream) {
  const bool cl = v.inner == 1;
  EwGaps gap;
  gap.a = row_gap(ld.z, v);
  gap.b = row_gap(ld.y, v);
  return dispatch_vec<T>(
      pick_vec<T>(vec_run(v, {ld.z, ld.y}), {z, residual, y}),
      [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        dim3 grid;
        const EwGeom g = make_ew_geom(v, V, ilp_for(V * sizeof(T)), &grid);
        if constexpr (V > 1) {
          if (cl) {
            return FC_CUDA_LAUNCH((bn_act_forward_kernel<T, V, true>), grid,
                                  kBlock, 0, stream, z, residual, coef_a,
                                  coef_b, relu, y, g, gap);
          }
        }
        return FC_CUDA_LAUNCH((bn_act_forward_kernel<T, V, false>), grid,
                              kBlock, 0, stream, z, residual, coef_a, coef_b,
                              relu, y, g, gap);
      });
}

template <typename T>
cudaError_t bn_backward_apply_impl(const T* dy, const T* y, const T* z,
                                   const float* mean, const float* invstd,
                                   const float* gamma, const float* dgamma,
                                   const float* dbeta, bool relu,
                                   bool training, const ChannelView& v, T* dz,
                                   T* dres, const SliceStrides& ld,
                                   cudaStream_t stream) {
  const bool cl = v.inner == 1;
  EwGaps gap;
  gap.a = row_gap(ld.dy, v);
  gap.b = row_gap(ld.y, v);
  gap.c = row_gap(ld.z, v);
  gap.d = row_gap(ld.dz, v);
  const float inv_count =
      static_cast<float>(1.0 / static_cast<double>(v.outer * v.inner));
  return dispatch_vec<T>(
      pick_vec<T>(vec_run(v, {ld.dy, ld.y, ld.z, ld.dz}),
                  {dy, y, z, dz, dres}),
      [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        dim3 grid;
        const EwGeom g = make_ew_geom(v, V, ilp_for(V * sizeof(T)), &grid);
        if constexpr (V > 1) {
          if (cl) {
            return FC_CUDA_LAUNCH((bn_act_backward_apply_kernel<T, V, true>),
                                  grid, kBlock, 0, stream, dy, y, z, mean,
                                  invstd, gamma, dgamma, dbeta, inv_count,
                                  relu, training, dz, dres, g, gap);
          }
        }
        return FC_CUDA_LAUNCH((bn_act_backward_apply_kernel<T, V, false>),
                              grid, kBlock, 0, stream, dy, y, z, mean, invstd,
                              gamma, dgamma, dbeta, inv_count, relu, training,
                              dz, dres, g, gap);
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
                                  cudaStream_t stream, SliceStrides ld) {
  if (invalid_view(v) || invalid_strides(v, ld)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (z == nullptr || coef_a == nullptr || coef_b == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_act_forward_impl<T>(static_cast<const T*>(z),
                                    static_cast<const T*>(residual), coef_a,
                                    coef_b, relu, static_cast<T*>(y), v, ld,
                                    stream););
}

cudaError_t launch_bias_act_forward(DType dt, const void* conv_out,
                                    const void* residual, const float* bias,
                                    bool relu, void* y, ChannelView v,
                                    cudaStream_t stream, SliceStrides ld) {
  if (invalid_view(v) || invalid_strides(v, ld)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (conv_out == nullptr || bias == nullptr || y == nullptr) {
    return cudaErrorInvalidValue;
  }
  // Same kernel with a == nullptr (a = 1): fmaf(x, 1, b) == x + b exactly.
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_act_forward_impl<T>(static_cast<const T*>(conv_out),
                                    static_cast<const T*>(residual), nullptr,
                                    bias, relu, static_cast<T*>(y), v, ld,
                                    stream););
}

cudaError_t launch_bn_act_backward_apply(
    DType dt, const void* dy, const void* y, const void* z, const float* mean,
    const float* invstd, const float* gamma, const float* dgamma,
    const float* dbeta, bool relu, bool training, ChannelView v, void* dz,
    void* dres, cudaStream_t stream, SliceStrides ld) {
  if (invalid_view(v) || invalid_strides(v, ld)) return cudaErrorInvalidValue;
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
          static_cast<T*>(dres), ld, stream););
}

}  // namespace cuda
}  // namespace fastconv
