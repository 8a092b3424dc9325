"""One rank of the 2-process SyncBatchNorm test (tests/test_distributed.py).

Each case runs a fused Conv+SyncBatchNorm(+residual)+act layer on this rank's
shard of a global batch and saves the output, every gradient and the running
statistics to OUT/sync_rank<k>.npz; the test compares them with stock
Conv2D+BatchNorm2D over the whole global batch in one process."""
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist

if "PADDLE_FASTCONV_ROOT" in os.environ:  # the paddle_fastconv the test imported
    sys.path.insert(0, os.environ["PADDLE_FASTCONV_ROOT"])
import paddle_fastconv as pf  # noqa: E402

# (name, data_format, act, residual, via_fuse)
CASES = [("nchw_relu", "NCHW", "relu", False, False),
         ("nhwc_relu_res", "NHWC", "relu", True, False),
         ("nchw_none_res", "NCHW", "none", True, False),
         ("fuse_sequential", "NCHW", "relu", False, True)]
PER_RANK, CIN, COUT, HW = 3, 4, 8, 7


def global_batch(fmt, seed):
    rng = np.random.default_rng(seed)
    n = PER_RANK * 2
    shape = [n, CIN, HW, HW] if fmt == "NCHW" else [n, HW, HW, CIN]
    oshape = [n, COUT, HW, HW] if fmt == "NCHW" else [n, HW, HW, COUT]
    return (rng.normal(0.5, 1, shape).astype("float32"),
            rng.normal(0, 1, oshape).astype("float32"),
            rng.normal(0, 1, oshape).astype("float32"))


def make_layer(fmt, act, via_fuse):
    paddle.seed(7)
    if via_fuse:
        seq = paddle.nn.Sequential(paddle.nn.Conv2D(CIN, COUT, 3, padding=1, bias_attr=False),
                                   paddle.nn.SyncBatchNorm(COUT), paddle.nn.ReLU())
        pf.fuse(seq)
        return seq, seq[0].original_layer[0], seq[1].original_layer[0]
    layer = pf.ConvBNReLU(CIN, COUT, 3, padding=1, act=act, data_format=fmt, sync_bn=True)
    return layer, layer.conv, layer.bn


def main(out_dir):
    dist.init_parallel_env()
    rank = dist.get_rank()
    pf.set_num_threads(1)
    result = {}
    for name, fmt, act, with_res, via_fuse in CASES:
        layer, conv, bn = make_layer(fmt, act, via_fuse)
        x, res, dy = global_batch(fmt, 11)
        shard = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        xs = paddle.to_tensor(x[shard])
        xs.stop_gradient = False
        rs = None
        if with_res:
            rs = paddle.to_tensor(res[shard])
            rs.stop_gradient = False
        for step in range(2):  # the second step sees updated running statistics
            y = layer(xs) if via_fuse else layer(xs, rs)
        (y * paddle.to_tensor(dy[shard])).sum().backward()
        out = {"y": y, "dx": xs.grad, "dW": conv.weight.grad, "dgamma": bn.weight.grad,
               "dbeta": bn.bias.grad, "mean": bn._mean, "var": bn._variance}
        if with_res:
            out["dres"] = rs.grad
        for k, v in out.items():
            result["%s/%s" % (name, k)] = v.numpy()
    np.savez(os.path.join(out_dir, "sync_rank%d.npz" % rank), **result)


if __name__ == "__main__":
    main(sys.argv[1])
