#include "onednn/conv_onednn.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "conv1x1/conv1x1_nchw.h"
#include "conv1x1/conv1x1_nhwc.h"
#include "conv_bn_act/bn_act_cpu.h"
#include "onednn/layout_reorder.h"
#include "winograd/winograd_f4x3.h"

namespace fastconv {
namespace onednn {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

constexpr size_t kDefaultPlanCapacity = 512;

LruCache<const ConvForwardPlan>& fwd_cache() {
  static LruCache<const ConvForwardPlan> c(kDefaultPlanCapacity);
  return c;
}
LruCache<const ConvBackwardPlan>& bwd_cache() {
  static LruCache<const ConvBackwardPlan> c(kDefaultPlanCapacity);
  return c;
}

// An unpadded, stride-1, ungrouped 1x1 convolution: a GEMM per image.
bool is_pointwise(const ConvGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride_h == 1 && g.stride_w == 1 &&
         g.pad_top == 0 && g.pad_bottom == 0 && g.pad_left == 0 &&
         g.pad_right == 0 && g.groups == 1;
}

// Whether activations are handed to oneDNN in their plain layout (see header).
bool use_plain_activations(const ConvGeometry& g) {
  static const char* env = std::getenv("PADDLE_FASTCONV_CONV_LAYOUT");
  if (env && std::strcmp(env, "plain") == 0) return true;
  if (env && std::strcmp(env, "blocked") == 0) return false;
  return g.channels_last || is_pointwise(g);
}

// Whether an unpadded 1x1/stride-1 ungrouped NCHW convolution whose epilogue
// runs outside oneDNN's GEMM convolution runs as per-thread GEMM pieces with
// the epilogue on each (see the header). Read when a plan is built.
bool use_gemm_pieces(const ConvGeometry& g) {
  const char* env = std::getenv("PADDLE_FASTCONV_GEMM_PIECES");
  if (env && std::strcmp(env, "0") == 0) return false;
  return !g.channels_last && is_pointwise(g);
}

// Whether the GEMM pieces of a C -> O convolution run on our 1x1 kernel with
// the epilogue on its register tiles instead (conv1x1/conv1x1_nchw.h: where
// it measured faster). PADDLE_FASTCONV_CONV1X1=0 turns it off; read when a
// plan is built.
bool use_conv1x1_kernel(const ConvGeometry& g) {
  return conv1x1_state() == 1 && conv1x1::preferred(g.C, g.O);
}

// Whether an inference plan that allows it runs an NHWC 1x1 convolution
// (unpadded, stride 1, ungrouped) on our 1x1 kernel (conv1x1/conv1x1_nhwc.h:
// where it measured faster than oneDNN's). Read when a plan is built.
bool use_conv1x1_nhwc(const ConvGeometry& g) {
  return conv1x1_state() == 1 && g.channels_last && is_pointwise(g) &&
         conv1x1::nhwc_preferred(g.C, g.O);
}

// Whether an inference plan that allows it runs the convolution on our
// Winograd F(4x4, 3x3) kernel (winograd/winograd_f4x3.h): 3x3, stride 1,
// dilation 1, ungrouped, channel counts multiples of 16, output planes of
// 14x14 or more, a CPU with AVX-512. Below 14x14 the tiles waste too much
// (a 7x7 plane takes 2x2 tiles of 4x4 outputs, 64 computed for 49) and the
// transformed filters (4x the plain ones) are re-read per block of few
// tiles: measured on the project's machine (AMD EPYC, 2 threads, batch 8,
// the kernel alone) 512->512 at 7x7 6.3-15 ms against ~4.6 ms for oneDNN's
// direct kernel. At 14x14 and up the fused eval layers take 0.44-0.75x the
// time of oneDNN's bare direct convolution (benchmarks/
// test_bench_epilogue.py at cb8a611: 64->64 at 56x56, 128->128 at 28x28,
// 256->256 at 14x14, NCHW and NHWC). PADDLE_FASTCONV_WINOGRAD=0 turns it
// off; read when a plan is built.
bool use_winograd(const ConvGeometry& g) {
  return winograd_state() == 1 && g.KH == 3 && g.KW == 3 && g.stride_h == 1 &&
         g.stride_w == 1 && g.dil_h == 1 && g.dil_w == 1 && g.groups == 1 &&
         g.OH >= 14 && g.OW >= 14 && winograd::channels_supported(g.C, g.O);
}

dnnl::primitive_attr scratch_attr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc make_fwd_pd(
    const Descs& d, bool with_bias, dnnl::prop_kind prop,
    const dnnl::primitive_attr& attr) {
  auto& eng = cpu_engine();
  const auto alg = dnnl::algorithm::convolution_direct;
  if (with_bias)
    return dnnl::convolution_forward::primitive_desc(
        eng, prop, alg, d.src, d.wei, d.bias, d.dst, d.strides, d.dilates,
        d.pad_l, d.pad_r, attr);
  return dnnl::convolution_forward::primitive_desc(
      eng, prop, alg, d.src, d.wei, d.dst, d.strides, d.dilates, d.pad_l,
      d.pad_r, attr);
}

dnnl::reorder make_reorder(const memory::desc& from, const memory::desc& to) {
  auto& eng = cpu_engine();
  return dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to));
}

