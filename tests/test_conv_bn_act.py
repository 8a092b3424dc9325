"""Parity of the fused Conv+BN(+residual)+act op with the stock layers:
outputs, every gradient and the running statistics, train and eval, NCHW and
NHWC, over kernel sizes, strides, dilation, groups, asymmetric padding, odd
sizes and batch 1."""
import numpy as np
import paddle
import pytest

import paddle_fastconv as pf

from helpers import input_shape, leaf, make_pair, stock_forward
from tolerances import assert_close

# cin, cout, kernel, stride, padding, dilation, groups, conv bias, batch, (H, W)
CASES = [
    (8, 16, 3, 1, 1, 1, 1, False, 2, (9, 9)),
    (8, 16, 1, 1, 0, 1, 1, False, 2, (8, 8)),
    (6, 12, 5, 2, 2, 1, 1, True, 2, (11, 13)),
    (4, 8, 7, 2, 3, 1, 1, False, 2, (15, 15)),
    (8, 8, 3, 1, 2, 2, 1, False, 2, (10, 10)),
    (8, 16, 3, 2, 1, 1, 4, True, 2, (9, 7)),
    (8, 16, 3, 1, [0, 1, 2, 1], 1, 1, False, 2, (7, 9)),
    (3, 8, 3, 2, "SAME", 1, 1, False, 2, (9, 10)),
    (16, 8, 1, 2, 0, 1, 1, False, 1, (7, 5)),
    (8, 8, 3, 1, 1, 1, 1, True, 1, (5, 5)),
    # NCHW: the GEMM path's per-thread column shares split an image
    (8, 16, 1, 1, 0, 1, 1, True, 3, (5, 7)),
]
VARIANTS = [("relu", False), ("relu", True), ("none", False), ("none", True)]
FORMATS = ["NCHW", "NHWC"]


def _ids(case):
    cin, cout, k, s, p, d, g, b, n, hw = case
    return "c%d-%d_k%d_s%d_p%s_d%d_g%d%s_n%d_%dx%d" % (
        cin, cout, k, s, str(p).replace(" ", ""), d, g, "_bias" if b else "", n, *hw)


