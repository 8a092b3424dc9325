// A small C ABI for the Python package (loaded through ctypes on the same
// library Paddle registered the ops from): threads, cache control and what
// this build contains.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>

#include "common/fingerprint.h"
#include "common/frozen_weights.h"
#include "common/host_pool.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "conv_bn_act/cpu_conv_engine.h"
#ifdef FASTCONV_WITH_ONEDNN
#include "conv_bn_act/folded_weights.h"
#include "onednn/conv_floor.h"
#include "onednn/conv_onednn.h"
#include "onednn/weight_cache.h"
#endif

#ifdef FASTCONV_CUDA_ON_HOST
#include "common/cuda_emulation.h"
#endif

extern "C" {

int fastconv_get_num_threads() { return fastconv::cpu::num_threads(); }

void fastconv_set_num_threads(int n) { fastconv::cpu::set_num_threads(n); }

// Caps the number of cached primitive plans (each of forward and backward)
// and of eval weight copies (each of folded and reordered-only).
void fastconv_set_cache_capacity(size_t plans, size_t folded) {
#ifdef FASTCONV_WITH_ONEDNN
  fastconv::onednn::set_plan_cache_capacity(plans);
  fastconv::set_folded_cache_capacity(folded);
  fastconv::onednn::set_prepared_cache_capacity(folded);
#endif
}

// Caps the bytes of freed output memory kept for reuse (0: no pooling).
void fastconv_set_host_pool_capacity(size_t bytes) {
  fastconv::set_host_pool_capacity(bytes);
}

// High-water mark of the pooled bytes in use since the last reset; reset = 1
// starts a new measurement and returns the bytes in use now.
size_t fastconv_host_pool_peak(int reset) {
  if (reset) return fastconv::reset_host_pool_peak();
  return fastconv::host_pool_peak_bytes();
}

int fastconv_host_pool_available() {
  return fastconv::host_pool_available() ? 1 : 0;
}

void fastconv_clear_caches() {
  fastconv::clear_host_pool();
#ifdef FASTCONV_WITH_ONEDNN
  fastconv::onednn::clear_plan_caches();
  fastconv::clear_folded_cache();
  fastconv::onednn::clear_prepared_cache();
  fastconv::onednn::ScratchArena::local().release();
#endif
}

// Drops the eval weight copies (folded or reordered-only) of the layer whose
// weight buffer starts at `weight_data`, and its frozen mark (the Python side
// calls it when that weight is freed).
size_t fastconv_release_eval_weights(uintptr_t weight_data) {
  fastconv::unfreeze_weight(weight_data);
#ifdef FASTCONV_WITH_ONEDNN
  return fastconv::release_folded_weights(weight_data) +
         fastconv::onednn::release_prepared_weights(weight_data);
#else
  (void)weight_data;
  return 0;
#endif
}

// Declares the buffer at `weight_data` constant (freeze = 1) or not: the eval
// caches trust their copies of a frozen buffer without fingerprinting it
// (common/frozen_weights.h).
void fastconv_freeze_weight(uintptr_t weight_data, int freeze) {
  if (freeze)
    fastconv::freeze_weight(weight_data);
  else
    fastconv::unfreeze_weight(weight_data);
}

// on = 0: every cached eval copy is trusted (no fingerprints); 1: the default.
void fastconv_set_weight_checks(int on) { fastconv::set_weight_checks(on != 0); }
int fastconv_get_weight_checks() {
  return fastconv::weight_checks_enabled() ? 1 : 0;
}

// Fingerprints taken so far (each one a read of a whole weight), and the
// number of buffers frozen now.
uint64_t fastconv_weight_checks() { return fastconv::fingerprint_count(); }
size_t fastconv_frozen_weight_count() { return fastconv::frozen_weight_count(); }

// out[0] = plan entries, out[1] = eval weight entries (folded and
// reordered-only), out[2] = bytes of
// the calling thread's scratch arena (oneDNN scratchpads and reorder buffers;
// memory outside Paddle's allocator, kept between calls), out[3] = bytes of
// freed output memory held for reuse (host_pool.h).
void fastconv_cache_sizes(size_t* out) {
  out[0] = out[1] = out[2] = 0;
  out[3] = fastconv::host_pool_cached_bytes();
#ifdef FASTCONV_WITH_ONEDNN
  out[0] = fastconv::onednn::plan_cache_size();
  out[1] = fastconv::folded_cache_size() +
           fastconv::onednn::prepared_cache_size();
  out[2] = fastconv::onednn::ScratchArena::local().capacity();
#endif
}

// oneDNN version of the library loaded at run time, "major.minor.patch", or
// "" when built without oneDNN.
void fastconv_onednn_version(char* buf, size_t n) {
  buf[0] = 0;
#ifdef FASTCONV_WITH_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  std::snprintf(buf, n, "%d.%d.%d", v->major, v->minor, v->patch);
#endif
}

// Whether eval plans can run 3x3 convolutions on the Winograd F(4x4, 3x3)
// kernel: 1 yes, 0 not on this CPU (no AVX-512F), 2 turned off by
// PADDLE_FASTCONV_WINOGRAD=0, 3 not built (no oneDNN engine to plan it).
int fastconv_winograd_state() {
#ifdef FASTCONV_WITH_ONEDNN
  return fastconv::onednn::winograd_state();
#else
  return 3;
#endif
}

// The same for the 1x1 kernels, NCHW and NHWC (PADDLE_FASTCONV_CONV1X1=0
// turns them off).
int fastconv_conv1x1_state() {
#ifdef FASTCONV_WITH_ONEDNN
  return fastconv::onednn::conv1x1_state();
#else
  return 3;
#endif
}

// 0 = oneDNN, 1 = Paddle's conv API.
int fastconv_get_cpu_conv_engine() {
  return static_cast<int>(fastconv::cpu_conv_engine());
}

// Returns 0 when that engine is not built in.
int fastconv_set_cpu_conv_engine(int e) {
  return fastconv::set_cpu_conv_engine(
             static_cast<fastconv::CpuConvEngine>(e))
             ? 1
             : 0;
}

// A set of oneDNN convolution passes on their preferred layouts, run back to
// back (see onednn/conv_floor.h): create, add passes, run (timed by the
// caller), destroy. Each call returns 0 on success, 1 without oneDNN in this
// build, 2 on an error (its message in err).
void* fastconv_conv_floor_create() {
#ifdef FASTCONV_WITH_ONEDNN
  return new fastconv::onednn::ConvPassSet();
#else
  return nullptr;
#endif
}

void fastconv_conv_floor_destroy(void* set) {
#ifdef FASTCONV_WITH_ONEDNN
  delete static_cast<fastconv::onednn::ConvPassSet*>(set);
#else
  (void)set;
#endif
}

// dims: N, C, H, W, O, KH, KW, stride_h, stride_w, dil_h, dil_w, pad_top,
// pad_bottom, pad_left, pad_right, groups. pass: 0 forward inference, 1
// forward training, 2 backward data, 3 backward weights.
int fastconv_conv_floor_add(void* set, const int64_t* dims, int pass, int times,
                            char* err, size_t err_n) {
  err[0] = 0;
#ifdef FASTCONV_WITH_ONEDNN
  try {
    fastconv::ConvGeometry g;
    g.N = dims[0], g.C = dims[1], g.H = dims[2], g.W = dims[3], g.O = dims[4];
    g.KH = dims[5], g.KW = dims[6], g.stride_h = dims[7], g.stride_w = dims[8];
    g.dil_h = dims[9], g.dil_w = dims[10], g.pad_top = dims[11];
    g.pad_bottom = dims[12], g.pad_left = dims[13], g.pad_right = dims[14];
    g.groups = dims[15];
    if (g.groups <= 0 || g.C % g.groups != 0 || g.O % g.groups != 0 || times < 1 ||
        pass < 0 || pass > 3) {
      std::snprintf(err, err_n, "invalid convolution (groups, times or pass)");
      return 2;
    }
    g.OH = fastconv::conv_out_size(g.H, g.KH, g.stride_h, g.dil_h, g.pad_top,
                                   g.pad_bottom);
    g.OW = fastconv::conv_out_size(g.W, g.KW, g.stride_w, g.dil_w, g.pad_left,
                                   g.pad_right);
    if (g.OH <= 0 || g.OW <= 0) {
      std::snprintf(err, err_n, "the input is smaller than the filter");
      return 2;
    }
    static_cast<fastconv::onednn::ConvPassSet*>(set)->add(
        g, static_cast<fastconv::onednn::ConvPass>(pass), times);
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_n, "%s", e.what());
    return 2;
  }
#else
  (void)set, (void)dims, (void)pass, (void)times, (void)err_n;
  return 1;
#endif
}

int fastconv_conv_floor_run(void* set, char* err, size_t err_n) {
  err[0] = 0;
#ifdef FASTCONV_WITH_ONEDNN
  try {
    static_cast<fastconv::onednn::ConvPassSet*>(set)->run();
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(err, err_n, "%s", e.what());
    return 2;
  }
#else
  (void)set, (void)err_n;
  return 1;
#endif
}

#ifdef FASTCONV_CUDA_ON_HOST
// Host test build only (see tools/build_config.py): kernel launches so far,
// so its tests can check that the CUDA engine, not the CPU one, ran.
int64_t fastconv_emulated_kernel_launches() {
  return static_cast<int64_t>(fc_emu::launch_log().size());
}
#endif

}  // extern "C"
