// Backward reduction of the fused Conv+BN+act op
// (launch_bn_act_backward_reduce): dbeta = sum g and dgamma = sum g * xhat per
// channel, with the same two-stage partition as the statistics.  See
// bn_kernels_common.cuh for the design notes.

#include "bn_kernels_common.cuh"

namespace fastconv {
namespace cuda {
using namespace bn_detail;  // shared internals, bn_kernels_common.cuh
namespace {

__device__ __forceinline__ void block_reduce_sum2(float& a, float& b) {
  __shared__ float sh[2][kWarpsPerBlock];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  a = warp_reduce_sum(a);
  b = warp_reduce_sum(b);
  if (lane == 0) {
    sh[0][warp] = a;
    sh[1][warp] = b;
  }
  __syncthreads();
  if (warp == 0) {
    a = warp_reduce_sum(lane < kWarpsPerBlock ? sh[0][lane] : 0.f);
    b = warp_reduce_sum(lane < kWarpsPerBlock ? sh[1][lane] : 0.f);
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------
// Backward reduction: same partition as the statistics.
// Workspace (floats): sum_g[C*P] | sum_g_zc[C*P], zc = z - mean[c].
// ---------------------------------------------------------------------------

// Row strides, in channels, of the three operands (row_ld: dense ones have
// ld == channels).
struct RowLds {
  int64_t dy, y, z;
};

template <int VEC, typename T>
__device__ __forceinline__ void accumulate_grad(const AlignedVec<T, VEC>& dy,
                                                const AlignedVec<T, VEC>& y,
                                                const AlignedVec<T, VEC>& z,
                                                bool relu, const float* mean,
                                                float* sg, float* sgz) {
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    const float dyf = to_float(dy.val[j]);
    const float g = relu ? (to_float(y.val[j]) > 0.f ? dyf : 0.f) : dyf;
    sg[j] += g;
    sgz[j] += g * (to_float(z.val[j]) - mean[j]);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kBlock) bn_backward_partial_nchw_kernel(
    const T* __restrict__ dy, const T* __restrict__ y,
    const T* __restrict__ z, const float* __restrict__ mean, bool relu,
    int64_t channels, RowLds ld, int64_t inner_u, int64_t plane_u,
    int64_t chunk_u, int64_t partials, float* __restrict__ ws_g,
    float* __restrict__ ws_gz) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  const int64_t p = blockIdx.x;
  const int64_t k_begin = p * chunk_u;
  const int64_t k_end = min_i64(plane_u, k_begin + chunk_u);
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    float m[VEC], sg[VEC], sgz[VEC];
    FC_UNROLL
    for (int j = 0; j < VEC; ++j) {
      m[j] = mean[c];
      sg[j] = sgz[j] = 0.f;
    }
    PlaneCursor cur(k_begin + threadIdx.x, inner_u);
    while (cur.k < k_end) {
      AlignedVec<T, VEC> vdy[kIlp], vy[kIlp], vz[kIlp];
      bool ok[kIlp];
      FC_UNROLL
      for (int r = 0; r < kIlp; ++r) {
        ok[r] = cur.k < k_end;
        if (ok[r]) {
          vdy[r] = load_vec<VEC>(dy + cur.unit(ld.dy, c) * VEC);
          vz[r] = load_vec<VEC>(z + cur.unit(ld.z, c) * VEC);
          if (relu) vy[r] = load_vec<VEC>(y + cur.unit(ld.y, c) * VEC);
        }
        cur.next();
      }
      FC_UNROLL
      for (int r = 0; r < kIlp; ++r) {
        if (ok[r]) accumulate_grad(vdy[r], vy[r], vz[r], relu, m, sg, sgz);
      }
    }
    float a = 0.f, b = 0.f;
    FC_UNROLL
    for (int j = 0; j < VEC; ++j) {
      a += sg[j];
      b += sgz[j];
    }
    block_reduce_sum2(a, b);
    if (threadIdx.x == 0) {
      ws_g[c * partials + p] = a;
      ws_gz[c * partials + p] = b;
    }
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kBlock) bn_backward_partial_nhwc_kernel(
    const T* __restrict__ dy, const T* __restrict__ y,
    const T* __restrict__ z, const float* __restrict__ mean, bool relu,
    int64_t rows, int64_t channels, RowLds ld, int64_t rows_per_part,
    int64_t partials, float* __restrict__ ws_g, float* __restrict__ ws_gz) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  __shared__ float s_g[VEC][kBlock];
  __shared__ float s_gz[VEC][kBlock];

  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int64_t c0 =
      (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  const bool active = c0 < channels;
  const int64_t p = blockIdx.y;
  const int64_t r_begin = p * rows_per_part;
  const int64_t r_end = min_i64(rows, r_begin + rows_per_part);

  float m[VEC], sg[VEC], sgz[VEC];
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    m[j] = active ? mean[c0 + j] : 0.f;
    sg[j] = sgz[j] = 0.f;
  }
  if (active) {
    for (int64_t r = r_begin + threadIdx.y; r < r_end;
         r += kIlp * blockDim.y) {
      AlignedVec<T, VEC> vdy[kIlp], vy[kIlp], vz[kIlp];
      FC_UNROLL
      for (int q = 0; q < kIlp; ++q) {
        const int64_t rr = r + q * blockDim.y;
        if (rr < r_end) {
          vdy[q] = load_vec<VEC>(dy + rr * ld.dy + c0);
          vz[q] = load_vec<VEC>(z + rr * ld.z + c0);
          if (relu) vy[q] = load_vec<VEC>(y + rr * ld.y + c0);
        }
      }
      FC_UNROLL
      for (int q = 0; q < kIlp; ++q) {
        if (r + q * blockDim.y < r_end) {
          accumulate_grad(vdy[q], vy[q], vz[q], relu, m, sg, sgz);
        }
      }
    }
  }

  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    s_g[j][tid] = sg[j];
    s_gz[j][tid] = sgz[j];
  }
  __syncthreads();
  for (int s = blockDim.y / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.y) < s) {
      const int o = tid + s * blockDim.x;
      FC_UNROLL
      for (int j = 0; j < VEC; ++j) {
        sg[j] += s_g[j][o];
        sgz[j] += s_gz[j][o];
        s_g[j][tid] = sg[j];
        s_gz[j][tid] = sgz[j];
      }
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && active) {
    FC_UNROLL
    for (int j = 0; j < VEC; ++j) {
      ws_g[(c0 + j) * partials + p] = sg[j];
      ws_gz[(c0 + j) * partials + p] = sgz[j];
    }
  }
}

__global__ void __launch_bounds__(kBlock) bn_backward_finalize_kernel(
    const float* __restrict__ ws_g, const float* __restrict__ ws_gz,
    int64_t channels, int64_t partials, const float* __restrict__ invstd,
    float* __restrict__ dgamma, float* __restrict__ dbeta) {
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock +
                   threadIdx.x / kWarpSize;
       c < channels; c += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    float sg = 0.f, sgz = 0.f;
    for (int64_t p = lane; p < partials; p += kWarpSize) {
      sg += ws_g[c * partials + p];
      sgz += ws_gz[c * partials + p];
    }
    sg = warp_reduce_sum(sg);
    sgz = warp_reduce_sum(sgz);
    if (lane == 0) {
      dbeta[c] = sg;
      dgamma[c] = sgz * invstd[c];
    }
  }
}

