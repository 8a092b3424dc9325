"""The one-op ResNet block (fastconv_resnet_block, ops.resnet_block) behind
nn.BottleneckBlock / nn.BasicBlock, against paddle.vision's stock blocks on
the same weights: outputs, dX, every parameter gradient and the running
statistics, train and eval, NCHW and NHWC, odd shapes, both CPU engines (and
the GPU when present); plus its argument checks."""
import copy

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import resnet as vr

import paddle_fastconv as pf
from paddle_fastconv import fusion, ops
from tolerances import assert_close


def _blocks(kind, inplanes, planes, stride, groups=1, base_width=64):
    expansion = 4 if kind == "bottleneck" else 1
    stock_cls = vr.BottleneckBlock if kind == "bottleneck" else vr.BasicBlock
    fused_ctor = pf.nn.BottleneckBlock if kind == "bottleneck" else pf.nn.BasicBlock

    def downsample():
        if stride == 1 and inplanes == planes * expansion:
            return None
        return nn.Sequential(nn.Conv2D(inplanes, planes * expansion, 1, stride=stride,
                                       bias_attr=False), nn.BatchNorm2D(planes * expansion))
    kw = dict(groups=groups, base_width=base_width) if kind == "bottleneck" else {}
    stock = stock_cls(inplanes, planes, stride, downsample(), **kw)
    fused = fused_ctor(inplanes, planes, stride, downsample(), **kw)
    assert sorted(fused.state_dict()) == sorted(stock.state_dict())  # same keys
    fused.set_state_dict(stock.state_dict())
    rng = np.random.default_rng(3)
    for layer in stock.sublayers():  # non-trivial BN parameters and statistics
        if isinstance(layer, nn.BatchNorm2D):
            for t in (layer.weight, layer.bias, layer._mean):
                t.set_value(rng.normal(0, 0.5, t.shape).astype("float32") + (
                    1.0 if t is layer.weight else 0.0))
            layer._variance.set_value(rng.uniform(0.5, 2, layer._variance.shape)
                                      .astype("float32"))
    fused.set_state_dict(stock.state_dict())
    return stock, fused


def _to_nhwc(t):
    return t.transpose([0, 2, 3, 1])


def _run(block, x, nhwc):
    """Output (NCHW) and dX (NCHW) of block on x (NCHW); an NHWC run gets
    the transposed input and its results are transposed back."""
    xx = (_to_nhwc(x) if nhwc else x).detach()
    xx.stop_gradient = False
    y = block(xx)
    shape = [y.shape[i] for i in ((0, 3, 1, 2) if nhwc else (0, 1, 2, 3))]  # NCHW
    dy = paddle.to_tensor(np.random.default_rng(7).normal(size=shape).astype("float32"))
    y.backward(_to_nhwc(dy) if nhwc else dy)
    if nhwc:
        return y.transpose([0, 3, 1, 2]), xx.grad.transpose([0, 3, 1, 2])
    return y, xx.grad


def _compare(stock, fused, x, nhwc, what):
    ys, dxs = _run(stock, x, False)
    yf, dxf = _run(fused, x, nhwc)
    assert_close(yf, ys, "out", what=what + " out")
    assert_close(dxf, dxs, "grad", what=what + " dx")
    named = dict(fused.named_parameters())
    for k, p in stock.named_parameters():
        if p.grad is not None:
            assert_close(named[k].grad, p.grad, "grad", what="%s %s" % (what, k))
    fs = fused.state_dict()
    for k, v in stock.state_dict().items():
        assert_close(fs[k], v, "stat", what="%s %s" % (what, k))
    stock.clear_gradients(), fused.clear_gradients()


