"""The NHWC max pool kernel (used by fuse(..., channels_last=True)) against
paddle.nn.functional.max_pool2d: outputs and input gradients."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_fastconv.ops import max_pool2d_nhwc
from tolerances import assert_close


@pytest.mark.parametrize("shape,k,s,p", [
    ([2, 112, 112, 64], 3, 2, 1),   # the ResNet stem
    ([1, 9, 7, 5], 3, 2, 1),
    ([3, 8, 8, 3], 2, 2, 0),
    ([2, 11, 6, 17], (3, 2), (1, 2), (1, 0)),
    ([1, 5, 5, 1], 5, 1, 2),
])
def test_matches_stock_forward_and_backward(shape, k, s, p):
    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    x1, x2 = paddle.to_tensor(x_np), paddle.to_tensor(x_np)
    x1.stop_gradient = x2.stop_gradient = False
    y1 = max_pool2d_nhwc(x1, k, s, p)
    y2 = F.max_pool2d(x2, k, s, p, data_format="NHWC")
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())  # a max is exact
    dy = paddle.to_tensor(np.random.default_rng(1).normal(size=y2.shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    assert_close(x1.grad, x2.grad, "grad", what="dx")


def test_bad_arguments():
    x = paddle.randn([1, 4, 4, 2])
    with pytest.raises(ValueError, match="'padding'"):
        max_pool2d_nhwc(x, 2, 2, 2)
    with pytest.raises(TypeError, match="'x' must be float32"):
        max_pool2d_nhwc(x.astype("float64"), 2)
    with pytest.raises(ValueError, match="'x' must be 4-D"):
        max_pool2d_nhwc(paddle.randn([4, 4, 2]), 2)