template <typename T>
cudaError_t bn_backward_reduce_impl(const T* dy, const T* y, const T* z,
                                    const float* mean, const float* invstd,
                                    bool relu, const ChannelView& v,
                                    float* dgamma, float* dbeta, float* ws,
                                    const SliceStrides& s,
                                    cudaStream_t stream) {
  const int64_t C = v.channels;
  const RowLds ld{row_ld(s.dy, v), row_ld(s.y, v), row_ld(s.z, v)};
  const int64_t P = num_partials(v);
  float* ws_g = ws;
  float* ws_gz = ws + C * P;
  const bool cl = v.inner == 1;
  FC_RETURN_IF_ERROR(dispatch_vec<T>(
      pick_vec<T>(vec_run(v, {s.dy, s.y, s.z}), {dy, y, z}),
      [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        if (cl) {
          const int tx = nhwc_tile_x(C / V);
          const dim3 block(tx, kBlock / tx);
          const dim3 grid(static_cast<unsigned>(ceil_div(C / V, tx)),
                          static_cast<unsigned>(P));
          return FC_CUDA_LAUNCH((bn_backward_partial_nhwc_kernel<T, V>), grid,
                                block, 0, stream, dy, y, z, mean, relu,
                                v.outer, C, ld, ceil_div(v.outer, P), P, ws_g,
                                ws_gz);
        }
        const int64_t inner_u = v.inner / V;
        const int64_t plane_u = v.outer * inner_u;
        const dim3 grid(static_cast<unsigned>(P),
                        static_cast<unsigned>(std::min(C, kMaxGridY)));
        return FC_CUDA_LAUNCH((bn_backward_partial_nchw_kernel<T, V>), grid,
                              kBlock, 0, stream, dy, y, z, mean, relu, C, ld,
                              inner_u, plane_u, ceil_div(plane_u, P), P, ws_g,
                              ws_gz);
      }));
  return FC_CUDA_LAUNCH(bn_backward_finalize_kernel, finalize_grid(C), kBlock,
                        0, stream, ws_g, ws_gz, C, P, invstd, dgamma, dbeta);
}

}  // namespace

// ---------------------------------------------------------------------------
// Public launchers.  Order of checks: malformed sizes -> InvalidValue; empty
// tensors -> Success without launching (their pointers may be null); then the
// required pointers.
// ---------------------------------------------------------------------------

cudaError_t launch_bn_act_backward_reduce(DType dt, const void* dy,
                                          const void* y, const void* z,
                                          const float* mean,
                                          const float* invstd, bool relu,
                                          ChannelView v, float* dgamma,
                                          float* dbeta, void* workspace,
                                          cudaStream_t stream,
                                          SliceStrides ld) {
  if (invalid_view(v) || invalid_strides(v, ld)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (dy == nullptr || z == nullptr || mean == nullptr || invstd == nullptr ||
      dgamma == nullptr || dbeta == nullptr || workspace == nullptr ||
      (relu && y == nullptr)) {
    return cudaErrorInvalidValue;
  }
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_backward_reduce_impl<T>(
          static_cast<const T*>(dy), relu ? static_cast<const T*>(y) : nullptr,
          static_cast<const T*>(z), mean, invstd, relu, v, dgamma, dbeta,
          static_cast<float*>(workspace), ld, stream););
}

}  // namespace cuda
}  // namespace fastconv
