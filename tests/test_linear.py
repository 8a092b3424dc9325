"""pf.nn.Linear / pf.ops.linear (the fastconv_linear op on float32 CPU
tensors) against the stock paddle.nn.Linear with the same parameters:
outputs, every gradient, SGD steps, fuse()/unfuse(), static graphs and bad
input."""
import os

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.static import InputSpec

import paddle_fastconv as pf
from helpers import LEGACY_STATIC, LEGACY_STATIC_REASON, leaf, predict
from tolerances import assert_close

needs_op = pytest.mark.skipif(not pf.onednn_available(),
                              reason="the op needs the oneDNN engine; Paddle's linear runs")


def _pair(k, n, bias, seed=0):
    """A stock Linear with random parameters and pf.nn.Linear sharing them."""
    paddle.seed(seed)
    stock = nn.Linear(k, n, bias_attr=None if bias else False)
    if bias:
        stock.bias.set_value(np.random.default_rng(seed).normal(0, 1, n).astype("float32"))
    return stock, pf.nn.Linear.from_layer(stock)


@pytest.mark.parametrize("x_shape,n", [([8, 1152], 1024), ([1, 5], 3), ([2, 3, 16], 7),
                                       ([7], 4), ([300, 33], 257)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_stock_with_gradients(x_shape, n, bias):
    stock, fused = _pair(x_shape[-1], n, bias)
    x_np = np.random.default_rng(1).normal(size=x_shape).astype("float32")
    x1, x2 = leaf(x_np), leaf(x_np)
    y1, y2 = fused(x1), stock(x2)
    assert_close(y1, y2, "out", what="y")
    dy = paddle.to_tensor(np.random.default_rng(2).normal(size=y2.shape).astype("float32"))
    (y1 * dy).sum().backward()
    g_w, g_b = stock.weight.grad.numpy(), stock.bias.grad.numpy() if bias else None
    stock.clear_gradients()
    (y2 * dy).sum().backward()
    assert_close(x1.grad, x2.grad, "grad", what="dx")
    assert_close(g_w, stock.weight.grad, "grad", what="dweight")
    if bias:
        assert_close(g_b, stock.bias.grad, "grad", what="dbias")


@needs_op
def test_runs_the_op_and_skips_dx_for_inputs_without_gradient(monkeypatch):
    from paddle_fastconv import ops
    calls = []
    real = ops.OPS["fastconv_linear"]
    monkeypatch.setitem(ops.OPS, "fastconv_linear",
                        lambda *a: calls.append(a[-1]) or real(*a))
    stock, fused = _pair(6, 5, True)
    x = paddle.randn([4, 6])  # stop_gradient: no dX wanted
    fused(x).sum().backward()
    assert calls == [False]
    expected = paddle.ones([4, 5]).t().matmul(x).t()
    assert_close(stock.weight.grad, expected, "grad", what="dweight")
    assert x.grad is None


def _assert_same_training(expected, actual, x_shape, seed, momentum=None):
    """Three SGD (momentum: Momentum) steps on (model, forward) pairs from the
    same start: the losses and the final parameters agree."""
    rng = np.random.default_rng(seed)

    def opt(model):
        if momentum is None:
            return paddle.optimizer.SGD(0.1, parameters=model.parameters())
        return paddle.optimizer.Momentum(0.1, momentum=momentum, parameters=model.parameters())

    (ma, fa), (mb, fb) = expected, actual
    oa, ob = opt(ma), opt(mb)
    for step in range(3):
        x = paddle.to_tensor(rng.normal(size=x_shape).astype("float32"))
        la, lb = (fa(x) ** 2).mean(), (fb(x) ** 2).mean()
        assert_close(lb, la, "out", what="loss %d" % step)
        la.backward(), lb.backward()
        oa.step(), ob.step(), oa.clear_grad(), ob.clear_grad()
    for (k, va), (_, vb) in zip(sorted(ma.state_dict().items()), sorted(mb.state_dict().items())):
        assert_close(vb, va, "grad", what=k)


def test_sgd_steps_match_stock():
    def net(fused):
        paddle.seed(4)
        layers = [nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)]
        if fused:
            layers = [pf.nn.Linear.from_layer(m) if isinstance(m, nn.Linear) else m
                      for m in layers]
        return nn.Sequential(*layers)

    a, b = net(False), net(True)
    assert sorted(a.state_dict()) == sorted(b.state_dict())
    _assert_same_training((a, a), (b, b), [6, 10], seed=3, momentum=0.9)


def test_constructor_matches_stock_initialization():
    paddle.seed(5)
    stock = nn.Linear(12, 9)
    paddle.seed(5)
    ours = pf.nn.Linear(12, 9)
    assert list(ours.state_dict()) == list(stock.state_dict())
    for k, v in stock.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k].numpy(), v.numpy())


