// CUDA kernels for the memory-bound parts of the fused Conv+BN+act op.
// See bn_act_cuda.h for the launcher contracts.
//
// Design notes
// - Element (o, c, i) of an activation lives at (o * C + c) * inner + i.  The
//   activation kernels never divide per element: they walk the tensor with
//   cursors whose (row, channel) coordinates advance by a fixed stride with
//   carries (one division per thread at start).
// - Accesses are vectorized in "units" of VEC elements (16 bytes at most)
//   whenever every activation pointer is aligned and a unit never straddles a
//   channel run: NCHW (inner > 1) needs inner % VEC == 0 and a unit holds VEC
//   elements of one channel; channels-last (inner == 1) needs C % VEC == 0 and
//   a unit holds VEC consecutive channels.  Otherwise VEC = 1.
// - Reductions are deterministic two-stage: stage 1 writes one record per
//   (channel, partial) into the workspace, stage 2 merges a channel's
//   partials in a fixed order with one warp per channel.  No atomics.
// - Statistics use Welford/Chan merging on data shifted by the channel's
//   first element, so fp32 stays accurate for means ~1e4 and counts ~2^31
//   (plain fp32 Welford loses ~ulp(mean) per step in the running mean).
//   Counts are fp32 too: exact up to 2^24 per thread and per partial, which
//   the partition keeps; beyond that only merge weights round (< 1e-7).
// - relu follows Paddle: relu(x) = x > 0 ? x : 0 (NaN -> 0) and its gradient
//   g = y > 0 ? dy : 0 (a select, so a NaN dy where y <= 0 gives 0).

#include "bn_act_cuda.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "../common/cuda_utils.cuh"

