// CPU emulation of the part of CUDA that the fastconv kernels use, so that the
// unchanged .cu sources compile as host C++ and their kernels run, and are
// checked, on machines without a GPU (tests/test_cuda_kernels_emulated.py):
//
//   g++ -x c++ -std=c++17 -O2 -pthread -fno-strict-aliasing
//       -include common/cuda_emulation.h -Icsrc -Itests/cuda_emulation/include
//       -c csrc/conv_bn_act/bn_stats_kernels.cu
//
// tests/cuda_emulation/include holds stand-ins for <cuda_runtime.h>,
// <cuda_fp16.h> and <cuda_bf16.h> that just include this file, so no CUDA
// toolkit is needed.  -fno-strict-aliasing because the kernels type-pun
// activations through AlignedVec, which nvcc tolerates and g++ may not.
//
// Execution model (what a kernel may rely on is what CUDA guarantees; the
// emulator tries to break code that relies on more):
// - FC_CUDA_LAUNCH runs the whole grid before it returns.  Blocks run one
//   after another, or on several OS threads (set_workers / FC_EMU_WORKERS);
//   the threads of a block run as fibers on one OS thread.  A fiber runs
//   until it reaches __syncthreads(), a warp primitive or its end, so threads
//   interleave at the points where CUDA code may rely on each other's writes.
// - Each round of a block resumes its runnable fibers in a shuffled order,
//   and those of warp w only with probability speed[w] (drawn per block
//   between 1/16 and 1), so warps drift apart between barriers as they may on
//   hardware: code that misses a barrier reads stale data rather than
//   happening to work.  The randomness is seeded (set_seed / FC_EMU_SEED;
//   0 = all warps in lock-step, lanes in order), so a failure reproduces.
// - __shared__ is `static thread_local`: one instance per OS thread, i.e. per
//   running block, shared by the block's threads.  Like on hardware it holds
//   whatever the previous block left.  Dynamic shared memory is not emulated
//   (a launch with smem > 0 fails).
// - __syncthreads() is a barrier of all threads of the block; the warp
//   primitives a barrier of the 32 lanes of a full warp, with the full mask
//   only.  A barrier that cannot complete (divergent __syncthreads, a thread
//   that exited early) or a misuse fails the launch with
//   cudaErrorLaunchFailure and a message on stderr; it never hangs.
// - Launch configurations that hardware rejects (block > 1024 threads,
//   grid.y/z > 65535, empty dimensions) give cudaErrorInvalidConfiguration.
//   Errors are returned by the launch itself (and cudaGetLastError).
// - Arithmetic is the host's IEEE fp32 without FMA contraction (no -march
//   flags), fmaf is exactly rounded: results equal a GPU's up to nvcc's
//   contraction of a*b+c.  __half / __nv_bfloat16 are storage types only
//   (bits plus the round-to-nearest-even conversions); kernels compute in fp32.
// Only what the kernels use is provided; a kernel needing more fails to
// compile here, which is the signal to extend this file (or to not need it).
#pragma once

#ifdef __CUDACC__
#error "cuda_emulation.h is for host compilers; nvcc uses the CUDA headers"
#endif

#include <math.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------
// Qualifiers (__restrict__ is a g++ keyword already)
// ---------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

// ---------------------------------------------------------------------------
// Runtime API subset
// ---------------------------------------------------------------------------
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;
typedef struct CUstream_st* cudaStream_t;

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
      : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

namespace fc_emu {
inline thread_local cudaError_t t_last_error = cudaSuccess;
}  // namespace fc_emu

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = fc_emu::t_last_error;
  fc_emu::t_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return fc_emu::t_last_error; }
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
// Launches complete before they return.
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

// ---------------------------------------------------------------------------
// fp16 / bf16 storage types with round-to-nearest-even conversions
// ---------------------------------------------------------------------------
struct __half {
  uint16_t __x;
};
struct __nv_bfloat16 {
  uint16_t __x;
};

inline uint32_t fc_emu_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float fc_emu_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float __half2float(__half h) {
  const uint32_t sign = uint32_t{h.__x & 0x8000u} << 16;
  const uint32_t exp = (h.__x >> 10) & 0x1f, man = h.__x & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    const float m = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -m : m;
  }
  if (exp == 31) return fc_emu_float(sign | 0x7f800000u | (man << 13));
  return fc_emu_float(sign | ((exp + 112) << 23) | (man << 13));
}