CASES = [  # kind, inplanes, planes, stride, groups, base_width, hw, batch
    ("bottleneck", 16, 4, 1, 1, 64, (7, 9), 2),    # identity shortcut
    # Planes of 14x14 or more: NCHW eval keeps NCHW inside (smaller planes
    # run the stages in NHWC); the same with a stride-1 downsample.
    ("bottleneck", 16, 4, 1, 1, 64, (14, 15), 2),
    ("bottleneck", 8, 4, 1, 1, 64, (15, 14), 1),
    ("bottleneck", 8, 4, 2, 1, 64, (9, 7), 2),     # stride 2 + downsample
    ("bottleneck", 16, 8, 1, 2, 64, (5, 6), 3),    # groups (ResNeXt style), downsample
    ("basic", 8, 8, 1, 1, 64, (7, 5), 2),          # identity
    ("basic", 6, 8, 2, 1, 64, (9, 9), 1),          # stride 2, batch 1
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "%s-s%d-g%d" % (c[0], c[3], c[4]))
def test_block_op_matches_stock_block(engine, case, layout):
    kind, inplanes, planes, stride, groups, width, hw, batch = case
    paddle.seed(0)
    stock, fused = _blocks(kind, inplanes, planes, stride, groups, width)
    if layout == "NHWC":
        fused.data_format = "NHWC"
    assert fused.one_op
    rng = np.random.default_rng(1)
    for step in range(2):  # two training steps: running statistics move twice
        x = paddle.to_tensor(rng.normal(size=(batch, inplanes) + hw).astype("float32"))
        _compare(stock, fused, x, layout == "NHWC", "train step %d" % step)
    stock.eval(), fused.eval()
    x = paddle.to_tensor(rng.normal(size=(batch, inplanes) + hw).astype("float32"))
    with paddle.no_grad():
        yf = fused(_to_nhwc(x) if layout == "NHWC" else x)
        if layout == "NHWC":
            yf = yf.transpose([0, 3, 1, 2])
        assert_close(yf, stock(x), "out", what="eval out")
    _compare(stock, fused, x, layout == "NHWC", "eval-mode backward")


def test_the_block_is_one_op_and_stage_ops_are_not_used(monkeypatch):
    stock, fused = _blocks("bottleneck", 8, 4, 2)

    def fail(*a, **k):
        raise AssertionError("a per-stage conv_bn_act op ran")
    monkeypatch.setattr(fusion, "_apply", fail)
    x = paddle.randn([2, 8, 6, 6])
    assert_close(fused(x), stock(x), "out", what="one op")


def test_static_program_holds_one_block_op():
    _, fused = _blocks("basic", 8, 8, 1)
    fused.eval()
    static = paddle.jit.to_static(fused, input_spec=[
        paddle.static.InputSpec([None, 8, 6, 6], "float32")], full_graph=True)
    prog = static.forward.concrete_program.main_program
    names = [op.name() if hasattr(op, "name") and callable(op.name) else op.type
             for op in prog.global_block().ops]
    assert sum("fastconv_resnet_block" in n for n in names) == 1, names
    assert not any("fastconv_conv_bn_act" in n for n in names), names


def test_optimizer_step_then_eval_refolds_weights():
    stock, fused = _blocks("bottleneck", 16, 4, 1)
    x = paddle.randn([2, 16, 5, 5])
    for m in (stock, fused):
        m.eval()
        with paddle.no_grad():
            m(x)  # fold and cache
        m.train()
        opt = paddle.optimizer.Momentum(0.1, parameters=m.parameters())
        m(x).mean().backward()
        opt.step()
        m.eval()
    with paddle.no_grad():
        assert_close(fused(x), stock(x), "out", what="eval after a step")


def test_blocks_that_need_the_stage_ops_fall_back_and_match():
    """A conv bias (not in paddle.vision's blocks) runs per stage, same results."""
    stock, fused = _blocks("basic", 8, 8, 1)
    bias = paddle.create_parameter([8], "float32")
    bias.set_value(np.linspace(-1, 1, 8).astype("float32"))
    for blk in (stock, fused):
        blk.conv1.bias = bias
    assert not fused.one_op
    x = paddle.randn([2, 8, 5, 5])
    _compare(stock, fused, x, False, "with conv bias")


def _stage(cin, cout, k, stride=1, padding=0):
    return ops.BlockConv(paddle.randn([cout, cin, k, k]), paddle.ones([cout]),
                         paddle.zeros([cout]), paddle.zeros([cout]), paddle.ones([cout]),
                         stride=stride, padding=padding)


