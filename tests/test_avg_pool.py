"""The NHWC-to-NCHW average pool (fuse(..., channels_last=True) uses it for
GoogLeNet's head pools) against paddle.nn.functional.avg_pool2d on the
transposed input: outputs and input gradients, padding with exclusive and
inclusive divisors, odd sizes, the global average."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_fastconv.ops import avg_pool2d_nhwc_to_nchw
from tolerances import assert_close


@pytest.mark.parametrize("exclusive", [True, False], ids=["exclusive", "inclusive"])
@pytest.mark.parametrize("shape,k,s,p", [
    ([2, 14, 14, 24], 5, 3, 0),        # GoogLeNet's auxiliary heads
    ([3, 7, 7, 40], 7, 7, 0),          # its global average (AdaptiveAvgPool2D(1))
    ([1, 9, 7, 5], 3, 2, 1),
    ([2, 11, 6, 17], (3, 2), (1, 2), (1, 0)),
    ([1, 5, 5, 1], 4, 1, 2),
])
def test_matches_stock_forward_and_backward(shape, k, s, p, exclusive):
    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    x1 = paddle.to_tensor(x_np)
    x2 = paddle.to_tensor(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    x1.stop_gradient = x2.stop_gradient = False
    y1 = avg_pool2d_nhwc_to_nchw(x1, k, s, p, exclusive=exclusive)
    y2 = F.avg_pool2d(x2, k, s, p, exclusive=exclusive)
    assert y1.shape == y2.shape
    assert_close(y1, y2, "out", what="avg pool out")
    dy = paddle.to_tensor(np.random.default_rng(1).normal(size=y2.shape).astype("float32"))
    (y1 * dy).sum().backward()
    (y2 * dy).sum().backward()
    assert_close(x1.grad, x2.grad.transpose([0, 2, 3, 1]), "grad", what="avg pool dx")


def test_bad_arguments():
    x = paddle.randn([1, 4, 4, 2])
    with pytest.raises(ValueError, match="'padding'"):
        avg_pool2d_nhwc_to_nchw(x, 2, 2, 2)
    with pytest.raises(TypeError, match="'x' must be float32"):
        avg_pool2d_nhwc_to_nchw(x.astype("float64"), 2)
    with pytest.raises(ValueError, match="'x' must be 4-D"):
        avg_pool2d_nhwc_to_nchw(paddle.randn([4, 4, 2]), 2)
    with pytest.raises(TypeError, match="'exclusive'"):
        avg_pool2d_nhwc_to_nchw(x, 2, exclusive=1)
    with pytest.raises(ValueError, match="gives no output"):
        avg_pool2d_nhwc_to_nchw(x, 5, 1, 0)
