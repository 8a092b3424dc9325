"""Static graph and deployment: to_static training matches dygraph,
jit.save -> jit.load and a paddle.inference predictor (op library loaded by
importing paddle_fastconv) match dygraph eval."""
import os

import numpy as np
import paddle
import pytest
from paddle.static import InputSpec

import paddle_fastconv as pf
from helpers import LEGACY_STATIC, LEGACY_STATIC_REASON, predict
from tolerances import assert_close


@pytest.mark.xfail(LEGACY_STATIC, strict=True, raises=IndexError, reason=LEGACY_STATIC_REASON)
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
@pytest.mark.parametrize("with_res", [False, True])
def test_to_static_training_matches_dygraph(fmt, with_res):
    class Net(paddle.nn.Layer):
        # Settings are attributes, not closure variables: Paddle 2.6's
        # dy2static does not resolve free variables of forward().
        def __init__(self, fmt, with_res):
            super().__init__()
            self.with_res = with_res
            self.a = pf.ConvBNReLU(4, 8, 3, padding=1, bias=True, data_format=fmt)
            self.b = pf.ConvBNReLU(8, 8, 3, padding=1, act="relu", data_format=fmt)

        def forward(self, x):
            h = self.a(x)
            if self.with_res:
                return self.b(h, h)
            return self.b(h)

    dyn, st = Net(fmt, with_res), Net(fmt, with_res)
    st.set_state_dict(dyn.state_dict())
    st_fn = paddle.jit.to_static(st, full_graph=True)
    o1 = paddle.optimizer.Momentum(0.05, parameters=dyn.parameters())
    o2 = paddle.optimizer.Momentum(0.05, parameters=st.parameters())
    rng = np.random.default_rng(0)
    shape = [2, 4, 7, 7] if fmt == "NCHW" else [2, 7, 7, 4]
    for step in range(3):
        x = paddle.to_tensor(rng.normal(0, 1, shape).astype("float32"))
        l1 = (dyn(x) ** 2).mean()
        l2 = (st_fn(x) ** 2).mean()
        assert_close(l2, l1, "out", what="loss %d" % step)
        l1.backward(), l2.backward()
        o1.step(), o2.step(), o1.clear_grad(), o2.clear_grad()
    for (k, v1), (_, v2) in zip(sorted(dyn.state_dict().items()), sorted(st.state_dict().items())):
        assert_close(v2, v1, "grad", what=k)


def _saved_model(tmp_path, fmt):
    paddle.seed(3)
    net = paddle.nn.Sequential(pf.ConvBNReLU(3, 8, 3, stride=2, padding=1, data_format=fmt),
                               pf.ConvBNReLU(8, 16, 1, act="none", data_format=fmt))
    x = paddle.randn([4, 3, 12, 12] if fmt == "NCHW" else [4, 12, 12, 3])
    net(x)  # one training step moves the running statistics off their init
    net.eval()
    path = os.path.join(str(tmp_path), "model")
    spec = [InputSpec([None, 3, 12, 12] if fmt == "NCHW" else [None, 12, 12, 3], "float32")]
    paddle.jit.save(net, path, input_spec=spec)
    return net, path, x


@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_jit_save_load_and_inference_predictor(tmp_path, fmt):
    net, path, x = _saved_model(tmp_path, fmt)
    with paddle.no_grad():
        expected = net(x).numpy()
    loaded = paddle.jit.load(path)
    loaded.eval()
    assert_close(loaded(x), expected, "out", what="jit.load")

    out = predict(path, x)[0]
    assert_close(out, expected, "out", what="paddle.inference")


class _NHWCThenSqueeze(paddle.nn.Layer):
    """An NHWC op of this package, pooled into an NCHW map, then Paddle's own
    (oneDNN in paddle.inference) squeeze: the pattern of a channels_last
    GoogLeNet's classifier head."""

    def __init__(self):
        super().__init__()
        self.w = self.create_parameter([16, 8, 1, 1])

    def forward(self, x):  # x: NCHW [N, 8, 7, 7]
        h = pf.ops.onednn_conv2d(pf.ops.to_channels_last(x), self.w, data_format="NHWC")
        return paddle.squeeze(pf.ops.avg_pool2d_nhwc_to_nchw(h, [7, 7], [7, 7]), axis=[2, 3])


@pytest.mark.skipif(not pf.onednn_available(), reason="needs the oneDNN engine")
def test_inference_reads_nhwc_op_outputs_as_plain_tensors(tmp_path):
    """Paddle's custom-op runtime tags the outputs of an op with an attribute
    named data_format with that layout, and paddle.inference's oneDNN kernels
    then read a plain [N, C, 1, 1] map as NHWC: this squeeze returned
    [N, 1, C]. The ops name the attribute activation_layout instead."""
    paddle.seed(10)
    net = _NHWCThenSqueeze()
    net.eval()
    x = paddle.randn([2, 8, 7, 7])
    with paddle.no_grad():
        expected = net(x).numpy()
    assert expected.shape == (2, 16)
    path = os.path.join(str(tmp_path), "nhwc_head")
    paddle.jit.save(net, path, input_spec=[InputSpec([None, 8, 7, 7], "float32")])
    assert_close(predict(path, x)[0], expected, "out", what="paddle.inference")
