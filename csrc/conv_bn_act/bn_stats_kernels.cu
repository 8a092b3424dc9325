// Training statistics of the fused Conv+BN+act op (launch_bn_stats): per
// (channel, partial) Welford records, then one warp per channel merges them,
// derives save_mean / save_invstd / the affine coefficients and updates the
// running statistics.  See bn_kernels_common.cuh for the design notes.

#include "bn_kernels_common.cuh"

namespace fastconv {
namespace cuda {
using namespace bn_detail;  // shared internals, bn_kernels_common.cuh
namespace {

// Merges Welford state (nb, mb, m2b) into (n, mean, m2) (Chan et al.).
// Empty states (n == 0) are neutral.
__device__ __forceinline__ void welford_merge(float& n, float& mean,
                                              float& m2, float nb, float mb,
                                              float m2b) {
  const float nn = n + nb;
  if (nn == 0.f) return;
  const float delta = mb - mean;
  const float wb = nb / nn;
  mean += delta * wb;
  m2 += m2b + delta * delta * n * wb;
  n = nn;
}

// Adds one vector of VEC same-channel samples (shifted by `shift`): its own
// mean / M2 are computed exactly in registers, then merged, so there is one
// division per vector instead of one per element.
template <int VEC, typename T>
__device__ __forceinline__ void welford_add_vec(float& n, float& mean,
                                                float& m2,
                                                const AlignedVec<T, VEC>& v,
                                                float shift) {
  float x[VEC];
  float sum = 0.f;
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    x[j] = to_float(v.val[j]) - shift;
    sum += x[j];
  }
  const float vmean = sum * (1.f / VEC);  // VEC is a power of two: exact
  float vm2 = 0.f;
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    const float d = x[j] - vmean;
    vm2 += d * d;
  }
  welford_merge(n, mean, m2, static_cast<float>(VEC), vmean, vm2);
}

__device__ __forceinline__ void warp_welford_reduce(float& n, float& mean,
                                                    float& m2) {
  FC_UNROLL
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const float nb = fc_shfl_down(n, offset);
    const float mb = fc_shfl_down(mean, offset);
    const float m2b = fc_shfl_down(m2, offset);
    welford_merge(n, mean, m2, nb, mb, m2b);
  }
}