def test_fuse_swaps_linears_sharing_parameters_and_unfuse_restores():
    paddle.seed(6)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 2)))
    keys = list(model.state_dict())
    w0 = model[0].weight
    x = paddle.randn([3, 8])
    with paddle.no_grad():
        before = model(x).numpy()
    opt = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    fused, report = pf.fuse(model, return_report=True)
    assert ("0", "Linear") in report and ("2.0", "Linear") in report
    assert isinstance(fused[0], pf.nn.Linear) and fused[0].weight is w0
    assert list(fused.state_dict()) == keys
    with paddle.no_grad():
        assert_close(fused(x), before, "out", what="fused output")
    w_before = w0.numpy().copy()
    fused(x).sum().backward()
    opt.step()  # the optimizer built before fusing updates the shared weight
    assert np.abs(fused[0].weight.numpy() - w_before).max() > 1e-3
    pf.unfuse(fused)
    assert type(fused[0]) is nn.Linear and type(fused[2][0]) is nn.Linear
    assert fused[0].weight is w0
    single = pf.fuse(nn.Linear(4, 4))
    assert isinstance(single, pf.nn.Linear)
    assert type(pf.unfuse(single)) is nn.Linear


def test_empty_batch_behaves_as_stock():
    """Paddle 3 returns an empty output; Paddle 2.6's linear rejects an empty
    input with a ValueError, and so does ours there (it is Paddle's linear
    that runs inputs with no elements)."""
    stock, fused = _pair(5, 3, True)
    x = paddle.zeros([0, 5])
    try:
        expected = stock(x).shape
    except ValueError:
        with pytest.raises(ValueError):
            fused(x)
        return
    assert expected == [0, 3] and fused(x).shape == expected


def test_bad_input_raises_clear_errors():
    _, fused = _pair(5, 3, True)
    with pytest.raises(ValueError, match="fastconv_linear: argument 'x' has 4 features"):
        fused(paddle.randn([2, 4]))
    with pytest.raises(TypeError, match="fastconv_linear: argument 'x' must be float32"):
        fused(paddle.ones([2, 5], dtype="int32"))
    with pytest.raises(ValueError, match="argument 'weight' must be 2-D"):
        pf.ops.linear(paddle.randn([2, 5]), paddle.randn([5, 3, 1]))
    with pytest.raises(ValueError, match="argument 'bias' must have out_features = 3"):
        pf.ops.linear(paddle.randn([2, 5]), paddle.randn([5, 3]), paddle.randn([4]))
    with pytest.raises(TypeError, match="argument 'layer' must be a paddle.nn.Linear"):
        pf.nn.Linear.from_layer(nn.ReLU())


@needs_op
def test_op_checks_its_arguments_in_cpp():
    """The op's own checks, for callers that bypass the Python wrapper."""
    from paddle_fastconv._loader import OPS
    op = OPS["fastconv_linear"]
    with pytest.raises(Exception, match="fastconv_linear: argument 'x' has 4 features"):
        op(paddle.randn([2, 4]), paddle.randn([5, 3]), paddle.zeros([1, 1]), True)
    with pytest.raises(Exception, match="fastconv_linear: argument 'bias' must have"):
        op(paddle.randn([2, 5]), paddle.randn([5, 3]), paddle.zeros([4]), True)
    with pytest.raises(Exception, match="fastconv_linear: argument 'weight' must be a "
                                        "float32 CPU tensor"):
        op(paddle.randn([2, 5]), paddle.randn([5, 3]).astype("float64"),
           paddle.zeros([1, 1]), True)


class _Head(nn.Layer):
    def __init__(self):
        super().__init__()
        self.fc1 = pf.nn.Linear(6, 8)
        self.fc2 = pf.nn.Linear(8, 3, bias_attr=False)

    def forward(self, x):
        return self.fc2(paddle.nn.functional.relu(self.fc1(x)))


@pytest.mark.xfail(LEGACY_STATIC, strict=True, raises=IndexError, reason=LEGACY_STATIC_REASON)
def test_to_static_training_matches_dygraph():
    paddle.seed(7)
    dyn, st = _Head(), _Head()
    st.set_state_dict(dyn.state_dict())
    st_fn = paddle.jit.to_static(st, full_graph=True)
    _assert_same_training((dyn, dyn), (st, st_fn), [4, 6], seed=8)


def test_jit_save_and_inference_predictor(tmp_path):
    paddle.seed(9)
    net = _Head()
    net.eval()
    x = paddle.randn([5, 6])
    with paddle.no_grad():
        expected = net(x).numpy()
    path = os.path.join(str(tmp_path), "head")
    paddle.jit.save(net, path, input_spec=[InputSpec([None, 6], "float32")])
    if pf.onednn_available():  # the saved program runs the op
        prog = path + (".json" if os.path.exists(path + ".json") else ".pdmodel")
        with open(prog, "rb") as f:
            assert b"fastconv_linear" in f.read()
    assert_close(paddle.jit.load(path)(x), expected, "out", what="jit.load")
    assert_close(predict(path, x)[0], expected, "out", what="paddle.inference")