memory wrap(const memory::desc& md, const void* p) {
  return memory(md, cpu_engine(), const_cast<void*>(p));
}

memory scratchpad(const memory::desc& md) { return scratch_memory(md); }

void run_reorder(const dnnl::reorder& r, const memory& from, const memory& to,
                 dnnl::stream& s) {
  r.execute(s, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
}

}  // namespace

Descs make_descs(const ConvGeometry& g, bool with_bias) {
  Descs d;
  const tag act_tag = g.channels_last ? tag::nhwc : tag::nchw;
  const memory::dims src_dims = {g.N, g.C, g.H, g.W};
  const memory::dims dst_dims = {g.N, g.O, g.OH, g.OW};
  memory::dims wei_dims;
  tag wei_tag;
  if (g.groups > 1) {
    wei_dims = {g.groups, g.O / g.groups, g.C / g.groups, g.KH, g.KW};
    wei_tag = tag::goihw;
  } else {
    wei_dims = {g.O, g.C, g.KH, g.KW};
    wei_tag = tag::oihw;
  }
  d.src_plain = memory::desc(src_dims, dt::f32, act_tag);
  d.dst_plain = memory::desc(dst_dims, dt::f32, act_tag);
  d.wei_plain = memory::desc(wei_dims, dt::f32, wei_tag);
  const bool plain = use_plain_activations(g);
  d.src = plain ? d.src_plain : memory::desc(src_dims, dt::f32, tag::any);
  d.dst = plain ? d.dst_plain : memory::desc(dst_dims, dt::f32, tag::any);
  d.wei = memory::desc(wei_dims, dt::f32, tag::any);
  if (with_bias) d.bias = memory::desc({g.O}, dt::f32, tag::x);
  d.strides = {g.stride_h, g.stride_w};
  d.dilates = {g.dil_h - 1, g.dil_w - 1};  // oneDNN counts extra gaps
  d.pad_l = {g.pad_top, g.pad_left};
  d.pad_r = {g.pad_bottom, g.pad_right};
  return d;
}

// ----------------------------------------------------------------- forward

