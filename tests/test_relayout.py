"""NCHW <-> NHWC copies (pf.ops.to_channels_last / to_channels_first, the
fastconv_relayout op on float32 CPU tensors) against Paddle's transpose:
values, gradients, odd shapes and bad input."""
import numpy as np
import paddle
import pytest

import paddle_fastconv as pf
from paddle_fastconv.ops import to_channels_first, to_channels_last


@pytest.mark.parametrize("shape", [[2, 3, 17, 11], [1, 1, 1, 1], [3, 20, 5, 1], [8, 3, 32, 32]])
@pytest.mark.parametrize("to_nhwc", [True, False], ids=["to_nhwc", "to_nchw"])
def test_matches_transpose_with_gradient(shape, to_nhwc):
    perm = [0, 2, 3, 1] if to_nhwc else [0, 3, 1, 2]
    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    x1, x2 = paddle.to_tensor(x_np), paddle.to_tensor(x_np)
    x1.stop_gradient = x2.stop_gradient = False
    y1 = (to_channels_last if to_nhwc else to_channels_first)(x1)
    y2 = x2.transpose(perm)
    assert y1.shape == y2.shape
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    dy = paddle.to_tensor(np.random.default_rng(1).normal(size=y2.shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    np.testing.assert_array_equal(x1.grad.numpy(), x2.grad.numpy())


def test_runs_the_op_on_float32_cpu():
    if not pf.onednn_available():
        pytest.skip("the op needs the oneDNN engine; Paddle's transpose runs instead")
    from paddle_fastconv._loader import OPS
    x = paddle.randn([2, 3, 4, 5])
    y = OPS["fastconv_relayout"](x, True)
    np.testing.assert_array_equal(y.numpy(), x.numpy().transpose(0, 2, 3, 1))


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="fastconv_relayout: argument 'x' must be 4-D"):
        to_channels_last(paddle.randn([3, 4, 5]))
    with pytest.raises(TypeError, match="'x' must be float32"):
        to_channels_last(paddle.randn([1, 2, 3, 4]).astype("float64"))
    if pf.onednn_available():
        with pytest.raises(Exception, match="fastconv_relayout.*empty"):
            to_channels_last(paddle.randn([0, 2, 3, 4]))