// Block-wide (1-D, kBlock threads) reductions; results valid in thread 0.
// They end with a barrier so their shared memory can be reused right away.
__device__ __forceinline__ void block_welford_reduce(float& n, float& mean,
                                                     float& m2) {
  __shared__ float sh[3][kWarpsPerBlock];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  warp_welford_reduce(n, mean, m2);
  if (lane == 0) {
    sh[0][warp] = n;
    sh[1][warp] = mean;
    sh[2][warp] = m2;
  }
  __syncthreads();
  if (warp == 0) {
    const bool has = lane < kWarpsPerBlock;
    n = has ? sh[0][lane] : 0.f;
    mean = has ? sh[1][lane] : 0.f;
    m2 = has ? sh[2][lane] : 0.f;
    warp_welford_reduce(n, mean, m2);
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------
// Stage 1 of the statistics: per (channel, partial) Welford records
// ---------------------------------------------------------------------------
// Workspace (floats): n[C*P] | mean[C*P] | m2[C*P] | shift[C], record of
// (c, p) at c * P + p.  Means are relative to shift[c] = z(0, c, 0).

// NCHW: grid (P, min(C, 65535)), 1-D blocks.  Block (p, c) reduces units
// [p * chunk_u, (p + 1) * chunk_u) of channel c's plane; consecutive threads
// read consecutive units of a row, so loads are coalesced.
template <typename T, int VEC>
__global__ void __launch_bounds__(kBlock)
    bn_stats_partial_nchw_kernel(const T* __restrict__ z, int64_t channels,
                                 int64_t ld, int64_t inner_u, int64_t plane_u,
                                 int64_t chunk_u, int64_t partials,
                                 float* __restrict__ ws_n,
                                 float* __restrict__ ws_mean,
                                 float* __restrict__ ws_m2,
                                 float* __restrict__ ws_shift) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  const int64_t p = blockIdx.x;
  const int64_t k_begin = p * chunk_u;
  const int64_t k_end = min_i64(plane_u, k_begin + chunk_u);
  for (int64_t c = blockIdx.y; c < channels; c += gridDim.y) {
    const float shift = to_float(z[c * inner_u * VEC]);
    float n = 0.f, mean = 0.f, m2 = 0.f;
    PlaneCursor cur(k_begin + threadIdx.x, inner_u);
    while (cur.k < k_end) {
      AlignedVec<T, VEC> x[kIlp];
      bool ok[kIlp];
      FC_UNROLL
      for (int r = 0; r < kIlp; ++r) {  // issue all loads first
        ok[r] = cur.k < k_end;
        if (ok[r]) x[r] = load_vec<VEC>(z + cur.unit(ld, c) * VEC);
        cur.next();
      }
      FC_UNROLL
      for (int r = 0; r < kIlp; ++r) {
        if (ok[r]) welford_add_vec(n, mean, m2, x[r], shift);
      }
    }
    block_welford_reduce(n, mean, m2);
    if (threadIdx.x == 0) {
      const int64_t idx = c * partials + p;
      ws_n[idx] = n;
      ws_mean[idx] = mean;
      ws_m2[idx] = m2;
      if (p == 0) ws_shift[c] = shift;
    }
  }
}

// Channels-last: the tensor is a [rows, C] matrix.  Block (tx, ty), tx a power
// of two <= 32 lanes over channel units (VEC channels each, coalesced), ty
// over rows.  grid (ceil(C / VEC / tx), P); partial p covers rows
// [p * rows_per_part, (p + 1) * rows_per_part).  The ty threads of a channel
// are merged by a tree in shared memory.
template <typename T, int VEC>
__global__ void __launch_bounds__(kBlock)
    bn_stats_partial_nhwc_kernel(const T* __restrict__ z, int64_t rows,
                                 int64_t channels, int64_t ld,
                                 int64_t rows_per_part,
                                 int64_t partials, float* __restrict__ ws_n,
                                 float* __restrict__ ws_mean,
                                 float* __restrict__ ws_m2,
                                 float* __restrict__ ws_shift) {
  constexpr int kIlp = ilp_for(VEC * sizeof(T));
  __shared__ float s_n[kBlock];
  __shared__ float s_mean[VEC][kBlock];
  __shared__ float s_m2[VEC][kBlock];

  const int tid = threadIdx.y * blockDim.x + threadIdx.x;
  const int64_t c0 =
      (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC;
  const bool active = c0 < channels;  // channels % VEC == 0
  const int64_t p = blockIdx.y;
  const int64_t r_begin = p * rows_per_part;
  const int64_t r_end = min_i64(rows, r_begin + rows_per_part);

  float n = 0.f, shift[VEC], mean[VEC], m2[VEC];
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) shift[j] = mean[j] = m2[j] = 0.f;
  if (active) {
    const AlignedVec<T, VEC> s = load_vec<VEC>(z + c0);  // row 0
    FC_UNROLL
    for (int j = 0; j < VEC; ++j) shift[j] = to_float(s.val[j]);
    for (int64_t r = r_begin + threadIdx.y; r < r_end;
         r += kIlp * blockDim.y) {
      AlignedVec<T, VEC> x[kIlp];
      FC_UNROLL
      for (int q = 0; q < kIlp; ++q) {
        const int64_t rr = r + q * blockDim.y;
        if (rr < r_end) x[q] = load_vec<VEC>(z + rr * ld + c0);
      }
      FC_UNROLL
      for (int q = 0; q < kIlp; ++q) {
        if (r + q * blockDim.y >= r_end) break;
        n += 1.f;
        const float inv_n = 1.f / n;  // shared by the VEC channels
        FC_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float xs = to_float(x[q].val[j]) - shift[j];
          const float d = xs - mean[j];
          mean[j] += d * inv_n;
          m2[j] += d * (xs - mean[j]);
        }
      }
    }
  }

  s_n[tid] = n;
  FC_UNROLL
  for (int j = 0; j < VEC; ++j) {
    s_mean[j][tid] = mean[j];
    s_m2[j][tid] = m2[j];
  }
  __syncthreads();
  // Tree over ty: in round s, row y < s absorbs row y + s (no row is both
  // read and written in the same round).
  for (int s = blockDim.y / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.y) < s) {
      const int o = tid + s * blockDim.x;
      const float nb = s_n[o];
      const float nn = n + nb;
      if (nn > 0.f) {
        const float wb = nb / nn;
        FC_UNROLL
        for (int j = 0; j < VEC; ++j) {
          const float d = s_mean[j][o] - mean[j];
          mean[j] += d * wb;
          m2[j] += s_m2[j][o] + d * d * n * wb;
          s_mean[j][tid] = mean[j];
          s_m2[j][tid] = m2[j];
        }
      }
      n = nn;
      s_n[tid] = n;
    }
    __syncthreads();
  }
  if (threadIdx.y == 0 && active) {
    FC_UNROLL
    for (int j = 0; j < VEC; ++j) {
      const int64_t idx = (c0 + j) * partials + p;
      ws_n[idx] = n;
      ws_mean[idx] = mean[j];
      ws_m2[idx] = m2[j];
      if (p == 0) ws_shift[c0 + j] = shift[j];
    }
  }
}