ConvForwardPlan::ConvForwardPlan(const ConvGeometry& g, const ConvFwdOptions& o)
    : g_(g), o_(o) {
  Descs d = make_descs(g, o.with_bias);
  user_src_ = d.src_plain;
  user_dst_ = d.dst_plain;
  user_wei_ = d.wei_plain;
  bias_md_ = d.bias;
  if (o.inference && o.allow_own_kernels && use_winograd(g)) {
    build_winograd();
    return;
  }
  if (o.inference && o.allow_own_kernels && use_conv1x1_nhwc(g)) {
    conv1x1_nhwc_ = true;  // plain NHWC in and out; weights transposed
    wei_desc_ = memory::desc(
        {static_cast<memory::dim>(conv1x1::nhwc_weights_floats(g.C, g.O))},
        dt::f32, tag::a);
    return;
  }
  const auto prop = o.inference ? dnnl::prop_kind::forward_inference
                                : dnnl::prop_kind::forward_training;
  // The residual is read by a binary-add post-op where the primitive writes
  // the plain layout directly: the convolution's own pass adds it. Otherwise
  // (blocked destination, or an implementation without that post-op) it is
  // placed in the destination first and accumulated by the sum post-op; that
  // costs a copy of the residual (8.3 ms against 4.7 ms for a 64->256 1x1 at
  // 56x56, batch 8, NHWC on the 2-core machine).
  auto attr_with = [&](bool binary) {
    dnnl::primitive_attr attr = scratch_attr();
    dnnl::post_ops po;
    if (o.residual && binary)
      po.append_binary(dnnl::algorithm::binary_add, d.dst_plain);
    else if (o.residual)
      po.append_sum(1.f);
    if (o.relu) po.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(po);
    return attr;
  };
  if (o.residual) {
    try {
      pd_ = make_fwd_pd(d, o.with_bias, prop, attr_with(true));
      const std::string impl = pd_.impl_info_str();
      residual_binary_ = pd_.dst_desc() == user_dst_ &&
                         impl.find("ref") == std::string::npos &&
                         impl.find("gemm") == std::string::npos;
    } catch (const dnnl::error&) {
      residual_binary_ = false;  // not implemented for this shape: sum below
    }
  }
  if (!residual_binary_) pd_ = make_fwd_pd(d, o.with_bias, prop, attr_with(false));
  const bool has_epilogue = o.with_bias || o.residual || o.relu;
  if (has_epilogue &&
      std::string(pd_.impl_info_str()).find("gemm") != std::string::npos) {
    epilogue_outside_ = true;
    ones_.assign(g.O, 1.f);
    zeros_.assign(g.O, 0.f);
    pd_ = make_fwd_pd(d, false, prop, scratch_attr());
  }
  prim_ = dnnl::convolution_forward(pd_);
  wei_desc_ = pd_.weights_desc();
  reorder_src_ = pd_.src_desc() != user_src_;
  reorder_dst_ = pd_.dst_desc() != user_dst_;
  reorder_wei_ = pd_.weights_desc() != user_wei_;
  // The pieces read plain weights W[O x C] and plain activations.
  gemm_pieces_ = epilogue_outside_ && !reorder_src_ && !reorder_dst_ &&
                 !reorder_wei_ && use_gemm_pieces(g);
  conv1x1_kernel_ = gemm_pieces_ && use_conv1x1_kernel(g);
  if (reorder_src_) src_in_ = make_reorder(user_src_, pd_.src_desc());
  if (reorder_dst_) {
    dst_out_ = make_reorder(pd_.dst_desc(), user_dst_);
    if (o.residual) res_in_ = make_reorder(user_dst_, pd_.dst_desc());
  }
  if (reorder_wei_) wei_in_ = make_reorder(user_wei_, pd_.weights_desc());
}

void ConvForwardPlan::build_winograd() {
  winograd_ = true;
  wei_desc_ = memory::desc(
      {static_cast<memory::dim>(winograd::transformed_weights_floats(g_.C, g_.O))},
      dt::f32, tag::a);
  if (g_.channels_last) return;  // the kernel reads and writes NHWC in place
  // NCHW: the kernel wants 16 channels of a pixel together; nChw16c copies.
  wino_src_b_ = memory::desc({g_.N, g_.C, g_.H, g_.W}, dt::f32, tag::nChw16c);
  wino_dst_b_ = memory::desc({g_.N, g_.O, g_.OH, g_.OW}, dt::f32, tag::nChw16c);
  reorder_src_ = reorder_dst_ = true;
  src_in_ = make_reorder(user_src_, wino_src_b_);
  dst_out_ = make_reorder(wino_dst_b_, user_dst_);
  if (o_.residual) res_in_ = make_reorder(user_dst_, wino_dst_b_);
}

