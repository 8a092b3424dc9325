"""Large tensors.

Every index in this package's kernels is 64-bit (the CPU kernels index with
int64_t; the CUDA kernels compute global indices as int64_t before
multiplying, see csrc/conv_bn_act/*.cu). The test below runs one fused layer
over tensors whose byte offsets exceed 2^31 and checks values at the far end,
where a 32-bit byte offset would have wrapped: 2^29 + 2^20 elements per
tensor (2 GiB each, about 7 GiB at peak), the largest size CI affords.

Past 2^31 *elements*, oneDNN's CPU convolution kernels crash (as does stock
Paddle's Conv2D on the same input: measured on a [1, 306933176, 7, 1] NHWC
input, 8 GiB), so the CPU path refuses such tensors with a clear error,
tested below without allocating them.
"""
import numpy as np
import paddle
import pytest

import paddle_fastconv as pf

ELEMENTS = 2 ** 29 + 2 ** 20


def _probe_positions(n):
    """Positions at the start, around 2^29 elements (2^31 bytes) and at the end."""
    picks = {0, 1, n - 1, n - 2}
    edge = 2 ** 29
    picks.update(p for p in (edge - 1, edge, edge + 1) if p < n)
    return np.array(sorted(picks))


@pytest.mark.parametrize("fmt", ["NHWC", "NCHW"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fused_layer_past_2_31_byte_offsets(mode, fmt):
    # One channel in and out, 1x1: the fused layer's whole path (convolution,
    # statistics, normalize, ReLU) over ELEMENTS values, with an exact float64
    # reference at any position. NCHW eval runs the GEMM in per-thread pieces
    # with the epilogue on each, NHWC oneDNN's convolution with post-ops.
    n, w = 1, 7
    h = ELEMENTS // (w * 13) * 13
    total = h * w
    assert total * 4 > 2 ** 31
    layer = pf.ConvBNReLU(1, 1, 1, data_format=fmt)
    layer.conv.weight.set_value(np.full([1, 1, 1, 1], 0.5, "float32"))
    layer.bn.weight.set_value(np.array([2.0], "float32"))
    layer.bn.bias.set_value(np.array([0.25], "float32"))
    layer.bn._mean.set_value(np.array([0.1], "float32"))
    layer.bn._variance.set_value(np.array([4.0], "float32"))
    # x[i] = (i mod 13) - 6: both signs, exact statistics in closed form,
    # built by tiling (total is a multiple of 13).
    pattern = paddle.to_tensor(np.arange(13, dtype="float32") - 6)
    shape = [n, h, w, 1] if fmt == "NHWC" else [n, 1, h, w]
    x = paddle.tile(pattern, [total // 13]).reshape(shape)
    if mode == "eval":
        layer.eval()
        mean, var = 0.1, 4.0
    else:
        z = 0.5 * (np.arange(13) - 6.0)  # every residue equally often
        mean, var = z.mean(), z.var()
        unbiased = var * total / (total - 1)
    with paddle.no_grad():
        y = layer(x)
    assert list(y.shape) == shape
    pos = _probe_positions(total)
    got = y.reshape([-1])[paddle.to_tensor(pos)].numpy().astype(np.float64)
    xv = (pos % 13 - 6).astype(np.float64)
    expected = np.maximum(2.0 * (0.5 * xv - mean) / np.sqrt(var + 1e-5) + 0.25, 0.0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    if mode == "train":
        np.testing.assert_allclose(layer.bn._mean.numpy(), [0.9 * 0.1 + 0.1 * mean],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.bn._variance.numpy(),
                                   [0.9 * 4.0 + 0.1 * unbiased], rtol=1e-5)


@pytest.mark.parametrize("shape", [[1, 306783379, 7, 1], [3, 1024, 1024, 683]])
def test_cpu_refuses_2_31_elements_clearly(shape):
    layer = pf.ConvBNReLU(shape[3], 1, 1, data_format="NHWC")
    x = paddle.empty(shape)  # never touched: no memory is committed
    with pytest.raises(ValueError, match="fewer than 2\\^31 elements"):
        layer(x)


def test_cpp_check_refuses_2_31_elements_without_python_validation():
    """The op's own check (static graphs reach it without ops.py)."""
    from paddle_fastconv._loader import OPS
    x, w = paddle.empty([1, 306783379, 7, 1]), paddle.ones([1, 1, 1, 1])
    p = [paddle.ones([1]), paddle.zeros([1]), paddle.zeros([1]), paddle.ones([1])]
    with pytest.raises(Exception, match="fewer than 2\\^31 elements"):
        OPS["fastconv_conv_bn_act"](x, w, paddle.zeros([1, 1]), *p, paddle.zeros([1]),
                                    [1, 1], [0, 0, 0, 0], [1, 1], 1, "NHWC", "relu",
                                    False, 0.9, 1e-5, True)