def test_functional_block_matches_reference():
    from paddle_fastconv.reference import resnet_block_reference
    paddle.seed(2)
    convs = [_stage(8, 4, 1), _stage(4, 4, 3, stride=2, padding=1), _stage(4, 16, 1)]
    ds = _stage(8, 16, 1, stride=2)
    x = paddle.randn([2, 8, 7, 7])
    copies = lambda: [ops.BlockConv(c.weight, c.bn_weight, c.bn_bias,  # noqa: E731
                                    c.running_mean.clone(), c.running_var.clone(),
                                    c.stride, c.padding) for c in convs + [ds]]
    a, b = copies(), copies()
    out = ops.resnet_block(x, a[:3], a[3], training=True)
    ref = resnet_block_reference(x, b[:3], b[3], training=True)
    assert_close(out, ref, "out", what="functional out")
    for sa, sb in zip(a, b):
        assert_close(sa.running_mean, sb.running_mean, "stat", what="running mean")
        assert_close(sa.running_var, sb.running_var, "stat", what="running var")


@pytest.mark.parametrize("bad, match", [
    (lambda x, c, d: ops.resnet_block(x[0], c, d), "'x'"),
    (lambda x, c, d: ops.resnet_block(x, c[:1], d), "'convs'"),
    (lambda x, c, d: ops.resnet_block(x, c + c, d), "'convs'"),
    (lambda x, c, d: ops.resnet_block(x, [c[0], "conv", c[2]], d), "'conv2'"),
    (lambda x, c, d: ops.resnet_block(x, c, d, data_format="NDHW"), "'data_format'"),
    (lambda x, c, d: ops.resnet_block(x, c, d, training=1), "'training'"),
    (lambda x, c, d: ops.resnet_block(x.astype("float64"), c, d), "float32, float16 or bfloat16"),
    (lambda x, c, d: ops.resnet_block(x, c, None), "identity shortcut"),
    (lambda x, c, d: ops.resnet_block(x[:, :4], c, d), "channels"),
    (lambda x, c, d: ops.resnet_block(x[:0], c, d), "empty batch"),
    (lambda x, c, d: ops.resnet_block(x[:1, :, :1, :1], c, d), "one value per channel"),
])
def test_bad_input_raises_a_clear_error(bad, match):
    # (checks made in C++ surface as the exception type Paddle's version
    # maps its errors to: OSError on 3.x; the message is what is checked)
    convs = [_stage(8, 4, 1), _stage(4, 4, 3, padding=1), _stage(4, 16, 1)]
    ds = _stage(8, 16, 1)
    x = paddle.randn([2, 8, 5, 5])
    with pytest.raises(Exception, match=match):
        bad(x, convs, ds)


def test_bad_stage_arguments_name_the_stage():
    convs = [_stage(8, 4, 1), _stage(4, 4, 3, padding=1), _stage(4, 16, 1)]
    x = paddle.randn([2, 8, 5, 5])
    bad_bn = ops.BlockConv(convs[1].weight, paddle.ones([5]), paddle.zeros([4]),
                           paddle.zeros([4]), paddle.ones([4]), padding=1)
    with pytest.raises(Exception, match="bn_weights.*conv2"):
        ops.resnet_block(x, [convs[0], bad_bn, convs[2]], _stage(8, 16, 1))
    same = ops.BlockConv(convs[1].weight, *[paddle.ones([4])] * 4, padding="SAME")
    with pytest.raises(ValueError, match="conv2.padding"):
        ops.resnet_block(x, [convs[0], same, convs[2]], _stage(8, 16, 1))
    bad_eps = ops.BlockConv(convs[1].weight, *[paddle.ones([4])] * 4, padding=1, epsilon=-1.)
    with pytest.raises(ValueError, match="conv2.epsilon"):
        ops.resnet_block(x, [convs[0], bad_eps, convs[2]], _stage(8, 16, 1))
    w64 = ops.BlockConv(convs[0].weight.astype("float64"), *[paddle.ones([4])] * 4)
    with pytest.raises(TypeError, match="conv1.weight"):
        ops.resnet_block(x, [w64, convs[1], convs[2]], _stage(8, 16, 1))