std::shared_ptr<const ConvForwardPlan> ConvForwardPlan::get(
    const ConvGeometry& g, const ConvFwdOptions& o) {
  const std::string key = key_of(g, o);
  auto plan = fwd_cache().get(key);
  if (!plan) {
    plan = std::make_shared<const ConvForwardPlan>(g, o);
    fwd_cache().put(key, plan);
  }
  return plan;
}

std::string ConvForwardPlan::key_of(const ConvGeometry& g,
                                    const ConvFwdOptions& o) {
  return g.key() + (o.with_bias ? "|b" : "|-") + (o.residual ? "r" : "-") +
         (o.relu ? "a" : "-") + (o.inference ? "i" : "t") +
         (o.inference && o.allow_own_kernels ? "w" : "-");
}

void ConvForwardPlan::prepare_weights(const float* w, void* dst,
                                      dnnl::stream& s) const {
  if (winograd_) {
    winograd::transform_weights(w, g_.O, g_.C, static_cast<float*>(dst));
    return;
  }
  if (conv1x1_nhwc_) {
    conv1x1::transpose_weights(w, g_.O, g_.C, static_cast<float*>(dst));
    return;
  }
  memory from = wrap(user_wei_, w);
  memory to = wrap(pd_.weights_desc(), dst);
  if (reorder_wei_) {
    run_reorder(wei_in_, from, to, s);
    s.wait();
  } else {
    std::memcpy(dst, w, user_wei_.get_size());
  }
}

void ConvForwardPlan::execute(const float* x, const void* weights,
                              const float* bias, const float* residual,
                              float* y, dnnl::stream& s) const {
  if (winograd_) {
    execute_winograd(x, static_cast<const float*>(weights), bias, residual, y,
                     s);
    return;
  }
  if (conv1x1_nhwc_) {
    conv1x1::forward_nhwc({g_.N * g_.OH * g_.OW, g_.C, g_.O}, x,
                          static_cast<const float*>(weights),
                          o_.with_bias ? bias : nullptr,
                          o_.residual ? residual : nullptr, o_.relu, y);
    return;
  }
  if (gemm_pieces_) {  // plain layouts throughout: no reorder, no primitive
    execute_gemm_pieces(x, static_cast<const float*>(weights), bias, residual,
                        y);
    return;
  }
  memory src = wrap(user_src_, x);
  if (reorder_src_) {
    memory blocked = scratch_memory(pd_.src_desc());
    run_reorder(src_in_, src, blocked, s);
    src = blocked;
  }
  memory user_dst = wrap(user_dst_, y);
  memory dst = reorder_dst_ ? scratch_memory(pd_.dst_desc()) : user_dst;
  if (epilogue_outside_) {
    // Plain layout (the GEMM path never reorders): conv, then one pass.
    prim_.execute(s, {{DNNL_ARG_SRC, src},
                      {DNNL_ARG_WEIGHTS, wrap(pd_.weights_desc(), weights)},
                      {DNNL_ARG_DST, user_dst},
                      {DNNL_ARG_SCRATCHPAD, scratchpad(pd_.scratchpad_desc())}});
    s.wait();
    const std::vector<int64_t> os = g_.out_shape();
    const cpu::ChannelView v =
        cpu::view_of_4d(os[0], os[1], os[2], os[3], g_.channels_last);
    cpu::bn_act_forward(y, o_.residual ? residual : nullptr, ones_.data(),
                        o_.with_bias ? bias : zeros_.data(), o_.relu, y, v);
    return;
  }
  if (o_.residual && !residual_binary_) {
    // Seed the destination with the residual for the sum post-op.
    memory res = wrap(user_dst_, residual);
    if (reorder_dst_)
      run_reorder(res_in_, res, dst, s);
    else
      std::memcpy(y, residual, user_dst_.get_size());
  }
  std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, src},
      {DNNL_ARG_WEIGHTS, wrap(pd_.weights_desc(), weights)},
      {DNNL_ARG_DST, dst},
      {DNNL_ARG_SCRATCHPAD, scratchpad(pd_.scratchpad_desc())}};
  if (o_.with_bias) args[DNNL_ARG_BIAS] = wrap(bias_md_, bias);
  if (residual_binary_)
    args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1] =
        wrap(user_dst_, residual);
  prim_.execute(s, args);
  if (reorder_dst_) run_reorder(dst_out_, dst, user_dst, s);
  s.wait();
}

