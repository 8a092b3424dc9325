"""The fused Inception op and layer against stock Paddle layers (the oracle):
outputs, every gradient and BN running statistics, for the three block styles,
train and eval, NCHW and NHWC, odd spatial sizes."""
import copy

import numpy as np
import paddle
import pytest
from paddle.vision.models.googlenet import Inception as VisionInception

import paddle_fastconv as pf
from paddle_fastconv.nn import Inception
from paddle_fastconv.reference import inception_reference
from conftest import CUDA_ON_HOST
from tolerances import assert_close

STYLES = {
    "vision": dict(),
    "classic": dict(conv_bias=True, relu="each"),
    "bn": dict(batch_norm=True, relu="each"),
}
# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, proj), small and uneven
CHANNELS = (12, 8, 6, 10, 3, 5, 4)


def _pair(style, data_format, channels=CHANNELS):
    cin, f1, f3r, f3, f5r, f5, proj = channels
    args = (cin, cin, f1, f3r, f3, f5r, f5, proj)
    stock = Inception(*args, fused=False, data_format=data_format, **STYLES[style])
    fused = Inception(*args, fused=True, data_format=data_format, **STYLES[style])
    # BN layers start at gamma=1, beta=0, mean=0, var=1: make them non-trivial
    state = {}
    for k, v in stock.state_dict().items():
        state[k] = paddle.rand(v.shape, dtype=v.dtype) * 0.5 + 0.75 if "_bn" in k else v
    stock.set_state_dict(state)
    fused.set_state_dict(state)
    return stock, fused


def _input(data_format, n=2, h=7, w=9, cin=CHANNELS[0]):
    shape = [n, cin, h, w] if data_format == "NCHW" else [n, h, w, cin]
    x = paddle.randn(shape)
    x.stop_gradient = False
    return x


def _run(layer, x, dy=None):
    out = layer(x)
    if dy is None:
        dy = paddle.randn(out.shape)
    params = [p for p in layer.parameters() if not p.stop_gradient]
    grads = paddle.grad([out], [x] + params, [dy])
    return out, dict(zip(["x"] + [p.name for p in params], grads)), params, dy


def _compare(stock, fused, x, what):
    # one call of each layer: training updates the running statistics
    out, g_fused, p_fused, dy = _run(fused, x)
    ref_out, g_stock, p_stock, _ = _run(stock, x, dy)
    assert_close(out, ref_out, "out", what=what + " out")
    assert_close(g_fused["x"], g_stock["x"], "grad", what=what + " dx")
    names = [n for n, p in stock.named_parameters() if not p.stop_gradient]
    assert len(p_fused) == len(p_stock) == len(names)
    for name, pf_, ps in zip(names, p_fused, p_stock):
        kind = "cancel" if name.endswith("_conv.bias") and fused._conv1._bn is not None \
            and fused.training else "grad"
        assert_close(g_fused[pf_.name], g_stock[ps.name], kind, what="%s d%s" % (what, name))
    stats = [(n, p) for n, p in stock.named_parameters() if p.stop_gradient]
    fused_stats = [p for _, p in fused.named_parameters() if p.stop_gradient]
    for (name, b_s), b_f in zip(stats, fused_stats):
        assert_close(b_f, b_s, "stat", what="%s %s" % (what, name))