def _run_pair(case, fmt, act, with_res, training, seed=1):
    cin, cout, k, s, p, d, g, b, n, hw = case
    fused, conv, bn = make_pair(cin, cout, k, s, p, d, g, b, act, fmt, seed=seed)
    if not training:
        fused.eval(), conv.eval(), bn.eval()
    rng = np.random.default_rng(seed + 100)
    x_np = rng.normal(0.3, 1.0, input_shape(n, cin, hw, fmt)).astype("float32")
    x1, x2 = leaf(x_np), leaf(x_np)
    r1 = r2 = None
    # Output shape from the stock conv; the residual must match it.
    with paddle.no_grad():
        out_shape = conv(leaf(x_np, True)).shape
    if with_res:
        r_np = rng.normal(0, 1, out_shape).astype("float32")
        r1, r2 = leaf(r_np), leaf(r_np)
    y1 = fused(x1, r1)
    y2 = stock_forward(conv, bn, act, x2, r2)
    dy = paddle.to_tensor(rng.normal(0, 1, out_shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    return fused, conv, bn, (x1, x2), (r1, r2), (y1, y2)


def _check_grads(fused, conv, bn, xs, rs, with_bias, with_res, training):
    assert_close(xs[0].grad, xs[1].grad, "grad", what="dx")
    assert_close(fused.conv.weight.grad, conv.weight.grad, "grad", what="dW")
    assert_close(fused.bn.weight.grad, bn.weight.grad, "grad", what="dgamma")
    assert_close(fused.bn.bias.grad, bn.bias.grad, "grad", what="dbeta")
    if with_bias:
        # In training the conv-bias gradient is zero up to rounding (BN removes
        # the mean); in eval it is a real sum.
        assert_close(fused.conv.bias.grad, conv.bias.grad,
                     "cancel" if training else "grad", what="dbias")
    if with_res:
        assert_close(rs[0].grad, rs[1].grad, "grad", what="dresidual")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_training_parity(case, act, with_res, fmt, engine):
    fused, conv, bn, xs, rs, ys = _run_pair(case, fmt, act, with_res, training=True)
    assert_close(ys[0], ys[1], "out", what="y")
    _check_grads(fused, conv, bn, xs, rs, case[7], with_res, True)
    assert_close(fused.bn._mean, bn._mean, "stat", what="running_mean")
    assert_close(fused.bn._variance, bn._variance, "stat", what="running_var")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_eval_parity(case, act, with_res, fmt, engine):
    """Eval: BN folded into the conv; gradients still flow (frozen-BN fine-tuning)."""
    fused, conv, bn, xs, rs, ys = _run_pair(case, fmt, act, with_res, training=False)
    assert_close(ys[0], ys[1], "out", what="y")
    _check_grads(fused, conv, bn, xs, rs, case[7], with_res, False)
    # Eval never touches the running statistics.
    assert_close(fused.bn._mean, bn._mean, "stat", what="running_mean")
    assert_close(fused.bn._variance, bn._variance, "stat", what="running_var")


@pytest.mark.parametrize("act,with_res", VARIANTS, ids=["relu", "relu+res", "none", "none+res"])
def test_eval_parity_with_oneDNNs_gemm_convolution_and_a_separate_epilogue(
        act, with_res, monkeypatch):
    """NCHW 1x1 eval runs its GEMM in per-thread pieces with the epilogue on
    each; PADDLE_FASTCONV_GEMM_PIECES=0 (read when a plan is built) keeps
    oneDNN's GEMM convolution and one epilogue pass. Both match stock."""
    monkeypatch.setenv("PADDLE_FASTCONV_GEMM_PIECES", "0")
    pf.clear_caches()
    try:
        case = (8, 16, 1, 1, 0, 1, 1, True, 3, (5, 7))
        fused, conv, bn, xs, rs, ys = _run_pair(case, "NCHW", act, with_res, training=False)
        assert_close(ys[0], ys[1], "out", what="y")
        _check_grads(fused, conv, bn, xs, rs, True, with_res, False)
    finally:
        monkeypatch.delenv("PADDLE_FASTCONV_GEMM_PIECES")
        pf.clear_caches()


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_grad_eval_matches(fmt):
    fused, conv, bn = make_pair(16, 32, 3, 1, 1, data_format=fmt)
    for m in (fused, conv, bn):
        m.eval()
    x = paddle.randn(input_shape(2, 16, (12, 12), fmt))
    with paddle.no_grad():
        assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("momentum", [0.9, 0.1])
def test_sgd_training_loop_then_eval(fmt, momentum, engine):
    """A few SGD steps from the same start: losses, parameters and running
    statistics follow stock, and eval afterwards (folded weights rebuilt after
    every step) matches too."""
    fused, conv, bn = make_pair(8, 16, 3, 2, 1, bias=True, data_format=fmt, momentum=momentum)
    opt1 = paddle.optimizer.SGD(0.1, parameters=fused.parameters())
    opt2 = paddle.optimizer.SGD(0.1, parameters=conv.parameters() + bn.parameters())
    rng = np.random.default_rng(5)
    for step in range(4):
        x = paddle.to_tensor(rng.normal(0, 1, input_shape(4, 8, (10, 10), fmt)).astype("float32"))
        target = paddle.to_tensor(rng.normal(0, 1, [4, 16, 5, 5] if fmt == "NCHW" else [4, 5, 5, 16]).astype("float32"))
        l1 = ((fused(x) - target) ** 2).mean()
        l2 = ((stock_forward(conv, bn, "relu", x) - target) ** 2).mean()
        assert_close(l1, l2, "out", what="loss step %d" % step)
        l1.backward(), l2.backward()
        opt1.step(), opt2.step()
        opt1.clear_grad(), opt2.clear_grad()
        # eval between steps: the fold must see the new weights and statistics
        fused.eval(), conv.eval(), bn.eval()
        with paddle.no_grad():
            assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out", what="eval %d" % step)
        fused.train(), conv.train(), bn.train()
    assert_close(fused.conv.weight, conv.weight, "grad", what="W after steps")
    assert_close(fused.bn.weight, bn.weight, "grad", what="gamma after steps")
    assert_close(fused.bn._mean, bn._mean, "stat", what="running_mean")
    assert_close(fused.bn._variance, bn._variance, "stat", what="running_var")


def test_eval_cache_sees_set_state_dict_and_set_value():
    fused, conv, bn = make_pair(8, 8, 3, 1, 1)
    for m in (fused, conv, bn):
        m.eval()
    x = paddle.randn([2, 8, 6, 6])
    with paddle.no_grad():
        first = fused(x)
        # same weights object, new values: the cache must not serve stale W'
        fused.conv.weight.set_value(fused.conv.weight * 0.5)
        conv.weight.set_value(conv.weight * 0.5)
        assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out", what="after set_value")
        sd = {k: v * 1.0 for k, v in fused.state_dict().items()}
        sd["bn._variance"] = sd["bn._variance"] * 3.0
        fused.set_state_dict(sd)
        bn.set_state_dict({k[3:]: v for k, v in sd.items() if k.startswith("bn.")})
        second = fused(x)
        assert_close(second, stock_forward(conv, bn, "relu", x), "out", what="after set_state_dict")
        assert float((first - second).abs().max()) > 1e-3  # the change is visible


@pytest.mark.parametrize("cin", [8, 160], ids=["small", "multi_chunk"])
def test_eval_cache_sees_a_single_weight_element_change(cin):
    """The folded weights are keyed on a fingerprint of W, not a copy: one
    changed element anywhere (first, middle, last; W of 8 KiB and of 1.4 MiB,
    several 256 KiB fingerprint chunks) must be seen, as must two elements
    swapped."""
    fused, conv, bn = make_pair(cin, 256, 3, 1, 1)
    for m in (fused, conv, bn):
        m.eval()
    x = paddle.randn([1, cin, 5, 5])
    w = fused.conv.weight
    n = int(np.prod(w.shape))
    with paddle.no_grad():
        fused(x)  # cache the fold
        for flat in (0, n // 2 + 7, n - 1):
            idx = tuple(int(i) for i in np.unravel_index(flat, w.shape))
            old = float(w[idx])
            for layer in (fused.conv, conv):
                layer.weight[idx] = old + 1.0
            assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out",
                         what="element %d changed" % flat)
        a, b = (0, 0, 0, 0), (w.shape[0] - 1, cin - 1, 2, 2)
        for layer in (fused.conv, conv):
            va, vb = float(layer.weight[a]), float(layer.weight[b])
            layer.weight[a], layer.weight[b] = vb + 3.0, va - 3.0
        assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out", what="swap")


def test_state_dict_keys_match_stock_layers():
    fused = __import__("paddle_fastconv").ConvBNReLU(4, 8, 3, bias=True)
    stock = paddle.nn.Sequential(("conv", paddle.nn.Conv2D(4, 8, 3)), ("bn", paddle.nn.BatchNorm2D(8)))
    a, b = fused.state_dict(), stock.state_dict()
    assert sorted(a) == sorted(b)
    assert all(a[k].shape == b[k].shape for k in a)
    stock.set_state_dict(a)
    fused.set_state_dict(stock.state_dict())


def test_from_layers_shares_parameters():
    import paddle_fastconv as pf
    conv, bn = paddle.nn.Conv2D(4, 8, 3, padding=1, bias_attr=False), paddle.nn.BatchNorm2D(8)
    ref_conv, ref_bn = paddle.nn.Conv2D(4, 8, 3, padding=1, bias_attr=False), paddle.nn.BatchNorm2D(8)
    ref_conv.set_state_dict(conv.state_dict())
    fused = pf.ConvBNReLU.from_layers(conv, bn)
    assert fused.conv.weight is conv.weight and fused.bn._mean is bn._mean
    x = paddle.randn([2, 4, 6, 6])
    assert_close(fused(x), paddle.nn.functional.relu(ref_bn(ref_conv(x))), "out")
    # the shared buffer was updated in place
    assert_close(bn._mean, ref_bn._mean, "stat")
    fused.eval()
    assert not conv.training and not bn.training


def test_use_global_stats_uses_running_statistics_in_training():
    import paddle_fastconv as pf
    conv = paddle.nn.Conv2D(4, 8, 3, bias_attr=False)
    bn = paddle.nn.BatchNorm2D(8, use_global_stats=True)
    fused = pf.ConvBNReLU.from_layers(conv, bn)
    x = paddle.randn([2, 4, 7, 7])
    mean_before = bn._mean.numpy().copy()
    assert_close(fused(x), paddle.nn.functional.relu(bn(conv(x))), "out")
    np.testing.assert_array_equal(bn._mean.numpy(), mean_before)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("training", [True, False])
def test_gpu_low_precision_vs_fp32_stock(dtype, fmt, training):
    """fp16/bf16 activations and weights, fp32 BN parameters and statistics,
    against the stock layers in fp32 on the same (rounded) weights."""
    paddle.set_device("gpu")
    fused, conv, bn = make_pair(16, 32, 3, 1, 1, data_format=fmt)
    if not training:
        fused.eval(), conv.eval(), bn.eval()
    fused.conv.to(dtype=dtype)
    conv.weight.set_value(fused.conv.weight.astype("float32"))
    x = paddle.randn([4, 16, 12, 12] if fmt == "NCHW" else [4, 12, 12, 16])
    x_low = x.astype(dtype)
    x_ref = x_low.astype("float32")
    x_low.stop_gradient = x_ref.stop_gradient = False
    y = fused(x_low)
    y_ref = stock_forward(conv, bn, "relu", x_ref)
    assert y.dtype == x_low.dtype
    assert_close(y, y_ref, "out", dtype=dtype)
    y.astype("float32").sum().backward()
    y_ref.sum().backward()
    assert_close(x_low.grad, x_ref.grad, "grad", dtype=dtype, what="dx")
    assert_close(fused.bn.weight.grad, bn.weight.grad, "grad", dtype=dtype, what="dgamma")
    assert_close(fused.bn._mean, bn._mean, "stat", dtype=dtype, what="running_mean")


@pytest.mark.parametrize("kind", ["conv_bn_act", "onednn_conv2d"])
def test_input_without_gradient_skips_dx_and_keeps_weight_grads(kind):
    """An input that stops gradients (the images under a network's first
    convolution) gets no backward-data pass; the weight (and BN) gradients
    still match stock, and an input that needs its gradient still gets it."""
    from paddle_fastconv.ops import onednn_conv2d
    if kind == "onednn_conv2d" and not pf.onednn_available():
        pytest.skip("needs the oneDNN engine")
    paddle.seed(3)
    conv = paddle.nn.Conv2D(3, 8, 7, stride=2, padding=3, bias_attr=False)
    bn = paddle.nn.BatchNorm2D(8)
    fused_conv = paddle.nn.Conv2D(3, 8, 7, stride=2, padding=3, bias_attr=False)
    fused_bn = paddle.nn.BatchNorm2D(8)
    fused_conv.set_state_dict(conv.state_dict())
    fused = pf.ConvBNReLU.from_layers(fused_conv, fused_bn)
    for needs_dx in (False, True):
        x = paddle.randn([2, 3, 17, 15])
        xs, xf = x.detach(), x.detach()
        xs.stop_gradient = xf.stop_gradient = not needs_dx
        if kind == "conv_bn_act":
            ys, yf = paddle.nn.functional.relu(bn(conv(xs))), fused(xf)
            wf = fused_conv.weight
        else:
            ys, yf = conv(xs), onednn_conv2d(xf, fused_conv.weight, stride=2, padding=3)
            wf = fused_conv.weight
        dy = paddle.randn(ys.shape)
        ys.backward(dy), yf.backward(dy)
        assert_close(wf.grad, conv.weight.grad, "grad", what="dW")
        if kind == "conv_bn_act":
            assert_close(fused_bn.weight.grad, bn.weight.grad, "grad", what="dgamma")
        if needs_dx:
            assert_close(xf.grad, xs.grad, "grad", what="dx")
        else:
            assert xf.grad is None
        for p in (conv.weight, fused_conv.weight, bn.weight, bn.bias, fused_bn.weight,
                  fused_bn.bias):
            p.clear_gradient()


@pytest.mark.parametrize("fmt", FORMATS)
def test_onednn_conv2d_weight_cache(fmt):
    """onednn_conv2d keeps the filters' oneDNN copy where no gradient is
    taken (no_grad, or a weight that stops gradients) and sees an in-place
    change of the weight there; with gradients it caches nothing."""
    import gc
    from paddle_fastconv.ops import onednn_conv2d
    if not pf.onednn_available():
        pytest.skip("needs the oneDNN engine")
    pf.clear_caches()
    paddle.seed(5)
    conv = paddle.nn.Conv2D(6, 10, 3, padding=1, bias_attr=False, data_format=fmt)
    w = paddle.create_parameter([10, 6, 3, 3], "float32")
    w.set_value(conv.weight)
    x = paddle.randn(input_shape(2, 6, (7, 9), fmt))
    run = lambda: onednn_conv2d(x, w, padding=1, data_format=fmt)  # noqa: E731
    assert_close(run(), conv(x), "out", what="with gradients")
    assert pf.cache_info()["folded_weights"] == 0
    with paddle.no_grad():
        for step in range(3):
            assert_close(run(), conv(x), "out", what="no_grad call %d" % step)
            assert pf.cache_info()["folded_weights"] == 1
            w.set_value(w * 0.5)
            conv.weight.set_value(conv.weight * 0.5)
        # one element changed: the fingerprint, not a sample, decides
        wn = w.numpy()
        wn[9, 5, 2, 2] += 1.0
        w.set_value(wn)
        conv.weight.set_value(wn)
        assert_close(run(), conv(x), "out", what="after one element changed")
    del w
    gc.collect()
    assert pf.cache_info()["folded_weights"] == 0
    with pytest.raises(TypeError, match="cache_weights"):
        onednn_conv2d(x, conv.weight, padding=1, data_format=fmt, cache_weights="yes")


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_statistics_accurate_for_large_means_and_counts(fmt):
    """Batch mean and variance of a map whose mean (1000) dwarfs its spread
    (0.5), over 8 * 40 * 40 values per channel, against float64: a naive
    E[z^2] - E[z]^2 in float32 would lose the variance entirely. The identity
    1x1 convolution makes z = x; momentum 0 makes the running statistics the
    batch statistics."""
    c = 24
    layer = pf.nn.ConvBNReLU(c, c, 1, act="none", data_format=fmt, momentum=0.0)
    layer.conv.weight.set_value(paddle.eye(c).reshape([c, c, 1, 1]))
    rng = np.random.default_rng(7)
    x_np = (1000.0 + rng.normal(0, 0.5, (8, 40, 40, c))).astype("float32")
    x64 = x_np.astype("float64").reshape(-1, c)
    if fmt == "NCHW":
        x_np = np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))
    layer(paddle.to_tensor(x_np))
    np.testing.assert_allclose(layer.bn._mean.numpy(), x64.mean(0), rtol=1e-6)
    np.testing.assert_allclose(layer.bn._variance.numpy(), x64.var(0), rtol=2e-4)