// Stage 2: one warp per channel merges its P records (lane l takes records
// l, l + 32, ... in order, then a shuffle tree), derives the batch statistics
// and coefficients and updates the running statistics.
__global__ void __launch_bounds__(kBlock) bn_stats_finalize_kernel(
    const float* __restrict__ ws_n, const float* __restrict__ ws_mean,
    const float* __restrict__ ws_m2, const float* __restrict__ ws_shift,
    int64_t channels, int64_t partials, const float* __restrict__ gamma,
    const float* __restrict__ beta, float* __restrict__ running_mean,
    float* __restrict__ running_var, float momentum, float eps,
    float* __restrict__ save_mean, float* __restrict__ save_invstd,
    float* __restrict__ coef_a, float* __restrict__ coef_b) {
  const int lane = threadIdx.x % kWarpSize;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock +
                   threadIdx.x / kWarpSize;
       c < channels; c += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    float n = 0.f, mean = 0.f, m2 = 0.f;
    for (int64_t p = lane; p < partials; p += kWarpSize) {
      const int64_t idx = c * partials + p;
      welford_merge(n, mean, m2, ws_n[idx], ws_mean[idx], ws_m2[idx]);
    }
    warp_welford_reduce(n, mean, m2);
    if (lane == 0) {
      const float batch_mean = ws_shift[c] + mean;
      const float var = n > 0.f ? fmaxf(m2 / n, 0.f) : 0.f;  // biased
      const float invstd = 1.f / sqrtf(var + eps);
      const float a = gamma[c] * invstd;
      save_mean[c] = batch_mean;
      save_invstd[c] = invstd;
      coef_a[c] = a;
      coef_b[c] = beta[c] - batch_mean * a;
      if (running_mean != nullptr) {
        running_mean[c] =
            momentum * running_mean[c] + (1.f - momentum) * batch_mean;
      }
      if (running_var != nullptr) {
        running_var[c] = momentum * running_var[c] + (1.f - momentum) * var;
      }
    }
  }
}

