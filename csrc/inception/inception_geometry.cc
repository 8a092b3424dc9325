// Shapes of the Inception op: validation, the convolutions it runs, and the
// layout of what training keeps for backward.
#include "common/check.h"
#include "inception/inception.h"

namespace fastconv {

namespace {
const char* const kWeightNames[kStages] = {
    "weights[0] (1x1)",        "weights[1] (3x3 reduce)",
    "weights[2] (3x3)",        "weights[3] (5x5 reduce)",
    "weights[4] (5x5)",        "weights[5] (pool projection)"};

// Real per-channel parameters are 1-D; absent ones are [1, 1] placeholders.
bool given(const std::vector<int64_t>& shape) { return shape.size() == 1; }
}  // namespace

int64_t InceptionGeometry::out_offset(int s) const {
  switch (s) {
    case kBranch1: return 0;
    case kConv3: return C[0];
    case kConv5: return C[0] + C[2];
    default: return C[0] + C[2] + C[4];  // kPoolProj
  }
}

int64_t InceptionGeometry::merged_offset(int s) const {
  return s == kBranch1 ? 0 : (s == kReduce3 ? C[0] : C[0] + C[1]);
}

std::vector<int64_t> InceptionGeometry::out_shape() const {
  return activation_shape(out_channels());
}

ConvGeometry InceptionGeometry::merged() const {
  ConvGeometry g;
  g.N = N, g.C = Cin, g.H = H, g.W = W, g.OH = H, g.OW = W;
  g.O = merged_channels(), g.KH = g.KW = 1;
  g.channels_last = nhwc;
  return g;
}

ConvGeometry InceptionGeometry::stage(int s) const {
  ConvGeometry g;
  g.N = N, g.H = H, g.W = W, g.OH = H, g.OW = W;
  g.C = s == kConv3 ? C[kReduce3] : (s == kConv5 ? C[kReduce5] : Cin);
  g.O = C[s], g.KH = g.KW = K[s];
  g.pad_top = g.pad_bottom = g.pad_left = g.pad_right = (K[s] - 1) / 2;
  g.channels_last = nhwc;
  return g;
}

bool InceptionGeometry::keeps(int k) const {
  switch (k) {
    case kKeptMerged: return bn[kBranch1] || bn[kReduce3] || bn[kReduce5];
    case kKeptReduce3:
    case kKeptReduce5: return true;
    default: return bn[kKeptStage[k]];
  }
}

int64_t InceptionGeometry::kept_channels(int k) const {
  return k == kKeptMerged ? merged_channels() : C[kKeptStage[k]];
}

std::vector<int64_t> InceptionGeometry::activation_shape(
    int64_t channels) const {
  return nhwc ? std::vector<int64_t>{N, H, W, channels}
              : std::vector<int64_t>{N, channels, H, W};
}

std::vector<int64_t> InceptionGeometry::kept_shape(int k,
                                                   bool training) const {
  if (!training || !keeps(k)) return {1};
  return activation_shape(kept_channels(k));
}

int64_t InceptionGeometry::stats_offset(int s) const {
  int64_t off = 0;
  for (int i = 0; i < s; ++i) off += C[i];
  return off;
}

int64_t InceptionGeometry::stats_size() const {
  return 2 * stats_offset(kStages);
}

InceptionGeometry make_inception_geometry(
    const std::vector<int64_t>& x, const std::vector<std::vector<int64_t>>& w,
    const std::vector<std::vector<int64_t>>& bias,
    const std::vector<std::vector<int64_t>>& scale,
    const std::string& data_format, bool allow_unknown) {
  const char* op = kInceptionOp;
  FC_CHECK_ARG(data_format == "NCHW" || data_format == "NHWC", op,
               "data_format", "must be 'NCHW' or 'NHWC', got '", data_format,
               "'");
  FC_CHECK_ARG(x.size() == 4, op, "x", "must be 4-D, got shape ",
               shape_str(x));
  FC_CHECK_ARG(w.size() == kStages && bias.size() == kStages &&
                   scale.size() == kStages,
               op, "weights",
               "biases and BN parameters must be lists of 6 (one per "
               "convolution), got ", w.size(), ", ", bias.size(), " and ",
               scale.size());
  InceptionGeometry g;
  g.nhwc = data_format == "NHWC";
  g.N = x[0];
  g.Cin = g.nhwc ? x[3] : x[1];
  g.H = g.nhwc ? x[1] : x[2];
  g.W = g.nhwc ? x[2] : x[3];
  if (!allow_unknown)
    FC_CHECK_ARG(g.N > 0 && g.Cin > 0 && g.H > 0 && g.W > 0, op, "x",
                 "has a zero-size dimension (shape ", shape_str(x), ")");
  for (int s = 0; s < kStages; ++s) {
    const auto& ws = w[s];
    FC_CHECK_ARG(ws.size() == 4 && ws[0] > 0 && ws[2] == ws[3] && ws[2] > 0 &&
                     ws[2] % 2 == 1,
                 op, kWeightNames[s],
                 "must be [out, in, k, k] with an odd k and out > 0 (the "
                 "convolutions are 'same' padded), got ", shape_str(ws));
    g.C[s] = ws[0];
    g.K[s] = ws[2];
    g.bias[s] = given(bias[s]);
    g.bn[s] = given(scale[s]);
    if (g.bias[s])
      FC_CHECK_ARG(bias[s][0] == ws[0], op, "biases",
                   "entry ", s, " must have shape [", ws[0], "], got ",
                   shape_str(bias[s]));
    if (g.bn[s])
      FC_CHECK_ARG(scale[s][0] == ws[0], op, "bn_weights",
                   "entry ", s, " must have shape [", ws[0], "], got ",
                   shape_str(scale[s]));
  }
  for (int s : {kBranch1, kReduce3, kReduce5, kPoolProj})
    FC_CHECK_ARG(g.K[s] == 1, op, kWeightNames[s],
                 "must be a 1x1 filter, got ", shape_str(w[s]));
  const int64_t in_ch[kStages] = {g.Cin, g.Cin, g.C[kReduce3],
                                  g.Cin, g.C[kReduce5], g.Cin};
  const char* in_name[kStages] = {"x", "x", "weights[1]",
                                  "x", "weights[3]", "x"};
  for (int s = 0; s < kStages; ++s)
    FC_CHECK_ARG(w[s][1] == in_ch[s] || (allow_unknown && in_ch[s] < 0), op,
                 kWeightNames[s], "has ", w[s][1], " input channels, but ",
                 in_name[s], " gives ", in_ch[s], " (", data_format, ")");
  return g;
}

bool stage_relu(const InceptionAttrs& a, int s) {
  const bool final_stage = s == kBranch1 || s == kConv3 || s == kConv5 ||
                           s == kPoolProj;
  return a.stage_relu[s] != 0 || (final_stage && a.relu_after_concat);
}

}  // namespace fastconv
