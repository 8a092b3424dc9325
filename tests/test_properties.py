"""Property-based parity against the stock layers (hypothesis).

Random shapes, kernel sizes, strides, paddings (symmetric, per-side, SAME,
VALID), dilations, groups, layouts, batch sizes (1 included), conv bias,
residual, activation and train/eval, for every fused layer:
ConvBNReLU (the fused op), and the ResNet blocks (nn.BottleneckBlock,
nn.BasicBlock, in NCHW and on NHWC activations); and the max pool op
(kernels, strides, paddings, sizes, ties, both layouts).

Examples are derandomized (the same on every run) and bounded by the
hypothesis profile: "ci" (default, a few dozen examples per test) or "large"
for a long run by hand:

    PADDLE_FASTCONV_HYPOTHESIS_PROFILE=large pytest tests/test_properties.py
"""
import numpy as np
import paddle
from hypothesis import given
from hypothesis import strategies as st
from paddle import nn

import paddle_fastconv as pf
from conftest import CPU_ENGINES
from helpers import leaf, make_pair, stock_forward
from tolerances import assert_as_accurate, assert_close


def _out(size, k, s, d, lo, hi):
    return (size + lo + hi - (d * (k - 1) + 1)) // s + 1


@st.composite
def conv_cases(draw):
    fmt = draw(st.sampled_from(["NCHW", "NHWC"]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cin = groups * draw(st.integers(1, 4))
    cout = groups * draw(st.integers(1, 4))
    kh, kw = draw(st.sampled_from([1, 2, 3, 5])), draw(st.sampled_from([1, 3, 4]))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    form = draw(st.sampled_from(["int", "pair", "sides", "SAME", "VALID"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
        pads = [padding] * 4
    elif form == "pair":
        padding = [draw(st.integers(0, 2)), draw(st.integers(0, 2))]
        pads = [padding[0], padding[0], padding[1], padding[1]]
    elif form == "sides":
        padding = [draw(st.integers(0, 2)) for _ in range(4)]  # top, bottom, left, right
        pads = padding
    else:
        padding, pads = form, None
    if form == "SAME":
        dilation = (1, 1)  # Paddle's SAME ignores dilation in its size rule
    training = draw(st.booleans())
    batch = draw(st.integers(1, 3))
    sizes = []
    for axis, k in ((0, kh), (1, kw)):
        lo, hi = (pads[2 * axis], pads[2 * axis + 1]) if pads else (0, 0)
        smallest = max(1, dilation[axis] * (k - 1) + 1 - lo - hi)
        sizes.append(draw(st.integers(smallest, smallest + 7)))
    if training:
        # Batch statistics need more than one value per channel, and with
        # exactly two the data gradient is zero in exact arithmetic (the two
        # normalized values are +-1 and the BN backward cancels): both
        # engines return rounding noise there. Three or more.
        if pads is None:
            oh = -(-sizes[0] // stride[0]) if form == "SAME" else _out(
                sizes[0], kh, stride[0], dilation[0], 0, 0)
            ow = -(-sizes[1] // stride[1]) if form == "SAME" else _out(
                sizes[1], kw, stride[1], dilation[1], 0, 0)
        else:
            oh = _out(sizes[0], kh, stride[0], dilation[0], pads[0], pads[1])
            ow = _out(sizes[1], kw, stride[1], dilation[1], pads[2], pads[3])
        if batch * oh * ow < 3:
            batch = 3
    return dict(fmt=fmt, groups=groups, cin=cin, cout=cout, k=(kh, kw), stride=stride,
                dilation=dilation, padding=padding, batch=batch, hw=sizes,
                training=training, act=draw(st.sampled_from(["relu", "none"])),
                bias=draw(st.booleans()), residual=draw(st.booleans()),
                engine=draw(st.sampled_from(CPU_ENGINES)),
                seed=draw(st.integers(0, 2 ** 16)))


@given(conv_cases())
def test_conv_bn_act_matches_stock(c):
    before = pf.get_cpu_conv_engine()
    pf.set_cpu_conv_engine(c["engine"])
    try:
        _check_conv_case(c)
    finally:
        pf.set_cpu_conv_engine(before)


def _check_conv_case(c):
    paddle.seed(c["seed"])  # layer initialization, per example
    fused, conv, bn = make_pair(c["cin"], c["cout"], c["k"], c["stride"], c["padding"],
                                c["dilation"], c["groups"], c["bias"], c["act"], c["fmt"],
                                seed=c["seed"])
    if not c["training"]:
        fused.eval(), conv.eval(), bn.eval()
    rng = np.random.default_rng(c["seed"])
    h, w = c["hw"]
    shape = [c["batch"], c["cin"], h, w] if c["fmt"] == "NCHW" else [c["batch"], h, w, c["cin"]]
    x_np = rng.normal(0.2, 1.0, shape).astype("float32")
    ref = _float64_twin(conv, bn)
    xs = [leaf(x_np), leaf(x_np), leaf(x_np.astype("float64"))]
    with paddle.no_grad():
        out_shape = conv(leaf(x_np, True)).shape
    rs = [None] * 3
    if c["residual"]:
        r_np = rng.normal(0, 1, out_shape).astype("float32")
        rs = [leaf(r_np), leaf(r_np), leaf(r_np.astype("float64"))]
    ys = [fused(xs[0], rs[0]), stock_forward(conv, bn, c["act"], xs[1], rs[1]),
          stock_forward(ref[0], ref[1], c["act"], xs[2], rs[2])]
    assert_as_accurate(ys[0], ys[1], ys[2], "out", what="y")
    dy = rng.normal(0, 1, out_shape)
    for y in ys:
        (y * paddle.to_tensor(dy).astype(y.dtype)).sum().backward()
    layers = [(fused.conv, fused.bn), (conv, bn), ref]
    fan_in = c["cin"] // c["groups"] * c["k"][0] * c["k"][1]

    def grads(get):
        return [get(i) for i in range(3)]
    checks = [("dx", grads(lambda i: xs[i].grad), "grad"),
              # BN makes the output invariant to each filter's scale, so in
              # training a one-element filter's gradient is zero up to the
              # epsilon term: rounding noise in any engine.
              ("dW", grads(lambda i: layers[i][0].weight.grad),
               "cancel" if c["training"] and fan_in == 1 else "grad"),
              ("dgamma", grads(lambda i: layers[i][1].weight.grad), "grad"),
              ("dbeta", grads(lambda i: layers[i][1].bias.grad), "grad")]
    if c["bias"]:
        # In training the conv-bias gradient is zero up to rounding.
        checks.append(("dbias", grads(lambda i: layers[i][0].bias.grad),
                       "cancel" if c["training"] else "grad"))
    if c["residual"]:
        checks.append(("dresidual", grads(lambda i: rs[i].grad), "grad"))
    checks += [("running_mean", grads(lambda i: layers[i][1]._mean), "stat"),
               ("running_var", grads(lambda i: layers[i][1]._variance), "stat")]
    for what, (a, s, r), kind in checks:
        assert_as_accurate(a, s, r, kind, what=what)


def _float64_twin(conv, bn):
    """The stock layers in float64, with the same parameters and statistics:
    the oracle for how accurate fp32 can be on ill-conditioned cases."""
    import copy
    conv64, bn64 = copy.deepcopy(conv), copy.deepcopy(bn)
    conv64.to(dtype="float64"), bn64.to(dtype="float64")
    for src, dst in ((conv, conv64), (bn, bn64)):
        for k, v in src.state_dict().items():
            dst.state_dict()[k].set_value(v.numpy().astype("float64"))
    return conv64, bn64


@st.composite
def block_cases(draw):
    kind = draw(st.sampled_from(["bottleneck", "basic"]))
    planes = draw(st.integers(1, 6))
    stride = draw(st.sampled_from([1, 2]))
    expansion = 4 if kind == "bottleneck" else 1
    inplanes = draw(st.sampled_from([planes * expansion, draw(st.integers(1, 12))]))
    h, w = draw(st.integers(stride, 9)), draw(st.integers(stride, 9))
    # >= 4 values per channel after the stride (with 2 the BN data gradient
    # cancels exactly, see conv_cases; tiny counts are covered there).
    per_image = -(-h // stride) * -(-w // stride)
    batch = max(draw(st.integers(1, 3)), -(-4 // per_image))
    return dict(kind=kind, planes=planes, stride=stride, inplanes=inplanes, batch=batch,
                hw=(h, w), groups=1 if kind == "basic" else draw(st.sampled_from([1, 2])),
                training=draw(st.booleans()), nhwc=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 16)))


def _stock_block(c):
    from paddle.vision.models import resnet as vr
    expansion = 4 if c["kind"] == "bottleneck" else 1
    downsample = None
    if c["stride"] != 1 or c["inplanes"] != c["planes"] * expansion:
        downsample = nn.Sequential(
            nn.Conv2D(c["inplanes"], c["planes"] * expansion, 1, stride=c["stride"],
                      bias_attr=False), nn.BatchNorm2D(c["planes"] * expansion))
    if c["kind"] == "bottleneck":
        # base_width 64 * groups keeps the grouped width divisible by groups.
        return vr.BottleneckBlock(c["inplanes"], c["planes"], c["stride"], downsample,
                                  groups=c["groups"], base_width=64)
    return vr.BasicBlock(c["inplanes"], c["planes"], c["stride"], downsample)


@given(block_cases())
def test_resnet_blocks_match_stock(c):
    import copy

    from paddle_fastconv.fusion import FusedBasicBlock, FusedBottleneckBlock
    paddle.seed(c["seed"])
    stock = _stock_block(c)
    rng = np.random.default_rng(c["seed"])
    for name, t in stock.state_dict().items():  # non-trivial statistics for eval
        if name.endswith("_variance"):
            t.set_value(rng.uniform(0.5, 2.0, t.shape).astype("float32"))
        elif name.endswith("_mean") or name.endswith("bias"):
            t.set_value(rng.normal(0, 0.3, t.shape).astype("float32"))
    twin, ref = copy.deepcopy(stock), copy.deepcopy(stock)
    ref.to(dtype="float64")
    for k, v in stock.state_dict().items():
        ref.state_dict()[k].set_value(v.numpy().astype("float64"))
    cls = FusedBottleneckBlock if c["kind"] == "bottleneck" else FusedBasicBlock
    fused = cls(twin, data_format="NHWC" if c["nhwc"] else None)
    assert sorted(fused.state_dict()) == sorted(stock.state_dict())
    if not c["training"]:
        stock.eval(), fused.eval(), ref.eval()
    h, w = c["hw"]
    x_np = rng.normal(0, 1, [c["batch"], c["inplanes"], h, w]).astype("float32")
    xs, xr = leaf(x_np), leaf(x_np.astype("float64"))
    xf = leaf(x_np.transpose(0, 2, 3, 1) if c["nhwc"] else x_np)
    ys, yr, yf = stock(xs), ref(xr), fused(xf)
    if c["nhwc"]:
        yf = yf.transpose([0, 3, 1, 2])
    assert_as_accurate(yf, ys, yr, "out", what="y")
    dy = paddle.to_tensor(rng.normal(0, 1, ys.shape))
    for y in (ys, yr, yf):
        (y * dy.astype(y.dtype)).sum().backward()
    dxf = xf.grad.transpose([0, 3, 1, 2]) if c["nhwc"] else xf.grad
    assert_as_accurate(dxf, xs.grad, xr.grad, "grad", what="dx")
    fused_params, ref_params = dict(fused.named_parameters()), dict(ref.named_parameters())
    for k, p in stock.named_parameters():
        if p.grad is not None:
            # one-element filters in training: see the dW note in conv cases
            one = c["training"] and len(p.shape) == 4 and int(np.prod(p.shape[1:])) == 1
            assert_as_accurate(fused_params[k].grad, p.grad, ref_params[k].grad,
                               "cancel" if one else "grad", what="d" + k)
    fused_state, ref_state = fused.state_dict(), ref.state_dict()
    for k, v in stock.state_dict().items():
        assert_as_accurate(fused_state[k], v, ref_state[k], "stat", what=k)


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    # at least one window: H + 2 ph >= kh; rows up to 60 wide (several vectors)
    h = draw(st.integers(max(1, kh - 2 * ph), max(1, kh - 2 * ph) + 12))
    w = draw(st.integers(max(1, kw - 2 * pw), max(1, kw - 2 * pw) + 60))
    return dict(fmt=draw(st.sampled_from(["NCHW", "NHWC"])), k=(kh, kw), pad=(ph, pw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                shape=(draw(st.integers(1, 2)), draw(st.integers(1, 20)), h, w),
                ties=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@given(pool_cases())
def test_max_pool_matches_stock(c):
    """pf.ops.max_pool2d against paddle.nn.functional.max_pool2d: the output
    exactly, and the input gradient (each window's gradient goes to its first
    maximum; `ties` draws small integers, so windows share maxima)."""
    rng = np.random.default_rng(c["seed"])
    n, ch, h, w = c["shape"]
    shape = [n, ch, h, w] if c["fmt"] == "NCHW" else [n, h, w, ch]
    x_np = (rng.integers(-2, 3, shape) if c["ties"] else rng.normal(size=shape))
    x1, x2 = leaf(x_np.astype("float32")), leaf(x_np.astype("float32"))
    args = (list(c["k"]), list(c["stride"]), list(c["pad"]))
    y1 = pf.ops.max_pool2d(x1, *args, data_format=c["fmt"])
    y2 = paddle.nn.functional.max_pool2d(x2, *args, data_format=c["fmt"])
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    dy = paddle.to_tensor(rng.normal(size=y2.shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    assert_close(x1.grad, x2.grad, "grad", what="dx")


def test_strategies_reach_the_hard_cases():
    """The strategies do produce the cases that matter (conv: batch 1,
    groups, every padding form, both layouts, eval and train)."""
    from hypothesis import find
    for cond in (lambda c: c["batch"] == 1 and not c["training"],
                 lambda c: c["groups"] == 3 and c["fmt"] == "NHWC",
                 lambda c: c["padding"] == "SAME" and c["stride"] != (1, 1),
                 lambda c: isinstance(c["padding"], list) and len(c["padding"]) == 4,
                 lambda c: c["dilation"] == (2, 2) and c["residual"]):
        assert cond(find(conv_cases(), cond))
    # the max pool's: NCHW phases of stride 3 with padding, rows of several
    # vectors with ties, wide kernels with stride 2
    for cond in (lambda c: c["fmt"] == "NCHW" and c["stride"][1] == 3 and c["pad"][1] > 0,
                 lambda c: c["fmt"] == "NCHW" and c["shape"][3] > 40 and c["ties"],
                 lambda c: c["k"][1] in (4, 5) and c["stride"][1] == 2):
        assert cond(find(pool_cases(), cond))