inline __half __float2half_rn(float f) {
  const uint32_t u = fc_emu_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return {static_cast<uint16_t>(sign | 0x7e00u)};  // NaN
  // >= 65520 (half-way between 65504 and 2^16) rounds to infinity.
  if (a >= 0x477ff000u) return {static_cast<uint16_t>(sign | 0x7c00u)};
  if (a < 0x38800000u) {  // below 2^-14: subnormal, in units of 2^-24
    const float m = nearbyintf(fc_emu_float(a) * 16777216.f);  // exact scale
    return {static_cast<uint16_t>(sign | static_cast<uint16_t>(m))};
  }
  const uint32_t r = a - 0x38000000u;  // rebias the exponent by 127 - 15
  return {static_cast<uint16_t>(
      sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13))};
}
inline __half __float2half(float f) { return __float2half_rn(f); }

inline float __bfloat162float(__nv_bfloat16 h) {
  return fc_emu_float(uint32_t{h.__x} << 16);
}

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  const uint32_t u = fc_emu_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it quiet
    return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  }
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  return __float2bfloat16_rn(f);
}

// CUDA math functions that the host C library lacks.
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }

// ---------------------------------------------------------------------------
// Fibers: the threads of the block running on this OS thread
// ---------------------------------------------------------------------------
#ifndef FC_EMU_STACK_BYTES
#define FC_EMU_STACK_BYTES (64 * 1024)  // per CUDA thread, plus a guard page
#endif

