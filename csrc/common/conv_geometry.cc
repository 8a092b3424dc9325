#include "common/conv_geometry.h"

#include "common/check.h"

namespace fastconv {

ConvGeometry make_conv_geometry(const std::vector<int64_t>& x_shape,
                                const std::vector<int64_t>& w_shape,
                                const std::vector<int>& strides,
                                const std::vector<int>& paddings,
                                const std::vector<int>& dilations, int groups,
                                const std::string& data_format,
                                const char* op) {
  FC_CHECK_ARG(data_format == "NCHW" || data_format == "NHWC", op,
               "data_format", "must be 'NCHW' or 'NHWC', got '", data_format,
               "'");
  FC_CHECK_ARG(x_shape.size() == 4, op, "x",
               "must be a 4-D tensor, got shape ", shape_str(x_shape));
  FC_CHECK_ARG(w_shape.size() == 4, op, "weight",
               "must be a 4-D tensor [out, in/groups, kh, kw], got shape ",
               shape_str(w_shape));
  FC_CHECK_ARG(strides.size() == 2 && strides[0] > 0 && strides[1] > 0, op,
               "stride", "must be 2 positive values, got ", shape_str(strides));
  FC_CHECK_ARG(dilations.size() == 2 && dilations[0] > 0 && dilations[1] > 0,
               op, "dilation", "must be 2 positive values, got ",
               shape_str(dilations));
  FC_CHECK_ARG(paddings.size() == 2 || paddings.size() == 4, op, "padding",
               "must have 2 (h, w) or 4 (top, bottom, left, right) values, got ",
               shape_str(paddings));
  for (int p : paddings)
    FC_CHECK_ARG(p >= 0, op, "padding", "must be non-negative, got ",
                 shape_str(paddings));
  FC_CHECK_ARG(groups > 0, op, "groups", "must be positive, got ", groups);

  ConvGeometry g;
  g.channels_last = data_format == "NHWC";
  g.N = x_shape[0];
  g.C = g.channels_last ? x_shape[3] : x_shape[1];
  g.H = g.channels_last ? x_shape[1] : x_shape[2];
  g.W = g.channels_last ? x_shape[2] : x_shape[3];
  g.O = w_shape[0];
  g.KH = w_shape[2];
  g.KW = w_shape[3];
  g.groups = groups;
  g.stride_h = strides[0];
  g.stride_w = strides[1];
  // Dilation along a size-1 kernel axis changes nothing; normalizing it to 1
  // also steers clear of a oneDNN 3.6 crash (brgemm inference convolution
  // with dilation on a 1-wide kernel axis and padding wider than the input).
  g.dil_h = g.KH == 1 ? 1 : dilations[0];
  g.dil_w = g.KW == 1 ? 1 : dilations[1];
  if (paddings.size() == 2) {
    g.pad_top = g.pad_bottom = paddings[0];
    g.pad_left = g.pad_right = paddings[1];
  } else {
    g.pad_top = paddings[0];
    g.pad_bottom = paddings[1];
    g.pad_left = paddings[2];
    g.pad_right = paddings[3];
  }
  FC_CHECK_ARG(g.N > 0, op, "x", "has an empty batch (shape ",
               shape_str(x_shape), ")");
  FC_CHECK_ARG(g.C > 0 && g.H > 0 && g.W > 0, op, "x",
               "has a zero-size dimension (shape ", shape_str(x_shape), ")");
  FC_CHECK_ARG(g.C % groups == 0 && g.O % groups == 0, op, "groups",
               "must divide in_channels (", g.C, ") and out_channels (", g.O,
               "), got ", groups);
  FC_CHECK_ARG(w_shape[1] * groups == g.C, op, "weight",
               "shape ", shape_str(w_shape), " expects ", w_shape[1] * groups,
               " input channels (groups=", groups, "), but x has ", g.C,
               " channels in ", data_format, " layout");
  FC_CHECK_ARG(g.O > 0 && g.KH > 0 && g.KW > 0, op, "weight",
               "has a zero-size dimension (shape ", shape_str(w_shape), ")");
  g.OH = conv_out_size(g.H, g.KH, g.stride_h, g.dil_h, g.pad_top, g.pad_bottom);
  g.OW = conv_out_size(g.W, g.KW, g.stride_w, g.dil_w, g.pad_left, g.pad_right);
  FC_CHECK_ARG(g.OH > 0 && g.OW > 0, op, "x",
               "spatial size ", g.H, "x", g.W,
               " is too small for the kernel/padding/dilation (output would be ",
               g.OH, "x", g.OW, ")");
  return g;
}

std::vector<int64_t> infer_conv_out_shape(const std::vector<int64_t>& x,
                                          const std::vector<int64_t>& w,
                                          const std::vector<int>& strides,
                                          const std::vector<int>& paddings,
                                          const std::vector<int>& dilations,
                                          bool nhwc) {
  const std::vector<int> p =
      paddings.size() == 2
          ? std::vector<int>{paddings[0], paddings[0], paddings[1], paddings[1]}
          : paddings;
  const int64_t H = nhwc ? x[1] : x[2], W = nhwc ? x[2] : x[3];
  const int64_t OH =
      H < 0 ? -1 : conv_out_size(H, w[2], strides[0], dilations[0], p[0], p[1]);
  const int64_t OW =
      W < 0 ? -1 : conv_out_size(W, w[3], strides[1], dilations[1], p[2], p[3]);
  return nhwc ? std::vector<int64_t>{x[0], OH, OW, w[0]}
              : std::vector<int64_t>{x[0], w[0], OH, OW};
}

void check_cpu_conv_sizes(const ConvGeometry& g, const char* op) {
  constexpr int64_t kMax = int64_t{1} << 31;
  FC_CHECK_ARG(g.in_numel() < kMax && g.out_numel() < kMax, op, "x",
               "gives tensors of ", g.in_numel(), " (input) and ",
               g.out_numel(), " (output) elements; the CPU convolution "
               "supports fewer than 2^31 elements per tensor. Split the batch.");
}

}  // namespace fastconv