void ConvForwardPlan::execute_winograd(const float* x, const float* u,
                                       const float* bias,
                                       const float* residual, float* y,
                                       dnnl::stream& s) const {
  winograd::F4x3Problem p;
  p.N = g_.N, p.C = g_.C, p.H = g_.H, p.W = g_.W;
  p.O = g_.O, p.OH = g_.OH, p.OW = g_.OW;
  p.pad_top = g_.pad_top, p.pad_left = g_.pad_left;
  const float* b = o_.with_bias ? bias : nullptr;
  const float* res = o_.residual ? residual : nullptr;
  if (g_.channels_last) {
    p.src = winograd::VecLayout::nhwc(g_.C, g_.H, g_.W);
    p.dst = winograd::VecLayout::nhwc(g_.O, g_.OH, g_.OW);
    winograd::forward(p, x, u, b, res, o_.relu, y);
    return;
  }
  p.src = winograd::VecLayout::nchw16c(g_.C, g_.H, g_.W);
  p.dst = winograd::VecLayout::nchw16c(g_.O, g_.OH, g_.OW);
  memory xb = scratch_memory(wino_src_b_), yb = scratch_memory(wino_dst_b_);
  run_reorder(src_in_, wrap(user_src_, x), xb, s);
  const float* res_b = nullptr;
  if (res) {
    memory rb = scratch_memory(wino_dst_b_);
    run_reorder(res_in_, wrap(user_dst_, res), rb, s);
    res_b = static_cast<const float*>(rb.get_data_handle());
  }
  s.wait();
  winograd::forward(p, static_cast<const float*>(xb.get_data_handle()), u, b,
                    res_b, o_.relu, static_cast<float*>(yb.get_data_handle()));
  run_reorder(dst_out_, yb, wrap(user_dst_, y), s);
  s.wait();
}

void ConvForwardPlan::execute_gemm_pieces(const float* x, const float* w,
                                          const float* bias,
                                          const float* residual,
                                          float* y) const {
  const int64_t C = g_.C, O = g_.O, HW = g_.OH * g_.OW;
  const float* res = o_.residual ? residual : nullptr;
  if (conv1x1_kernel_) {
    conv1x1::forward_nchw({g_.N, C, O, HW}, x, w, o_.with_bias ? bias : nullptr,
                          res, o_.relu, y);
    return;
  }
  const float* b = o_.with_bias ? bias : zeros_.data();
  const int64_t total = g_.N * HW;  // output columns of the whole batch
  std::atomic<int> failed{static_cast<int>(dnnl_success)};
#pragma omp parallel
  {
    // An equal share of columns per thread, walked image by image. sgemm
    // runs single-threaded inside the parallel region.
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t c = total * t / nt;
    const int64_t end = total * (t + 1) / nt;
    while (c < end) {
      const int64_t n = c / HW, p = c % HW;
      const int64_t len = std::min(end - c, HW - p);
      const int64_t at = n * O * HW + p;
      const dnnl_status_t st = dnnl_sgemm('N', 'N', O, len, C, 1.f, w, C,
                                          x + n * C * HW + p, HW, 0.f, y + at,
                                          HW);
      if (st != dnnl_success) {
        failed = static_cast<int>(st);
        break;
      }
      cpu::bias_act_rows(y + at, res ? res + at : nullptr, b, o_.relu, O, len,
                         HW);
      c += len;
    }
  }
  if (failed != static_cast<int>(dnnl_success))
    throw dnnl::error(static_cast<dnnl_status_t>(failed.load()),
                      "oneDNN's sgemm failed in a 1x1 convolution");
}