namespace fc_emu {
namespace detail {

// Execution contexts.  On x86-64 a switch saves the callee-saved registers on
// the current stack and moves to the other one (no system call, unlike
// swapcontext, which saves the signal mask on every switch); elsewhere, or
// with FC_EMU_UCONTEXT, ucontext.
#if defined(__x86_64__) && !defined(FC_EMU_UCONTEXT)
struct Context {
  void* sp = nullptr;
};

// Pushes rbp, rbx, r12-r15 and the x87/SSE control words, stores the stack
// pointer in *from and pops the same from `to`.  noipa: callers must treat it
// as an unknown function that reads and writes memory.
__attribute__((naked, noinline, noipa)) inline void fc_switch_stack(
    void** /*from: rdi*/, void* /*to: rsi*/) {
  asm("pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n"
      "pushq %r14\n pushq %r15\n subq $8, %rsp\n"
      "stmxcsr (%rsp)\n fnstcw 4(%rsp)\n"
      "movq %rsp, (%rdi)\n movq %rsi, %rsp\n"
      "ldmxcsr (%rsp)\n fldcw 4(%rsp)\n addq $8, %rsp\n"
      "popq %r15\n popq %r14\n popq %r13\n popq %r12\n"
      "popq %rbx\n popq %rbp\n ret\n");
}

inline void switch_context(Context& from, Context& to) {
  fc_switch_stack(&from.sp, to.sp);
}

// A stack that fc_switch_stack "returns" into `entry`, aligned as if called.
inline void make_context(Context& c, char* stack, size_t bytes,
                         void (*entry)()) {
  void** sp = reinterpret_cast<void**>(
      (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t{15});
  *--sp = nullptr;  // entry's return address: it never returns
  *--sp = reinterpret_cast<void*>(entry);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;  // rbp, rbx, r12-r15
  const uint32_t control[2] = {0x1f80, 0x037f};  // default MXCSR, x87 CW
  std::memcpy(--sp, control, sizeof(control));
  c.sp = sp;
}
#else
struct Context {
  ucontext_t uc;
};

inline void switch_context(Context& from, Context& to) {
  swapcontext(&from.uc, &to.uc);
}

// Not inlined: getcontext() "returns twice" for the compiler, which would
// then warn about every local of the caller.
__attribute__((noinline)) inline void make_context(Context& c, char* stack,
                                                   size_t bytes,
                                                   void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = stack;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;  // entry never returns
  makecontext(&c.uc, entry, 0);
}
#endif

enum class Wait { kNone, kBlockBarrier, kWarpBarrier, kDone };

struct Fiber {
  Context ctx;
  uint3 tid;
  int warp, lane;
  Wait wait;
  uint64_t wait_gen;  // the barrier generation it waits to see pass
};

// One barrier generation per warp-wide exchange.  Values are written into the
// half of `slot` selected by the generation's parity: a lane can only write
// generation g + 2 after every lane has passed g + 1, i.e. read g.
struct WarpSync {
  uint64_t slot[2][32];
  int size = 32, arrived = 0;
  uint64_t gen = 0;
};

struct Block {
  uint3 idx;
  dim3 dim, grid;
  int nthreads = 0;
  std::vector<Fiber> fibers;
  std::vector<WarpSync> warps;
  Fiber* cur = nullptr;
  Context sched;
  int bar_arrived = 0;
  uint64_t bar_gen = 0;
  std::string fault;  // non-empty: the block failed
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
};

inline thread_local Block* t_block = nullptr;

// Stacks of this OS thread's fibers, kept across launches.
struct Stacks {
  char* base = nullptr;
  size_t bytes = 0;
  ~Stacks() {
    if (base != nullptr) munmap(base, bytes);
  }
  static size_t stride() { return FC_EMU_STACK_BYTES + 4096; }
  char* get(int n) {
    const size_t need = stride() * static_cast<size_t>(n);
    if (need > bytes) {
      if (base != nullptr) munmap(base, bytes);
      void* p = mmap(nullptr, need, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) {
        std::perror("fc_emu: mmap of fiber stacks");
        std::abort();
      }
      base = static_cast<char*>(p);
      bytes = need;
      // Guard page at the low end of each stack: an overflow faults.
      for (int i = 0; i < n; ++i) {
        if (mprotect(base + stride() * i, 4096, PROT_NONE) != 0) {
          std::perror("fc_emu: mprotect of a stack guard page");
          std::abort();
        }
      }
    }
    return base;
  }
};
inline thread_local Stacks t_stacks;

inline void yield() {
  Block* b = t_block;
  switch_context(b->cur->ctx, b->sched);
}

// Records the first error of the block and leaves the fiber for good.
[[noreturn]] inline void fault(const std::string& what) {
  Block* b = t_block;
  if (b->fault.empty()) {
    const uint3 t = b->cur->tid;
    b->fault = what + " (block " + std::to_string(b->idx.x) + "," +
               std::to_string(b->idx.y) + "," + std::to_string(b->idx.z) +
               ", thread " + std::to_string(t.x) + "," + std::to_string(t.y) +
               "," + std::to_string(t.z) + ")";
  }
  for (;;) yield();  // the scheduler never resumes a failed block
}

inline void fiber_main() {
  Block* b = t_block;
  b->body(b->body_arg);
  b->cur->wait = Wait::kDone;
  yield();  // for good: the scheduler does not resume finished fibers
}

// The scheduler resumes a waiting fiber only once its barrier generation has
// passed (see runnable()).
inline void block_barrier() {
  Block* b = t_block;
  b->cur->wait = Wait::kBlockBarrier;
  b->cur->wait_gen = b->bar_gen;
  if (++b->bar_arrived == b->nthreads) {
    b->bar_arrived = 0;
    ++b->bar_gen;
  }
  yield();
  b->cur->wait = Wait::kNone;
}

// All lanes of the caller's warp deposit `v`; each gets the value of lane
// src_lane(lane) (its own value when that is outside the warp).
template <typename T, typename F>
T warp_exchange(unsigned mask, T v, F src_lane) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "warp exchange of a wide type");
  Block* b = t_block;
  Fiber* f = b->cur;
  WarpSync& w = b->warps[f->warp];
  if (mask != 0xffffffffu || w.size != 32) {
    fault("warp primitive with a partial mask or warp (not emulated)");
  }
  uint64_t(&slot)[32] = w.slot[w.gen & 1];
  std::memcpy(&slot[f->lane], &v, sizeof(T));
  f->wait = Wait::kWarpBarrier;
  f->wait_gen = w.gen;
  if (++w.arrived == w.size) {
    w.arrived = 0;
    ++w.gen;
  }
  yield();
  f->wait = Wait::kNone;
  const int src = src_lane(f->lane);
  if (src < 0 || src >= 32) return v;
  T r;
  std::memcpy(&r, &slot[src], sizeof(T));
  return r;
}

inline uint64_t& seed() {
  static uint64_t s = std::getenv("FC_EMU_SEED") == nullptr
                          ? 1
                          : std::strtoull(std::getenv("FC_EMU_SEED"), 0, 0);
  return s;
}
inline int& workers() {
  static int n = std::getenv("FC_EMU_WORKERS") != nullptr
                     ? std::max(1, std::atoi(std::getenv("FC_EMU_WORKERS")))
                     : 1;
  return n;
}

inline std::string describe_deadlock(const Block& b) {
  int at_bar = 0, at_warp = 0, done = 0;
  for (const Fiber& f : b.fibers) {
    at_bar += f.wait == Wait::kBlockBarrier;
    at_warp += f.wait == Wait::kWarpBarrier;
    done += f.wait == Wait::kDone;
  }
  return "deadlock in block " + std::to_string(b.idx.x) + "," +
         std::to_string(b.idx.y) + "," + std::to_string(b.idx.z) + ": " +
         std::to_string(at_bar) + " threads wait at __syncthreads, " +
         std::to_string(at_warp) + " at a warp primitive, " +
         std::to_string(done) + " have exited";
}

// splitmix64: cheap, and the same sequence on every platform.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) * 0x1p-24f; }
  uint32_t below(uint32_t n) {
    return static_cast<uint32_t>(((next() >> 32) * n) >> 32);
  }
};