namespace fastconv {
namespace cuda {
namespace {

constexpr int kBlock = 256;  // threads per block for every kernel here
constexpr int kWarpsPerBlock = kBlock / kWarpSize;

// Partition of the reductions (see num_partials).
constexpr int64_t kMaxPartials = 1024;                  // per channel
constexpr int64_t kMaxPartialSlots = int64_t{1} << 17;  // channels * partials
constexpr int64_t kTargetBlocks = 4096;       // NCHW: enough to fill any GPU
constexpr int64_t kMinElemsPerBlock = 4096;   // NCHW: per (channel, partial)
constexpr int64_t kMinRowsPerPartial = 64;    // channels-last

constexpr int64_t kMaxEwBlocks = int64_t{1} << 16;  // elementwise grid cap
constexpr int64_t kMaxGridY = 65535;

// Independent loads in flight per thread and operand: up to 16 bytes' worth,
// which with the occupancy these kernels reach covers DRAM latency.  At most
// 4, since every batch slot keeps 64-bit indices live in registers.
__host__ __device__ constexpr int ilp_for(int bytes) {
  return bytes >= 16 ? 1 : (bytes >= 4 ? 16 / bytes : 4);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------

// a / b for a >= 0, b > 0.  64-bit division is a long software sequence, so
// take the 32-bit path when both operands fit (the common case).
__device__ __forceinline__ int64_t div_nonneg(int64_t a, int64_t b) {
  if (((a | b) >> 32) == 0) {
    return static_cast<int64_t>(static_cast<uint32_t>(a) /
                                static_cast<uint32_t>(b));
  }
  return a / b;
}

// Plain helper rather than the CUDA min() overloads, which host compilers
// (CPU emulation) do not have.
__device__ __forceinline__ int64_t min_i64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

__device__ __forceinline__ float relu_if(bool relu, float x) {
  return relu ? (x > 0.f ? x : 0.f) : x;
}

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

// Walks the units of one channel's (outer, inner_u) plane, k = o * inner_u + i,
// in steps of kBlock: one division at construction, carries afterwards.
struct PlaneCursor {
  int64_t k, o, i, step_o, step_i, inner_u;

  __device__ PlaneCursor(int64_t k0, int64_t inner) : k(k0), inner_u(inner) {
    o = div_nonneg(k0, inner);
    i = k0 - o * inner;
    step_o = div_nonneg(kBlock, inner);
    step_i = kBlock - step_o * inner;
  }
  // Unit offset of the current position in channel c.
  __device__ int64_t unit(int64_t channels, int64_t c) const {
    return (o * channels + c) * inner_u + i;
  }
  __device__ void next() {
    k += kBlock;
    o += step_o;
    i += step_i;
    if (i >= inner_u) {
      i -= inner_u;
      ++o;
    }
  }
};

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
                                 int64_t inner_u, int64_t plane_u,
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
        if (ok[r]) x[r] = load_vec<VEC>(z + cur.unit(channels, c) * VEC);
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
                                 int64_t channels, int64_t rows_per_part,
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
        if (rr < r_end) x[q] = load_vec<VEC>(z + rr * channels + c0);
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

// ---------------------------------------------------------------------------
// Backward reduction: same partition as the statistics.
// Workspace (floats): sum_g[C*P] | sum_g_zc[C*P], zc = z - mean[c].
// ---------------------------------------------------------------------------

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
    int64_t channels, int64_t inner_u, int64_t plane_u, int64_t chunk_u,
    int64_t partials, float* __restrict__ ws_g, float* __restrict__ ws_gz) {
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
          const int64_t off = cur.unit(channels, c) * VEC;
          vdy[r] = load_vec<VEC>(dy + off);
          vz[r] = load_vec<VEC>(z + off);
          if (relu) vy[r] = load_vec<VEC>(y + off);
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
    int64_t rows, int64_t channels, int64_t rows_per_part, int64_t partials,
    float* __restrict__ ws_g, float* __restrict__ ws_gz) {
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
          const int64_t off = rr * channels + c0;
          vdy[q] = load_vec<VEC>(dy + off);
          vz[q] = load_vec<VEC>(z + off);
          if (relu) vy[q] = load_vec<VEC>(y + off);
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

// Eval folding, one grid-stride pass over out_channels * per_filter weights
// followed by out_channels biases.  Weights are small, so the per-element
// division is acceptable here.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    fold_bn_kernel(const T* w, const T* __restrict__ conv_bias,
                   const float* __restrict__ gamma,
                   const float* __restrict__ beta,
                   const float* __restrict__ running_mean,
                   const float* __restrict__ running_var, float eps,
                   int64_t out_channels, int64_t per_filter, T* w_out,
                   float* __restrict__ bias_out) {
  const int64_t n_w = out_channels * per_filter;
  const int64_t total = n_w + out_channels;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(gridDim.x) * kBlock) {
    const int64_t o = idx < n_w ? div_nonneg(idx, per_filter) : idx - n_w;
    const float s = gamma[o] / sqrtf(running_var[o] + eps);
    if (idx < n_w) {
      w_out[idx] = from_float<T>(to_float(w[idx]) * s);
    } else {
      const float cb = conv_bias != nullptr ? to_float(conv_bias[o]) : 0.f;
      bias_out[o] = (cb - running_mean[o]) * s + beta[o];
    }
  }
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

bool invalid_view(const ChannelView& v) {
  return v.outer < 0 || v.channels < 0 || v.inner < 0;
}

int64_t numel(const ChannelView& v) { return v.outer * v.channels * v.inner; }

// Partials per channel: a pure function of the view (not of dtype or device)
// so bn_workspace_bytes agrees with the launchers and results are
// reproducible.  NCHW aims at ~kTargetBlocks blocks of >= kMinElemsPerBlock
// elements; channels-last gives each partial >= kMinRowsPerPartial rows (a
// block there spans up to 32 * VEC channels).  Bounded by kMaxPartials and,
// unless C alone exceeds it, C * P <= kMaxPartialSlots.
int64_t num_partials(const ChannelView& v) {
  int64_t p;
  if (v.inner == 1) {
    p = ceil_div(v.outer, kMinRowsPerPartial);
  } else {
    p = std::min(ceil_div(v.outer * v.inner, kMinElemsPerBlock),
                 ceil_div(kTargetBlocks, v.channels));
  }
  p = std::min({p, kMaxPartials,
                std::max<int64_t>(1, kMaxPartialSlots / v.channels)});
  return std::max<int64_t>(p, 1);
}

// Largest VEC <= 16 bytes with run % VEC == 0 and all (non-null) pointers
// aligned to VEC elements; run is the length of the contiguous stretch a unit
// must not cross (inner for NCHW, C for channels-last).
template <typename T>
int pick_vec(int64_t run, std::initializer_list<const void*> ptrs) {
  int vec = kMaxVec<T>;
  for (; vec > 1; vec /= 2) {
    bool ok = run % vec == 0;
    for (const void* p : ptrs) ok = ok && is_vec_aligned<T>(p, vec);
    if (ok) break;
  }
  return vec;
}

// Calls f(std::integral_constant<int, VEC>) for the runtime `vec`.
template <typename T, typename F>
cudaError_t dispatch_vec(int vec, F&& f) {
  switch (vec) {
    case 8:
      if constexpr (kMaxVec<T> >= 8) return f(std::integral_constant<int, 8>{});
      break;
    case 4:
      return f(std::integral_constant<int, 4>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    default:
      break;
  }
  return f(std::integral_constant<int, 1>{});
}

// Threads along the channel units of a channels-last block.
int nhwc_tile_x(int64_t chan_units) {
  int tx = 1;
  while (tx < kWarpSize && tx < chan_units) tx *= 2;
  return tx;
}

dim3 finalize_grid(int64_t channels) {
  return dim3(static_cast<unsigned>(
      std::min(ceil_div(channels, kWarpsPerBlock), kMaxGridY)));
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
cudaError_t bn_stats_impl(const T* z, const ChannelView& v,
                          const float* gamma, const float* beta,
                          float* running_mean, float* running_var,
                          float momentum, float eps, float* save_mean,
                          float* save_invstd, float* coef_a, float* coef_b,
                          float* ws, cudaStream_t stream) {
  const int64_t C = v.channels;
  const int64_t P = num_partials(v);
  float* ws_n = ws;
  float* ws_mean = ws + C * P;
  float* ws_m2 = ws + 2 * C * P;
  float* ws_shift = ws + 3 * C * P;
  const bool cl = v.inner == 1;
  FC_RETURN_IF_ERROR(dispatch_vec<T>(
      pick_vec<T>(cl ? C : v.inner, {z}), [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        if (cl) {
          const int tx = nhwc_tile_x(C / V);
          const dim3 block(tx, kBlock / tx);
          const dim3 grid(static_cast<unsigned>(ceil_div(C / V, tx)),
                          static_cast<unsigned>(P));
          return FC_CUDA_LAUNCH((bn_stats_partial_nhwc_kernel<T, V>), grid,
                                block, 0, stream, z, v.outer, C,
                                ceil_div(v.outer, P), P, ws_n, ws_mean, ws_m2,
                                ws_shift);
        }
        const int64_t inner_u = v.inner / V;
        const int64_t plane_u = v.outer * inner_u;
        const dim3 grid(static_cast<unsigned>(P),
                        static_cast<unsigned>(std::min(C, kMaxGridY)));
        return FC_CUDA_LAUNCH((bn_stats_partial_nchw_kernel<T, V>), grid,
                              kBlock, 0, stream, z, C, inner_u, plane_u,
                              ceil_div(plane_u, P), P, ws_n, ws_mean, ws_m2,
                              ws_shift);
      }));
  return FC_CUDA_LAUNCH(bn_stats_finalize_kernel, finalize_grid(C), kBlock, 0,
                        stream, ws_n, ws_mean, ws_m2, ws_shift, C, P, gamma,
                        beta, running_mean, running_var, momentum, eps,
                        save_mean, save_invstd, coef_a, coef_b);
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
cudaError_t bn_backward_reduce_impl(const T* dy, const T* y, const T* z,
                                    const float* mean, const float* invstd,
                                    bool relu, const ChannelView& v,
                                    float* dgamma, float* dbeta, float* ws,
                                    cudaStream_t stream) {
  const int64_t C = v.channels;
  const int64_t P = num_partials(v);
  float* ws_g = ws;
  float* ws_gz = ws + C * P;
  const bool cl = v.inner == 1;
  FC_RETURN_IF_ERROR(dispatch_vec<T>(
      pick_vec<T>(cl ? C : v.inner, {dy, y, z}), [&](auto vt) -> cudaError_t {
        constexpr int V = decltype(vt)::value;
        if (cl) {
          const int tx = nhwc_tile_x(C / V);
          const dim3 block(tx, kBlock / tx);
          const dim3 grid(static_cast<unsigned>(ceil_div(C / V, tx)),
                          static_cast<unsigned>(P));
          return FC_CUDA_LAUNCH((bn_backward_partial_nhwc_kernel<T, V>), grid,
                                block, 0, stream, dy, y, z, mean, relu,
                                v.outer, C, ceil_div(v.outer, P), P, ws_g,
                                ws_gz);
        }
        const int64_t inner_u = v.inner / V;
        const int64_t plane_u = v.outer * inner_u;
        const dim3 grid(static_cast<unsigned>(P),
                        static_cast<unsigned>(std::min(C, kMaxGridY)));
        return FC_CUDA_LAUNCH((bn_backward_partial_nchw_kernel<T, V>), grid,
                              kBlock, 0, stream, dy, y, z, mean, relu, C,
                              inner_u, plane_u, ceil_div(plane_u, P), P, ws_g,
                              ws_gz);
      }));
  return FC_CUDA_LAUNCH(bn_backward_finalize_kernel, finalize_grid(C), kBlock,
                        0, stream, ws_g, ws_gz, C, P, invstd, dgamma, dbeta);
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
                            void* workspace, cudaStream_t stream) {
  if (invalid_view(v)) return cudaErrorInvalidValue;
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
                              static_cast<float*>(workspace), stream););
}

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

cudaError_t launch_bn_act_backward_reduce(DType dt, const void* dy,
                                          const void* y, const void* z,
                                          const float* mean,
                                          const float* invstd, bool relu,
                                          ChannelView v, float* dgamma,
                                          float* dbeta, void* workspace,
                                          cudaStream_t stream) {
  if (invalid_view(v)) return cudaErrorInvalidValue;
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
          static_cast<float*>(workspace), stream););
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

cudaError_t launch_fold_bn(DType dt, const void* w, const void* conv_bias,
                           const float* gamma, const float* beta,
                           const float* running_mean, const float* running_var,
                           float eps, int64_t out_channels, int64_t per_filter,
                           void* w_out, float* bias_out, cudaStream_t stream) {
  if (out_channels < 0 || per_filter < 0) return cudaErrorInvalidValue;
  if (out_channels == 0) return cudaSuccess;
  if (gamma == nullptr || beta == nullptr || running_mean == nullptr ||
      running_var == nullptr || bias_out == nullptr ||
      (per_filter > 0 && (w == nullptr || w_out == nullptr))) {
    return cudaErrorInvalidValue;
  }
  const int64_t total = out_channels * per_filter + out_channels;
  const dim3 grid(
      static_cast<unsigned>(std::min(ceil_div(total, kBlock), kMaxEwBlocks)));
  return FC_DISPATCH_DTYPE(
      dt, T,
      return FC_CUDA_LAUNCH((fold_bn_kernel<T>), grid, kBlock, 0, stream,
                            static_cast<const T*>(w),
                            static_cast<const T*>(conv_bias), gamma, beta,
                            running_mean, running_var, eps, out_channels,
                            per_filter, static_cast<T*>(w_out), bias_out););
}

}  // namespace cuda
}  // namespace fastconv
