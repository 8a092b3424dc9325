// Attributes and shapes of the fused ResNet block op.
#include <string>
#include <vector>

#include "common/check.h"
#include "resnet_block/resnet_block.h"

namespace fastconv {

const char* const kBlockSlotNames[kBlockSlots] = {"conv1", "conv2", "conv3",
                                                  "downsample"};

namespace {

std::vector<int> part(const std::vector<int>& v, int s, int n) {
  return std::vector<int>(v.begin() + s * n, v.begin() + (s + 1) * n);
}

// A weight shape is a real 4-D filter; absent slots hold a [1, 1]
// placeholder.
bool is_present(const std::vector<int64_t>& w) { return w.size() == 4; }

std::string slot_op(int s) {
  return std::string(kResnetBlockOp) + " (" + kBlockSlotNames[s] + ")";
}

}  // namespace

std::vector<int> ResnetBlockAttrs::slot_strides(int s) const {
  return part(strides, s, 2);
}
std::vector<int> ResnetBlockAttrs::slot_paddings(int s) const {
  return part(paddings, s, 4);
}
std::vector<int> ResnetBlockAttrs::slot_dilations(int s) const {
  return part(dilations, s, 2);
}

ConvBnActAttrs ResnetBlockAttrs::stage(int s, bool relu, bool nhwc) const {
  ConvBnActAttrs c;
  c.strides = slot_strides(s);
  c.paddings = slot_paddings(s);
  c.dilations = slot_dilations(s);
  c.groups = groups[s];
  c.data_format = nhwc ? "NHWC" : "NCHW";
  c.act = relu ? "relu" : "none";
  c.training = training;
  c.momentum = momentum[s];
  c.epsilon = epsilon[s];
  return c;
}

ResnetBlockAttrs make_block_attrs(
    const std::string& data_format, bool training,
    const std::vector<int>& strides, const std::vector<int>& paddings,
    const std::vector<int>& dilations, const std::vector<int>& groups,
    const std::vector<float>& momentum, const std::vector<float>& epsilon) {
  const char* op = kResnetBlockOp;
  FC_CHECK_ARG(data_format == "NCHW" || data_format == "NHWC", op,
               "data_format", "must be 'NCHW' or 'NHWC', got '", data_format,
               "'");
  const struct {
    const char* name;
    size_t got, per_slot;
  } sizes[] = {{"strides", strides.size(), 2},     {"paddings", paddings.size(), 4},
               {"dilations", dilations.size(), 2}, {"groups", groups.size(), 1},
               {"momentum", momentum.size(), 1},   {"epsilon", epsilon.size(), 1}};
  for (const auto& e : sizes)
    FC_CHECK_ARG(e.got == e.per_slot * kBlockSlots, op, e.name, "must have ",
                 e.per_slot * kBlockSlots, " values (", e.per_slot,
                 " per convolution: conv1, conv2, conv3, downsample), got ",
                 e.got);
  for (int s = 0; s < kBlockSlots; ++s) {
    FC_CHECK_ARG(epsilon[s] >= 0.f, op, "epsilon", "of ", kBlockSlotNames[s],
                 " must be non-negative, got ", epsilon[s]);
    FC_CHECK_ARG(groups[s] >= 1, op, "groups", "of ", kBlockSlotNames[s],
                 " must be positive, got ", groups[s]);
  }
  ResnetBlockAttrs a;
  a.data_format = data_format;
  a.training = training;
  a.strides = strides;
  a.paddings = paddings;
  a.dilations = dilations;
  a.groups = groups;
  a.momentum = momentum;
  a.epsilon = epsilon;
  return a;
}

ConvGeometry ResnetBlockGeometry::in_layout(int s, bool nhwc_inside) const {
  ConvGeometry c = conv[s];
  c.channels_last = nhwc || nhwc_inside;
  return c;
}

int64_t ResnetBlockGeometry::stats_offset(int s) const {
  int64_t off = 0;
  for (int k = 0; k < s; ++k)
    if (present[k]) off += 2 * conv[k].O;
  return off;
}

int64_t ResnetBlockGeometry::stats_size() const {
  return stats_offset(kBlockSlots);
}

ResnetBlockGeometry make_block_geometry(
    const std::vector<int64_t>& x,
    const std::array<std::vector<int64_t>, kBlockSlots>& w,
    const ResnetBlockAttrs& a) {
  const char* op = kResnetBlockOp;
  ResnetBlockGeometry g;
  g.nhwc = a.data_format == "NHWC";
  for (int s = 0; s < kBlockSlots; ++s) g.present[s] = is_present(w[s]);
  FC_CHECK_ARG(g.present[kConv1] && g.present[kConv2], op, "weights",
               "conv1 and conv2 must be 4-D filters (got ", shape_str(w[0]),
               " and ", shape_str(w[1]), ")");
  g.last = g.present[kConv3] ? kConv3 : kConv2;
  std::vector<int64_t> in = x;
  for (int s = kConv1; s <= g.last; ++s) {
    const std::string name = slot_op(s);
    g.conv[s] = make_conv_geometry(in, w[s], a.slot_strides(s),
                                   a.slot_paddings(s), a.slot_dilations(s),
                                   a.groups[s], a.data_format, name.c_str());
    in = g.conv[s].out_shape();
  }
  const std::vector<int64_t> out = g.out_shape();
  if (g.present[kDownsample]) {
    const std::string name = slot_op(kDownsample);
    g.conv[kDownsample] = make_conv_geometry(
        x, w[kDownsample], a.slot_strides(kDownsample),
        a.slot_paddings(kDownsample), a.slot_dilations(kDownsample),
        a.groups[kDownsample], a.data_format, name.c_str());
    FC_CHECK_ARG(g.conv[kDownsample].out_shape() == out, op, "downsample",
                 "output ", shape_str(g.conv[kDownsample].out_shape()),
                 " must have the block's output shape ", shape_str(out));
  } else {
    FC_CHECK_ARG(x == out, op, "x", "shape ", shape_str(x),
                 " differs from the block's output shape ", shape_str(out),
                 ": an identity shortcut needs equal shapes (give a "
                 "downsample otherwise)");
  }
  return g;
}

std::vector<std::vector<int64_t>> infer_block_shapes(
    const std::vector<int64_t>& x,
    const std::array<std::vector<int64_t>, kBlockSlots>& w,
    const ResnetBlockAttrs& a) {
  const char* op = kResnetBlockOp;
  FC_CHECK_ARG(x.size() == 4, op, "x", "must be 4-D, got ", shape_str(x));
  // Sizes may be -1 (unknown) in static graphs: they stay -1.
  auto out_of = [&](const std::vector<int64_t>& in, int s) {
    return infer_conv_out_shape(in, w[s], a.slot_strides(s),
                                a.slot_paddings(s), a.slot_dilations(s),
                                a.data_format == "NHWC");
  };
  std::array<std::vector<int64_t>, kBlockSlots> outs;
  std::vector<int64_t> in = x;
  int64_t stats = 0;
  for (int s = 0; s < kBlockSlots; ++s) {
    if (!is_present(w[s])) continue;
    outs[s] = out_of(s == kDownsample ? x : in, s);
    if (s != kDownsample) in = outs[s];
    stats += 2 * w[s][0];
  }
  // Training keeps the hidden and pre-BN outputs (data_format's layout);
  // eval keeps 1-element placeholders.
  const std::vector<int64_t> placeholder = {1};
  auto kept = [&](int s) {
    return is_present(w[s]) && a.training ? outs[s] : placeholder;
  };
  std::vector<std::vector<int64_t>> r{in, kept(kConv1),
                                      is_present(w[kConv3]) ? kept(kConv2)
                                                            : placeholder};
  for (int s = 0; s < kBlockSlots; ++s) r.push_back(kept(s));
  r.push_back({stats});
  return r;
}

}  // namespace fastconv