def test_reused_arguments_follow_the_blocks_tensors_and_attributes():
    """The fused block keeps its checked op call between calls (keyed by
    its layers' state): a new weight tensor, a changed attribute, a mode
    switch or bad input after a cached call must be seen."""
    stock, fused = _blocks("bottleneck", 16, 4, 2)
    x = paddle.randn([2, 16, 6, 6])
    stock.eval(), fused.eval()
    with paddle.no_grad():
        assert_close(fused(x), stock(x), "out", what="first call")
        assert fused._call is not None and fused._call[1] is not None
        first = fused._call
        assert_close(fused(x), stock(x), "out", what="cached call")
        assert fused._call is first  # reused, not rebuilt
        # a new parameter object in place of a stage's weight
        w = paddle.create_parameter(stock.conv2.weight.shape, "float32")
        w.set_value(np.random.default_rng(5).normal(size=w.shape).astype("float32"))
        stock.conv2.weight = w
        fused.conv2.weight = w
        assert_close(fused(x), stock(x), "out", what="after a new conv2 weight")
        # a changed attribute (BN epsilon) and the stride of the downsample
        stock.bn3._epsilon = fused.bn3._epsilon = 0.5
        assert_close(fused(x), stock(x), "out", what="after a new epsilon")
    stock.train(), fused.train()
    assert_close(fused(x), stock(x), "out", what="training after eval")
    for k, v in stock.state_dict().items():
        assert_close(fused.state_dict()[k], v, "stat", what=k)
    with pytest.raises(Exception, match="empty batch"):
        fused(x[:0])
    with pytest.raises(Exception, match="float32, float16 or bfloat16"):
        fused(x.astype("float64"))
    with pytest.raises(Exception, match="channels"):
        fused(x[:, :8])


def test_reused_call_sees_in_place_edits_and_layer_swaps():
    """The cached call's key copies list attributes and records each
    tensor's buffer: an in-place edit of a conv's dilation and padding, a
    BatchNorm turned to float64 in place, a replaced downsample BatchNorm and
    BatchNorms in mixed modes (one op per stage) are all seen."""
    stock, fused = _blocks("bottleneck", 16, 4, 2)
    x = paddle.randn([2, 16, 6, 6])
    stock.eval(), fused.eval()
    with paddle.no_grad():
        assert_close(fused(x), stock(x), "out", what="first call")
        for block in (stock, fused):
            block.conv2._dilation[:] = [2, 2]
            block.conv2._updated_padding[:] = [2, 2]
        assert_close(fused(x), stock(x), "out", what="after in-place dilation and padding")
        rng = np.random.default_rng(7)
        bn = nn.BatchNorm2D(16)
        bn.weight.set_value(rng.uniform(0.5, 1.5, [16]).astype("float32"))
        bn._mean.set_value(rng.normal(0, 0.5, [16]).astype("float32"))
        bn.eval()
        stock.downsample[1] = bn
        fused.downsample[1] = copy.deepcopy(bn)
        assert_close(fused(x), stock(x), "out", what="after a new downsample BatchNorm")
        assert fused._call[1] is not None
        stock.bn2.train(), fused.bn2.train()  # mixed modes: one op per stage
        assert_close(fused(x), stock(x), "out", what="mixed BN modes")
        assert fused._call[1] is None and not fused.one_op
        stock.bn2.eval(), fused.bn2.eval()
        assert_close(fused(x), stock(x), "out", what="all eval again")
        assert fused._call[1] is not None
        fused.bn3.to(dtype="float64")
        with pytest.raises(Exception, match="float32"):
            fused(x)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_block_op_low_precision_on_gpu(dtype):
    """fp16/bf16 activations and filters, fp32 BN statistics, against the
    stock block run on the same low-precision inputs."""
    paddle.set_device("gpu")
    try:
        stock, fused = _blocks("bottleneck", 16, 4, 2)
        x = paddle.randn([2, 16, 8, 8])
        with paddle.amp.auto_cast(level="O1", dtype=dtype):
            ys, yf = stock(x), fused(x)
        assert_close(yf, ys, "out", dtype=dtype, what="auto_cast out")
        for k, v in stock.state_dict().items():
            assert_close(fused.state_dict()[k], v, "stat", dtype=dtype, what=k)
    finally:
        paddle.set_device("cpu")
