"""Mixed precision: under paddle.amp.auto_cast the fused layer follows stock.

GPU (fp16/bf16, O1/O2, GradScaler) cases need a CUDA device and skip without
one. On CPU Paddle does not autocast (the level stays O0), so the fused layer
runs fp32 there, as stock does."""
import numpy as np
import paddle
import pytest

from helpers import input_shape, leaf, make_pair, stock_forward
from tolerances import assert_close


def test_cpu_auto_cast_runs_fp32_like_stock():
    fused, conv, bn = make_pair(4, 8, 3, 1, 1)
    x = paddle.randn([2, 4, 8, 8])
    with paddle.amp.auto_cast(level="O1", dtype="bfloat16"):
        a, b = fused(x), stock_forward(conv, bn, "relu", x)
    assert a.dtype == b.dtype == paddle.float32
    assert_close(a, b, "out")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("fmt", ["NCHW", "NHWC"])
def test_gpu_auto_cast_o1_matches_stock(dtype, fmt):
    paddle.set_device("gpu")
    try:
        fused, conv, bn = make_pair(8, 16, 3, 1, 1, data_format=fmt)
        x_np = np.random.default_rng(0).normal(size=input_shape(2, 8, (9, 9), fmt))
        x1, x2 = leaf(x_np.astype("float32")), leaf(x_np.astype("float32"))
        with paddle.amp.auto_cast(level="O1", dtype=dtype):
            y1, y2 = fused(x1), stock_forward(conv, bn, "relu", x2)
        assert y1.dtype == y2.dtype
        assert_close(y1, y2, "out", dtype=dtype, what="y")
        assert fused.bn._mean.dtype == paddle.float32
        assert_close(fused.bn._mean, bn._mean, "stat", dtype=dtype, what="running_mean")
        y1.astype("float32").sum().backward()
        y2.astype("float32").sum().backward()
        assert_close(x1.grad, x2.grad, "grad", dtype=dtype, what="dx")
        assert_close(fused.conv.weight.grad, conv.weight.grad, "grad", dtype=dtype, what="dW")
    finally:
        paddle.set_device("cpu")


@pytest.mark.gpu
def test_gpu_auto_cast_o2_with_grad_scaler():
    paddle.set_device("gpu")
    try:
        fused, conv, bn = make_pair(8, 16, 3, 1, 1)
        stock = paddle.nn.Sequential(conv, bn, paddle.nn.ReLU())
        models, opts = [], []
        for m in (fused, stock):
            opt = paddle.optimizer.Momentum(0.01, parameters=m.parameters(),
                                            multi_precision=True)
            m, opt = paddle.amp.decorate(m, opt, level="O2", dtype="float16")
            models.append(m), opts.append(opt)
        scalers = [paddle.amp.GradScaler(init_loss_scaling=1024) for _ in models]
        for step in range(3):
            x = paddle.randn([4, 8, 9, 9])
            losses = []
            for m, opt, sc in zip(models, opts, scalers):
                with paddle.amp.auto_cast(level="O2", dtype="float16"):
                    loss = (m(x).astype("float32") ** 2).mean()
                sc.scale(loss).backward()
                sc.step(opt)
                sc.update()
                opt.clear_grad()
                losses.append(loss)
            assert_close(losses[0], losses[1], "out", dtype="float16", what="loss %d" % step)
        assert fused.bn._mean.dtype == paddle.float32
    finally:
        paddle.set_device("cpu")
