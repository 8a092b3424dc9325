"""The max pool kernels (NHWC: fuse(..., channels_last=True); NCHW:
GoogLeNet's pools) against paddle.nn.functional.max_pool2d: outputs and input
gradients, including ties (plateaus) and NaN."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from paddle_fastconv.ops import max_pool2d, max_pool2d_nhwc
from tolerances import assert_close


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("ties", [False, True], ids=["random", "plateaus"])
@pytest.mark.parametrize("shape,k,s,p", [
    ([2, 112, 112, 64], 3, 2, 1),   # the ResNet stem
    ([2, 27, 27, 16], 3, 2, 0),     # GoogLeNet's pools
    ([1, 9, 7, 5], 3, 2, 1),
    ([3, 8, 8, 3], 2, 2, 0),
    ([2, 11, 6, 17], (3, 2), (1, 2), (1, 0)),
    ([1, 5, 5, 1], 5, 1, 2),
    ([2, 9, 9, 37], 3, 2, 0),       # vector-width channel blocks and a tail
    ([1, 13, 29, 3], (2, 4), 3, 1),  # NCHW: stride-3 phases, 3 + 1 kernel columns
    ([2, 20, 40, 5], 3, (2, 1), 1),  # NCHW: unsplit rows, 40 outputs (padded to 48)
])
def test_matches_stock_forward_and_backward(shape, k, s, p, ties, fmt):
    x_np = np.random.default_rng(0).normal(size=shape).astype("float32")
    if ties:  # ReLU-like zeros and a saturated band: windows with equal maxima
        x_np = np.maximum(x_np, 0)
        x_np[:, : shape[1] // 2] = np.minimum(x_np[:, : shape[1] // 2], 0.5)
    if fmt == "NCHW":
        x_np = np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))
    x1, x2 = paddle.to_tensor(x_np), paddle.to_tensor(x_np)
    x1.stop_gradient = x2.stop_gradient = False
    y1 = max_pool2d(x1, k, s, p, data_format=fmt)
    y2 = F.max_pool2d(x2, k, s, p, data_format=fmt)
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


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("channels", [2, 18], ids=["tail", "block+tail"])
def test_nan_propagates(fmt, channels):
    """Every window holding a NaN gives NaN (stock Paddle's CPU pool is not
    consistent here: a NaN can even turn a window's maximum into 0)."""
    x_np = np.random.default_rng(2).normal(size=[1, 6, 6, channels]).astype("float32")
    x_np[0, 2, 3, :] = np.nan
    y = max_pool2d(paddle.to_tensor(x_np if fmt == "NHWC" else x_np.transpose(0, 3, 1, 2)),
                   3, 2, 1, data_format=fmt).numpy()
    if fmt == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    # output (i, j) sees input rows 2i-1..2i+1 and columns 2j-1..2j+1
    expected = np.zeros_like(y, dtype=bool)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            expected[0, i, j, :] = (2 * i - 1 <= 2 <= 2 * i + 1) and (2 * j - 1 <= 3 <= 2 * j + 1)
    np.testing.assert_array_equal(np.isnan(y), expected)