// ---------------------------------------------------------------- backward

ConvBackwardPlan::ConvBackwardPlan(const ConvGeometry& g, bool with_bias)
    : g_(g), with_bias_(with_bias) {
  Descs d = make_descs(g, with_bias);
  user_src_ = d.src_plain;
  user_dst_ = d.dst_plain;
  user_wei_ = d.wei_plain;
  bias_md_ = d.bias;
  auto& eng = cpu_engine();
  const auto alg = dnnl::algorithm::convolution_direct;
  auto hint = make_fwd_pd(d, with_bias, dnnl::prop_kind::forward_training,
                          dnnl::primitive_attr());
  dnnl::primitive_attr attr = scratch_attr();
  data_pd_ = dnnl::convolution_backward_data::primitive_desc(
      eng, alg, d.src, d.wei, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r,
      hint, attr);
  data_prim_ = dnnl::convolution_backward_data(data_pd_);
  if (with_bias)
    wei_pd_ = dnnl::convolution_backward_weights::primitive_desc(
        eng, alg, d.src, d.wei, d.bias, d.dst, d.strides, d.dilates, d.pad_l,
        d.pad_r, hint, attr);
  else
    wei_pd_ = dnnl::convolution_backward_weights::primitive_desc(
        eng, alg, d.src, d.wei, d.dst, d.strides, d.dilates, d.pad_l, d.pad_r,
        hint, attr);
  wei_prim_ = dnnl::convolution_backward_weights(wei_pd_);

  r_dy_data_ = data_pd_.diff_dst_desc() != user_dst_;
  r_dy_wei_ = wei_pd_.diff_dst_desc() != user_dst_;
  r_w_ = data_pd_.weights_desc() != user_wei_;
  r_x_ = wei_pd_.src_desc() != user_src_;
  r_dx_ = data_pd_.diff_src_desc() != user_src_;
  r_dw_ = wei_pd_.diff_weights_desc() != user_wei_;
  if (r_dy_data_) dy_data_in_ = make_reorder(user_dst_, data_pd_.diff_dst_desc());
  if (r_dy_wei_) dy_wei_in_ = make_reorder(user_dst_, wei_pd_.diff_dst_desc());
  if (r_w_) w_in_ = make_reorder(user_wei_, data_pd_.weights_desc());
  if (r_x_) x_in_ = make_reorder(user_src_, wei_pd_.src_desc());
  if (r_dx_) dx_out_ = make_reorder(data_pd_.diff_src_desc(), user_src_);
  if (r_dw_) dw_out_ = make_reorder(wei_pd_.diff_weights_desc(), user_wei_);
}

std::shared_ptr<const ConvBackwardPlan> ConvBackwardPlan::get(
    const ConvGeometry& g, bool with_bias) {
  std::string key = g.key() + (with_bias ? "|b" : "|-");
  auto plan = bwd_cache().get(key);
  if (!plan) {
    plan = std::make_shared<const ConvBackwardPlan>(g, with_bias);
    bwd_cache().put(key, plan);
  }
  return plan;
}