template <typename T>
cudaError_t bn_stats_impl(const T* z, const ChannelView& v,
                          const float* gamma, const float* beta,
                          float* running_mean, float* running_var,
                          float momentum, float eps, float* save_mean,
                          float* save_invstd, float* coef_a, float* coef_b,
                          float* ws, int64_t ld_z, cudaStream_t stream) {
  const int64_t C = v.channels;
  const int64_t ld = row_ld(ld_z, v);
  const int64_t P = num_partials(v);
  float* ws_n = ws;
  float* ws_mean = ws + C * P;
  float* ws_m2 = ws + 2 * C * P;
  float* ws_shift = ws + 3 * C * P;
  const bool cl = v.inner == 1;
  FC_RETURN_IF_ERROR(dispatch_vec<T>(
      pick_vec<T>(vec_run(v, {ld_z}), {z}), [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        if (cl) {
          const int tx = nhwc_tile_x(C / V);
          const dim3 block(tx, kBlock / tx);
          const dim3 grid(static_cast<unsigned>(ceil_div(C / V, tx)),
                          static_cast<unsigned>(P));
          return FC_CUDA_LAUNCH((bn_stats_partial_nhwc_kernel<T, V>), grid,
                                block, 0, stream, z, v.outer, C, ld,
                                ceil_div(v.outer, P), P, ws_n, ws_mean, ws_m2,
                                ws_shift);
        }
        const int64_t inner_u = v.inner / V;
        const int64_t plane_u = v.outer * inner_u;
        const dim3 grid(static_cast<unsigned>(P),
                        static_cast<unsigned>(std::min(C, kMaxGridY)));
        return FC_CUDA_LAUNCH((bn_stats_partial_nchw_kernel<T, V>), grid,
                              kBlock, 0, stream, z, C, ld, inner_u, plane_u,
                              ceil_div(plane_u, P), P, ws_n, ws_mean, ws_m2,
                              ws_shift);
      }));
  return FC_CUDA_LAUNCH(bn_stats_finalize_kernel, finalize_grid(C), kBlock, 0,
                        stream, ws_n, ws_mean, ws_m2, ws_shift, C, P, gamma,
                        beta, running_mean, running_var, momentum, eps,
                        save_mean, save_invstd, coef_a, coef_b);
}

}  // namespace

// ---------------------------------------------------------------------------
// Public launchers.  Order of checks: malformed sizes -> InvalidValue; empty
// tensors -> Success without launching (their pointers may be null); then the
// required pointers.
// ---------------------------------------------------------------------------

size_t bn_workspace_bytes(ChannelView v) {
  if (invalid_view(v) || numel(v) == 0) return 0;
  const int64_t P = num_partials(v);
  // Statistics need 3 floats per (channel, partial) plus the shifts; the
  // backward reduction needs 2 per (channel, partial).
  return static_cast<size_t>(3 * v.channels * P + v.channels) * sizeof(float);
}

cudaError_t launch_bn_stats(DType dt, const void* z, ChannelView v,
                            const float* gamma, const float* beta,
                            float* running_mean, float* running_var,
                            float momentum, float eps, float* save_mean,
                            float* save_invstd, float* coef_a, float* coef_b,
                            void* workspace, cudaStream_t stream,
                            SliceStrides ld) {
  if (invalid_view(v) || invalid_strides(v, ld)) return cudaErrorInvalidValue;
  if (numel(v) == 0) return cudaSuccess;
  if (z == nullptr || gamma == nullptr || beta == nullptr ||
      save_mean == nullptr || save_invstd == nullptr || coef_a == nullptr ||
      coef_b == nullptr || workspace == nullptr) {
    return cudaErrorInvalidValue;
  }
  return FC_DISPATCH_DTYPE(
      dt, T,
      return bn_stats_impl<T>(static_cast<const T*>(z), v, gamma, beta,
                              running_mean, running_var, momentum, eps,
                              save_mean, save_invstd, coef_a, coef_b,
                              static_cast<float*>(workspace), ld.z, stream););
}

}  // namespace cuda
}  // namespace fastconv