inline bool runnable(const Block& b, const Fiber& f) {
  switch (f.wait) {
    case Wait::kNone:
      return true;
    case Wait::kBlockBarrier:
      return b.bar_gen != f.wait_gen;
    case Wait::kWarpBarrier:
      return b.warps[f.warp].gen != f.wait_gen;
    case Wait::kDone:
      break;
  }
  return false;
}

// Runs block `idx` to completion on this OS thread; false (with b.fault set)
// on a fault or deadlock.  Each round resumes the fibers that are runnable at
// its start in a shuffled order, those of warp w only with probability
// speed[w] (drawn per block), so that warps drift apart between barriers.
inline bool run_block(Block& b, uint3 idx, uint64_t linear) {
  b.idx = idx;
  b.fault.clear();
  b.bar_arrived = 0;
  char* stacks = t_stacks.get(b.nthreads);
  for (int t = 0; t < b.nthreads; ++t) {
    b.fibers[t].wait = Wait::kNone;
    make_context(b.fibers[t].ctx, stacks + Stacks::stride() * t + 4096,
                 FC_EMU_STACK_BYTES, fiber_main);
  }
  for (WarpSync& w : b.warps) w.arrived = 0;
  const bool lockstep = seed() == 0;
  Rng rng{seed() * 0x9e3779b97f4a7c15ull + linear};
  std::vector<float> speed(b.warps.size(), 1.f);
  if (!lockstep) {
    // Log-uniform in [1/16, 1]: a slow warp sits out ~10 rounds in a row
    // often enough to expose races whose window spans that many steps.
    for (float& s : speed) s = exp2f(-4.f * rng.uniform());
  }
  std::vector<char> run_warp(b.warps.size(), 1);
  std::vector<int> batch;
  batch.reserve(b.nthreads);
  for (;;) {
    if (!lockstep) {
      for (size_t w = 0; w < speed.size(); ++w) {
        run_warp[w] = rng.uniform() < speed[w];
      }
    }
    bool any = false;
    batch.clear();
    for (int t = 0; t < b.nthreads; ++t) {
      if (!runnable(b, b.fibers[t])) continue;
      any = true;
      if (run_warp[b.fibers[t].warp]) batch.push_back(t);
    }
    if (!any) break;
    if (!lockstep) {
      for (size_t k = batch.size(); k > 1; --k) {  // Fisher-Yates
        std::swap(batch[k - 1], batch[rng.below(static_cast<uint32_t>(k))]);
      }
    }
    for (int t : batch) {
      b.cur = &b.fibers[t];
      switch_context(b.sched, b.cur->ctx);
      if (!b.fault.empty()) return false;
    }
  }
  for (const Fiber& f : b.fibers) {
    if (f.wait != Wait::kDone) {
      b.fault = describe_deadlock(b);
      return false;
    }
  }
  return true;
}

inline cudaError_t check_config(dim3 grid, dim3 block, size_t smem) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 ||
      grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  if (smem != 0) return cudaErrorInvalidValue;  // dynamic smem not emulated
  return cudaSuccess;
}

struct LaunchRecord {
  dim3 grid, block;
};
inline std::vector<LaunchRecord>& launch_log() {
  static std::vector<LaunchRecord> log;
  return log;
}
inline std::string& last_fault() {
  static std::string s;
  return s;
}