void ConvBackwardPlan::execute(const float* x, const float* w, const float* dy,
                               float* dx, float* dw, float* dbias,
                               dnnl::stream& s) const {
  memory dy_user = wrap(user_dst_, dy);
  // The data and weights primitives usually agree on the diff_dst layout;
  // reorder dy once and share it then.
  memory dy_data = dy_user, dy_wei = dy_user;
  if (dx && r_dy_data_) {
    dy_data = scratch_memory(data_pd_.diff_dst_desc());
    run_reorder(dy_data_in_, dy_user, dy_data, s);
  }
  if ((dw || dbias) && r_dy_wei_) {
    if (dx && r_dy_data_ &&
        wei_pd_.diff_dst_desc() == data_pd_.diff_dst_desc()) {
      dy_wei = dy_data;
    } else {
      dy_wei = scratch_memory(wei_pd_.diff_dst_desc());
      run_reorder(dy_wei_in_, dy_user, dy_wei, s);
    }
  }
  if (dx) {
    memory w_mem = wrap(user_wei_, w);
    if (r_w_) {
      memory blocked = scratch_memory(data_pd_.weights_desc());
      run_reorder(w_in_, w_mem, blocked, s);
      w_mem = blocked;
    }
    memory dx_user = wrap(user_src_, dx);
    memory dx_mem = r_dx_ ? scratch_memory(data_pd_.diff_src_desc()) : dx_user;
    data_prim_.execute(
        s, {{DNNL_ARG_DIFF_DST, dy_data},
            {DNNL_ARG_WEIGHTS, w_mem},
            {DNNL_ARG_DIFF_SRC, dx_mem},
            {DNNL_ARG_SCRATCHPAD, scratchpad(data_pd_.scratchpad_desc())}});
    if (r_dx_) run_reorder(dx_out_, dx_mem, dx_user, s);
  }
  if (dw || dbias) {
    memory x_mem = wrap(user_src_, x);
    if (r_x_) {
      memory blocked = scratch_memory(wei_pd_.src_desc());
      run_reorder(x_in_, x_mem, blocked, s);
      x_mem = blocked;
    }
    // oneDNN computes both; a missing output goes to scratch.
    memory dw_mem = (dw && !r_dw_) ? wrap(user_wei_, dw)
                                   : scratch_memory(wei_pd_.diff_weights_desc());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, x_mem},
        {DNNL_ARG_DIFF_DST, dy_wei},
        {DNNL_ARG_DIFF_WEIGHTS, dw_mem},
        {DNNL_ARG_SCRATCHPAD, scratchpad(wei_pd_.scratchpad_desc())}};
    if (with_bias_)
      args[DNNL_ARG_DIFF_BIAS] =
          dbias ? wrap(bias_md_, dbias) : scratch_memory(bias_md_);
    wei_prim_.execute(s, args);
    if (dw && r_dw_) run_reorder(dw_out_, dw_mem, wrap(user_wei_, dw), s);
  }
  s.wait();
}

namespace {
// 1 on, 0 not on this CPU, 2 turned off by `env`=0.
int kernel_state(bool cpu_supported, const char* env_name) {
  if (!cpu_supported) return 0;
  const char* env = std::getenv(env_name);
  return env && std::strcmp(env, "0") == 0 ? 2 : 1;
}
}  // namespace

int winograd_state() {
  return kernel_state(winograd::cpu_supported(), "PADDLE_FASTCONV_WINOGRAD");
}

int conv1x1_state() {
  return kernel_state(conv1x1::cpu_supported(), "PADDLE_FASTCONV_CONV1X1");
}

void set_plan_cache_capacity(size_t n) {
  fwd_cache().set_capacity(n);
  bwd_cache().set_capacity(n);
  set_layout_reorder_capacity(n);
}

void clear_plan_caches() {
  fwd_cache().clear();
  bwd_cache().clear();
  clear_layout_reorders();
}

size_t plan_cache_size() {
  return fwd_cache().size() + bwd_cache().size() + layout_reorder_cache_size();
}

}  // namespace onednn
}  // namespace fastconv
