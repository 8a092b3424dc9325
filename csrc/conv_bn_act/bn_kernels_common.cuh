// Internal header of the batch-norm kernels (bn_*_kernels.cu): tuning
// constants, index helpers and the host-side partition / vector-width choices
// shared by the statistics, backward-reduction and elementwise launchers.
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
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <type_traits>

#include "../common/cuda_utils.cuh"
#include "bn_act_cuda.h"

namespace fastconv {
namespace cuda {
namespace bn_detail {

constexpr int kBlock = 256;  // threads per block for every kernel here
constexpr int kWarpsPerBlock = kBlock / kWarpSize;

// Partition of the reductions (see num_partials).
constexpr int64_t kMaxPartials = 1024;                  // per channel
constexpr int64_t kMaxPartialSlots = int64_t{1} << 17;  // channels * partials
constexpr int64_t kTargetBlocks = 4096;       // NCHW: enough to fill any GPU
constexpr int64_t kMinElemsPerBlock = 4096;   // NCHW: per (channel, partial)
constexpr int64_t kMinRowsPerPartial = 64;    // channels-last

// Grid caps.  FC_BN_TEST_GRID_CAP is set only by the CPU-emulated tests
// (tests/cuda_emulation/): with a cap of a few blocks the grid-stride and
// channel loops run several iterations on tensors small enough to emulate.
// Production builds never define it.
#ifdef FC_BN_TEST_GRID_CAP
constexpr int64_t kMaxEwBlocks = FC_BN_TEST_GRID_CAP;
constexpr int64_t kMaxGridY = FC_BN_TEST_GRID_CAP;
#else
constexpr int64_t kMaxEwBlocks = int64_t{1} << 16;  // elementwise grid cap
constexpr int64_t kMaxGridY = 65535;
#endif

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
// Host side
// ---------------------------------------------------------------------------

inline bool invalid_view(const ChannelView& v) {
  return v.outer < 0 || v.channels < 0 || v.inner < 0;
}

inline int64_t numel(const ChannelView& v) {
  return v.outer * v.channels * v.inner;
}

// A slice's row stride must span at least its own channels.
inline bool invalid_strides(const ChannelView& v, const SliceStrides& s) {
  for (int64_t ld : {s.z, s.y, s.dy, s.dz}) {
    if (ld != 0 && ld < v.channels) return true;
  }
  return false;
}

// Row stride in channels of an operand (SliceStrides: 0 = dense).
inline int64_t row_ld(int64_t ld, const ChannelView& v) {
  return ld == 0 ? v.channels : ld;
}

// Extra elements between the end of one row of an operand and the start of
// the next: (ld - channels) * inner.
inline int64_t row_gap(int64_t ld, const ChannelView& v) {
  return (row_ld(ld, v) - v.channels) * v.inner;
}

// The run a vector unit must not cross (pick_vec): inner for NCHW, where
// every row stride is a multiple of it; for channels-last the channel count
// and every operand's row stride, so units stay aligned in each row (VEC is a
// power of two: gcd % VEC == 0 iff each is).
inline int64_t vec_run(const ChannelView& v,
                       std::initializer_list<int64_t> lds) {
  if (v.inner != 1) return v.inner;
  int64_t run = v.channels;
  for (int64_t ld : lds) run = std::gcd(run, row_ld(ld, v));
  return run;
}

// Partials per channel: a pure function of the view (not of dtype or device)
// so bn_workspace_bytes agrees with the launchers and results are
// reproducible.  NCHW aims at ~kTargetBlocks blocks of >= kMinElemsPerBlock
// elements; channels-last gives each partial >= kMinRowsPerPartial rows (a
// block there spans up to 32 * VEC channels).  Bounded by kMaxPartials and,
// unless C alone exceeds it, C * P <= kMaxPartialSlots.
inline int64_t num_partials(const ChannelView& v) {
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
inline int nhwc_tile_x(int64_t chan_units) {
  int tx = 1;
  while (tx < kWarpSize && tx < chan_units) tx *= 2;
  return tx;
}

inline dim3 finalize_grid(int64_t channels) {
  return dim3(static_cast<unsigned>(
      std::min(ceil_div(channels, kWarpsPerBlock), kMaxGridY)));
}

}  // namespace bn_detail
}  // namespace cuda
}  // namespace fastconv