inline cudaError_t run_grid(dim3 grid, dim3 block, size_t smem,
                            void (*body)(void*), void* arg) {
  const cudaError_t cfg = check_config(grid, block, smem);
  if (cfg != cudaSuccess) return cfg;
  launch_log().push_back({grid, block});
  const uint64_t nblocks = uint64_t{grid.x} * grid.y * grid.z;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string first_fault;
  auto work = [&] {
    Block b;
    b.dim = block;
    b.grid = grid;
    b.nthreads = static_cast<int>(block.x * block.y * block.z);
    b.body = body;
    b.body_arg = arg;
    b.fibers.resize(b.nthreads);
    b.warps.resize((b.nthreads + 31) / 32);
    for (int t = 0; t < b.nthreads; ++t) {
      b.fibers[t].tid = {t % block.x, t / block.x % block.y,
                         t / (block.x * block.y)};
      b.fibers[t].warp = t / 32;
      b.fibers[t].lane = t % 32;
    }
    for (size_t w = 0; w < b.warps.size(); ++w) {
      b.warps[w].size = std::min(32, b.nthreads - static_cast<int>(w) * 32);
    }
    Block* const outer = t_block;
    t_block = &b;
    for (uint64_t i; !failed && (i = next++) < nblocks;) {
      const uint3 idx = {static_cast<unsigned>(i % grid.x),
                         static_cast<unsigned>(i / grid.x % grid.y),
                         static_cast<unsigned>(i / grid.x / grid.y)};
      if (!run_block(b, idx, i)) {
        std::lock_guard<std::mutex> lock(mu);
        if (!failed.exchange(true)) first_fault = b.fault;
      }
    }
    t_block = outer;
  };
  const int n = static_cast<int>(
      std::min<uint64_t>(static_cast<uint64_t>(workers()), nblocks));
  std::vector<std::thread> extra;
  for (int k = 1; k < n; ++k) extra.emplace_back(work);
  work();
  for (std::thread& t : extra) t.join();
  if (failed) {
    std::fprintf(stderr, "fc_emu: kernel failed: %s\n", first_fault.c_str());
    last_fault() = first_fault;
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace detail

// Knobs and introspection for tests.
inline void set_seed(uint64_t s) { detail::seed() = s; }
inline void set_workers(int n) { detail::workers() = std::max(1, n); }
inline const std::vector<detail::LaunchRecord>& launch_log() {
  return detail::launch_log();
}
inline void clear_launch_log() { detail::launch_log().clear(); }
inline const std::string& last_fault() { return detail::last_fault(); }

// kernel<<<grid, block, smem, stream>>>(args...), run to completion.  Sets
// the error cudaGetLastError() returns, and returns it.
template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   cudaStream_t /*stream*/, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "wrong number of arguments");
  struct Call {
    void (*kernel)(P...);
    std::tuple<std::decay_t<P>...> params;
    static void run(void* self) {
      Call* c = static_cast<Call*>(self);
      std::apply(c->kernel, c->params);  // each thread gets its own copies
    }
  } call{kernel, {static_cast<P>(std::forward<A>(args))...}};
  t_last_error = detail::run_grid(grid, block, smem, &Call::run, &call);
  return t_last_error;
}

}  // namespace fc_emu

// ---------------------------------------------------------------------------
// Built-in variables and device primitives
// ---------------------------------------------------------------------------
#define threadIdx (::fc_emu::detail::t_block->cur->tid)
#define blockIdx (::fc_emu::detail::t_block->idx)
#define blockDim (::fc_emu::detail::t_block->dim)
#define gridDim (::fc_emu::detail::t_block->grid)

inline void __syncthreads() { fc_emu::detail::block_barrier(); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  fc_emu::detail::warp_exchange(mask, 0, [](int l) { return l; });
}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return fc_emu::detail::warp_exchange(mask, v, [=](int l) {
    return l / width * width + src % width;
  });
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return fc_emu::detail::warp_exchange(mask, v, [=](int l) {
    return l % width + static_cast<int>(delta) < width
               ? l + static_cast<int>(delta) : l;
  });
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return fc_emu::detail::warp_exchange(mask, v, [=](int l) {
    return l % width >= static_cast<int>(delta) ? l - static_cast<int>(delta)
                                                : l;
  });
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  // A source in a later group of `width` lanes yields the caller's own value.
  return fc_emu::detail::warp_exchange(mask, v, [=](int l) {
    const int s = l ^ lane_mask;
    return s >= (l / width + 1) * width ? l : s;
  });
}

// cuda_utils.cuh routes every launch through this macro; like its CUDA
// definition it evaluates to cudaGetLastError() after the launch.
#define FC_CUDA_LAUNCH(kernel, grid, block, smem, stream, ...)           \
  (::fc_emu::launch((kernel), dim3(grid), dim3(block), (smem), (stream), \
                    __VA_ARGS__),                                        \
   cudaGetLastError())

// A GPU faults ("misaligned address") on a vector access that is not aligned
// to its size; x86 would quietly perform it. cuda_utils.cuh's load_vec /
// store_vec call this hook, so the emulator faults as the GPU would.
#define FC_CHECK_VEC_ALIGNED(p, bytes)                                   \
  do {                                                                   \
    if (reinterpret_cast<std::uintptr_t>(p) % (bytes) != 0) {            \
      ::fc_emu::detail::fault("misaligned " + std::to_string(bytes) +    \
                              "-byte vector access");                    \
    }                                                                    \
  } while (0)