# CPU (oneDNN engine) and, when present, the GPU (CUDA engine); GPU cases
# skip cleanly otherwise.
DEVICES = [pytest.param("cpu", id="cpu"),
           pytest.param("gpu", id="gpu", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request):
    before = paddle.get_device()
    paddle.set_device(request.param)
    yield request.param
    paddle.set_device(before)


@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("hw", [(7, 9), (1, 1), (4, 3), (1, 6), (5, 1)],
                         ids=["7x9", "1x1", "4x3", "1x6", "5x1"])
def test_layer_matches_stock_layers(device, style, data_format, mode, hw):
    stock, fused = _pair(style, data_format)
    for layer in (stock, fused):
        layer.train() if mode == "train" else layer.eval()
    x = _input(data_format, n=3, h=hw[0], w=hw[1])
    for step in range(2):  # the second step sees updated running statistics
        _compare(stock, fused, x, "%s %s %s step %d" % (style, data_format, mode, step))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_vision_style_matches_paddle_vision_block(mode):
    args = (16, 16, 8, 6, 8, 4, 8, 8)
    vision = VisionInception(*args)
    fused = Inception(*args)
    assert list(fused.state_dict()) == list(vision.state_dict())
    fused.set_state_dict(vision.state_dict())
    for layer in (vision, fused):
        layer.train() if mode == "train" else layer.eval()
    _compare(vision, fused, _input("NCHW", n=2, h=9, w=7, cin=16), "vision " + mode)


def test_nhwc_equals_nchw_transposed():
    _, nchw = _pair("bn", "NCHW")
    _, nhwc = _pair("bn", "NHWC")
    nhwc.set_state_dict(nchw.state_dict())
    x = _input("NCHW")
    y1 = nchw(x)
    y2 = nhwc(x.transpose([0, 2, 3, 1])).transpose([0, 3, 1, 2])
    assert_close(y2, y1, "out", what="nhwc vs nchw")


def _params(rng, cin=10, chans=(6, 5, 7, 2, 3, 4), k3=3, k5=5):
    cins = (cin, cin, chans[1], cin, chans[3], cin)
    ks = (1, 1, k3, 1, k5, 1)
    ws = [paddle.to_tensor(rng.standard_normal((o, i, k, k)).astype("float32") * 0.3,
                           stop_gradient=False) for o, i, k in zip(chans, cins, ks)]
    return ws, chans


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
@pytest.mark.parametrize("training", [True, False])
def test_op_mixed_stages_match_reference(device, data_format, training):
    """Per-stage choices mixed within one block (bias on some stages, BN on
    others, ReLU on some, none after the concat), 7x7 and 3x3 kernels."""
    rng = np.random.default_rng(7)
    ws, chans = _params(rng, k3=7, k5=3)
    has_bias = [True, False, True, True, False, False]
    has_bn = [False, True, True, False, True, True]
    relus = [True, False, True, True, False, False]

    def tensors():
        biases = [paddle.to_tensor(rng.standard_normal(c).astype("float32"), stop_gradient=False)
                  if b else None for c, b in zip(chans, has_bias)]
        bn = []
        for c, b in zip(chans, has_bn):
            if not b:
                bn.append(None)
                continue
            bn.append((paddle.to_tensor(rng.uniform(0.5, 1.5, c).astype("float32"),
                                        stop_gradient=False),
                       paddle.to_tensor(rng.standard_normal(c).astype("float32"),
                                        stop_gradient=False),
                       paddle.to_tensor(rng.standard_normal(c).astype("float32")),
                       paddle.to_tensor(rng.uniform(0.5, 2, c).astype("float32"))))
        return biases, bn

    biases, bn = tensors()
    clone = lambda t: None if t is None else paddle.to_tensor(  # noqa: E731
        t.numpy(), stop_gradient=t.stop_gradient)
    biases2 = [clone(b) for b in biases]
    bn2 = [None if e is None else tuple(clone(t) for t in e) for e in bn]
    ws2 = [clone(w) for w in ws]
    x = _input(data_format, n=2, h=6, w=5, cin=10)
    kw = dict(training=training, stage_relu=relus, relu_after_concat=False,
              data_format=data_format)
    out = pf.ops.inception(x, ws, biases, bn, **kw)
    ref = inception_reference(x, ws2, biases2, bn2, **kw)
    assert_close(out, ref, "out", what="mixed out")
    dy = paddle.randn(out.shape)
    leaves = lambda w, b, n: w + [t for t in b if t is not None] + [  # noqa: E731
        t for e in n if e is not None for t in e[:2]]
    g1 = paddle.grad([out], [x] + leaves(ws, biases, bn), [dy])
    g2 = paddle.grad([ref], [x] + leaves(ws2, biases2, bn2), [dy])
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert_close(a, b, "grad", what="mixed grad %d" % i)
    for e1, e2 in zip(bn, bn2):
        if e1 is not None:
            assert_close(e1[2], e2[2], "stat", what="running mean")
            assert_close(e1[3], e2[3], "stat", what="running var")


def test_sgd_steps_match_stock():
    stock, fused = _pair("bn", "NCHW")
    opts = [paddle.optimizer.Momentum(0.05, parameters=m.parameters()) for m in (stock, fused)]
    x = _input("NCHW", n=4)
    target = paddle.randn([4, sum(CHANNELS[i] for i in (1, 3, 5, 6)), 7, 9])
    for _ in range(3):
        for m, opt in zip((stock, fused), opts):
            loss = ((m(x) - target) ** 2).mean()
            loss.backward()
            opt.step()
            opt.clear_grad()
    for (k, a), (_, b) in zip(fused.state_dict().items(), stock.state_dict().items()):
        assert_close(a, b, "model", what=k)


def test_state_dict_round_trip_with_paddle_vision():
    args = (16, 16, 8, 6, 8, 4, 8, 8)
    vision, fused = VisionInception(*args), Inception(*args)
    fused.set_state_dict(vision.state_dict())
    back = VisionInception(*args)
    back.set_state_dict(fused.state_dict())
    for (k, a), (_, b) in zip(back.state_dict().items(), vision.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)


def test_writes_fresh_output_and_leaves_input_alone():
    _, fused = _pair("classic", "NCHW")
    x = _input("NCHW")
    before = x.numpy().copy()
    y1 = fused(x)
    y2 = fused(x)
    np.testing.assert_array_equal(x.numpy(), before)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    assert y1.data_ptr() != y2.data_ptr()


@pytest.mark.parametrize("style", ["vision", "bn"])
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_eval_weight_cache_sees_every_stage_change(style, data_format):
    """Eval keeps the filters' oneDNN copies between calls (the merged 1x1
    convolution's keyed by stage 0's weight): changing any one stage's weight
    in place, a reduce stage's included, and an optimizer step in training
    mode, must show in the next eval call."""
    stock, fused = _pair(style, data_format)
    x = _input(data_format)
    x.stop_gradient = True
    stock.eval(), fused.eval()
    names = [k for k, _ in fused.named_parameters() if k.endswith("_conv.weight")]
    assert len(names) == 6
    with paddle.no_grad():
        before = fused(x)
        assert_close(before, stock(x), "out", what="first eval")
        for name in names:
            for m in (stock, fused):
                w = dict(m.named_parameters())[name]
                w.set_value(w * 0.5)
            out = fused(x)
            assert_close(out, stock(x), "out", what="after halving " + name)
            assert float((out - before).abs().max()) > 1e-4, name
            before = out
    # a training step (weights change, no version bump), then eval again
    opts = [paddle.optimizer.SGD(0.5, parameters=m.parameters()) for m in (stock, fused)]
    stock.train(), fused.train()
    for m, opt in zip((stock, fused), opts):
        (m(x) ** 2).mean().backward()
        opt.step()
        opt.clear_grad()
    stock.eval(), fused.eval()
    with paddle.no_grad():
        assert_close(fused(x), stock(x), "out", what="eval after an SGD step")


def _evaluated_bn_pair():
    """A stock and a fused Inception with BN in eval, after one call each
    (checked equal): the fused layer holds its checked op arguments."""
    stock, fused = _pair("bn", "NCHW")
    x = _input("NCHW")
    x.stop_gradient = True
    stock.eval(), fused.eval()
    with paddle.no_grad():
        assert_close(fused(x), stock(x), "out", what="first call")
    return stock, fused, x


def test_reused_arguments_follow_the_blocks_tensors_and_attributes():
    """The fused layer keeps its checked op arguments between calls (keyed
    by its layers' state): a new weight tensor, a BN attribute, a mode
    switch and bad input after a cached call must all be seen."""
    stock, fused, x = _evaluated_bn_pair()
    with paddle.no_grad():
        first = fused._op_args.get("layers")
        assert first is not None
        assert_close(fused(x), stock(x), "out", what="cached call")
        assert fused._op_args["layers"] is first  # reused, not rebuilt
        w = paddle.create_parameter(stock._conv3._conv.weight.shape, "float32")
        w.set_value(np.random.default_rng(4).normal(size=w.shape).astype("float32"))
        stock._conv3._conv.weight = w
        fused._conv3._conv.weight = w
        assert_close(fused(x), stock(x), "out", what="after a new 3x3 weight")
        for m in (stock, fused):
            for s in m._stages():
                s._bn._epsilon = 0.25
        assert_close(fused(x), stock(x), "out", what="after a new epsilon")
    stock.train(), fused.train()
    assert_close(fused(x), stock(x), "out", what="training after eval")
    for k, v in stock.state_dict().items():
        assert_close(fused.state_dict()[k], v, "stat", what=k)
    with pytest.raises(Exception, match="float32"):
        fused(x.astype("float64"))
    with pytest.raises(Exception, match="channels"):
        fused(x[:, :6])


def test_reused_arguments_see_a_replaced_batchnorm_and_a_dtype_change():
    """A stage's BatchNorm replaced by another layer, and a BatchNorm turned
    to float64 in place, after cached calls."""
    stock, fused, x = _evaluated_bn_pair()
    with paddle.no_grad():
        c = stock._conv5._bn._num_features
        bn = paddle.nn.BatchNorm2D(c)
        rng = np.random.default_rng(8)
        bn._mean.set_value(rng.normal(0, 0.5, [c]).astype("float32"))
        bn._variance.set_value(rng.uniform(0.5, 2, [c]).astype("float32"))
        bn.eval()
        stock._conv5._bn = bn
        fused._conv5._bn = copy.deepcopy(bn)
        assert_close(fused(x), stock(x), "out", what="after a new 5x5 BatchNorm")
        fused._conv1._bn.to(dtype="float64")
        with pytest.raises(Exception, match="float32"):
            fused(x)


def test_eval_weight_cache_holds_one_entry_per_convolution():
    """Four cached copies per block (merged 1x1, 3x3, 5x5, projection), the
    same ones on every call, none in training; dropped with the block."""
    import gc
    if not pf.onednn_available():
        pytest.skip("the weight cache belongs to the oneDNN engine")
    if CUDA_ON_HOST:
        pytest.skip("host-mode build: CPU tensors run on the CUDA engine, not oneDNN")
    pf.clear_caches()
    _, fused = _pair("vision", "NHWC")
    x = _input("NHWC")
    fused.train()
    fused(x)
    assert pf.cache_info()["folded_weights"] == 0
    fused.eval()
    with paddle.no_grad():
        for _ in range(3):
            fused(x)
            assert pf.cache_info()["folded_weights"] == 4
    del fused
    gc.collect()
    assert pf.cache_info()["folded_weights"] == 0


# ------------------------------------------------------------------ bad input

def _ws(cin=10):
    return _params(np.random.default_rng(0), cin=cin)[0]


@pytest.mark.parametrize("mutate, match", [
    (lambda ws: ws[:5], "list of 6"),
    (lambda ws: [ws[2]] + ws[1:], "1x1 filter"),
    (lambda ws: ws[:2] + [paddle.randn([7, 5, 4, 4])] + ws[3:], "odd k"),
    (lambda ws: ws[:2] + [paddle.randn([7, 4, 3, 3])] + ws[3:], "input channels"),
    (lambda ws: [paddle.randn([6, 9, 1, 1])] + ws[1:], "input channels"),
])
def test_bad_weights_raise_clear_errors(mutate, match):
    x = _input("NCHW", cin=10)
    with pytest.raises(Exception, match=match):
        pf.ops.inception(x, mutate(_ws()))


def test_bad_arguments_raise_clear_errors():
    x = _input("NCHW", cin=10)
    ws = _ws()
    with pytest.raises(ValueError, match="data_format"):
        pf.ops.inception(x, ws, data_format="NCWH")
    with pytest.raises(TypeError, match="training"):
        pf.ops.inception(x, ws, training="yes")
    with pytest.raises(ValueError, match="epsilon"):
        pf.ops.inception(x, ws, epsilon=-1.0)
    with pytest.raises(ValueError, match="bn' entry 2"):
        pf.ops.inception(x, ws, bn=[None, None, (1, 2), None, None, None])
    with pytest.raises(Exception, match="biases"):
        pf.ops.inception(x, ws, biases=[paddle.zeros([5])] + [None] * 5)
    with pytest.raises(Exception, match="float32"):
        pf.ops.inception(x.astype("float64"), [w.astype("float64") for w in ws])
    with pytest.raises(Exception, match="more than one value"):
        pf.ops.inception(_input("NCHW", n=1, h=1, w=1, cin=10), ws, training=True)
    with pytest.raises(ValueError, match="filter1"):
        Inception(16, 16, 0, 6, 8, 4, 8, 8)
    with pytest.raises(ValueError, match="relu"):
        Inception(16, 16, 8, 6, 8, 4, 8, 8, relu="sometimes")


def test_paddle_engine_is_refused_by_name():
    if not pf.onednn_available():
        pytest.skip("no oneDNN engine in this build")
    if CUDA_ON_HOST:
        pytest.skip("host-mode build: CPU tensors run on the CUDA engine, not oneDNN")
    x = _input("NCHW", cin=10)
    pf.set_cpu_conv_engine("paddle")
    try:
        with pytest.raises(Exception, match="fastconv_inception.*oneDNN"):
            pf.ops.inception(x, _ws())
    finally:
        pf.set_cpu_conv_engine("onednn")


@pytest.mark.gpu
@pytest.mark.parametrize("style", list(STYLES))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_on_gpu(style, dtype):
    """fp16/bf16 activations and filters under auto_cast, fp32 BN
    statistics, against the stock layers on the same low-precision inputs."""
    paddle.set_device("gpu")
    try:
        stock, fused = _pair(style, "NCHW")
        x = _input("NCHW", n=2, h=8, w=8)
        with paddle.amp.auto_cast(level="O1", dtype=dtype):
            ys, yf = stock(x), fused(x)
        assert yf.dtype == ys.dtype
        assert_close(yf, ys, "out", dtype=dtype, what="%s auto_cast out" % style)
        for k, v in stock.state_dict().items():
            assert_close(fused.state_dict()[k], v, "stat", dtype=dtype, what=k)
    finally:
        paddle.set_device("cpu")


@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_pool_branch_ties_route_like_stock(device, data_format):
    """Constant regions (ReLU zeros, saturated inputs) make the pool branch's
    window maxima ties: the gradient goes to the same input as stock's (on
    CPU the first maximum in row-major order; on GPU the op runs stock's own
    pooling kernels), on every edge and corner."""
    stock, fused = _pair("vision", data_format)
    x_np = np.random.default_rng(5).standard_normal((2, 12, 6, 7)).astype("float32")
    x_np[:, :, 1:4, 2:6] = 0.5  # a plateau
    x_np[:, 3] = 0.0  # a constant channel
    x_np[0, :, :, 0] = 1.0  # a constant edge column
    x = paddle.to_tensor(x_np if data_format == "NCHW" else x_np.transpose(0, 2, 3, 1))
    x.stop_gradient = False
    _compare(stock, fused, x, "ties " + data_format)
