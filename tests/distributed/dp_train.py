"""One rank of the 2-process DataParallel test (tests/test_distributed.py).

Launched with `python -m paddle.distributed.launch --nproc_per_node 2`: trains
a stock and a fused ResNet-18 (same initial weights) with paddle.DataParallel
on this rank's shard of the batch, then saves losses, parameters, gradients
of the last step and BN statistics to OUT/rank<k>.npz.

Rank 0 also emulates the data-parallel run of each model in its own process:
one copy per rank on that rank's shard, their gradients averaged by hand
before each step. The DataParallel run must match it: the same kernels on
the same inputs, with the gradients summed over the ranks and halved, which
is exact for two ranks. (Fused against stock, gradients can differ by several
percent after a step: a pre-activation within rounding of zero, e.g. -1.6e-6
in stock against +2e-7 in fused, flips one ReLU, whose gradient then moves
every filter below it; tests/test_fusion.py compares whole-model gradients
with a float64 oracle instead.)"""
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.vision.models import resnet18

if "PADDLE_FASTCONV_ROOT" in os.environ:  # the paddle_fastconv the test imported
    sys.path.insert(0, os.environ["PADDLE_FASTCONV_ROOT"])
import paddle_fastconv as pf  # noqa: E402

STEPS, PER_RANK, LR = 3, 4, 0.005


def models():
    """Stock and fused ResNet-18 with the same initial weights."""
    paddle.seed(0)
    stock = resnet18(num_classes=10)
    fused = resnet18(num_classes=10)
    fused.set_state_dict(stock.state_dict())
    pf.fuse(fused)
    return {"stock": stock, "fused": fused}


def shard(step, rank, world):
    # The global batch, the same on all ranks; each takes its shard. 64x64
    # leaves 2x2 maps in the last stage (BN over 16 values per rank); at 32x32
    # BN over 4 values makes the runs chaotic.
    rng = np.random.default_rng(100 + step)
    x = rng.normal(0, 1, [PER_RANK * world, 3, 64, 64]).astype("float32")
    y = rng.integers(0, 10, [PER_RANK * world, 1])
    rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return paddle.to_tensor(x[rows]), paddle.to_tensor(y[rows])


def loss_of(model, step, rank, world):
    x, y = shard(step, rank, world)
    return paddle.nn.functional.cross_entropy(model(x), y)


def data_parallel(tag, model, rank, world, result):
    dp = paddle.DataParallel(model)
    opt = paddle.optimizer.Momentum(LR, momentum=0.9, parameters=dp.parameters())
    losses = []
    for step in range(STEPS):
        loss = loss_of(dp, step, rank, world)
        loss.backward()
        if step == STEPS - 1:
            for k, p in model.named_parameters():
                if p.grad is not None:
                    result["%s/grad/%s" % (tag, k)] = p.grad.numpy()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    result[tag + "/losses"] = np.array(losses)
    for k, v in model.state_dict().items():
        result["%s/state/%s" % (tag, k)] = v.numpy()


def emulate(tag, world, result):
    """The data-parallel run of `tag` in one process: one model copy per
    rank, gradients averaged over the copies before each step."""
    copies = [models()[tag] for _ in range(world)]
    opts = [paddle.optimizer.Momentum(LR, momentum=0.9, parameters=m.parameters())
            for m in copies]
    losses = [[] for _ in range(world)]
    for step in range(STEPS):
        for r, m in enumerate(copies):
            loss = loss_of(m, step, r, world)
            loss.backward()
            losses[r].append(float(loss))
        params = [dict(m.named_parameters()) for m in copies]
        for k, p in params[0].items():
            if p.grad is None:
                continue
            total = params[0][k].grad
            for r in range(1, world):
                total = total + params[r][k].grad
            mean = total * (1.0 / world)
            for r in range(world):
                params[r][k].grad.set_value(mean)
            if step == STEPS - 1:
                result["emulated_%s/grad/%s" % (tag, k)] = mean.numpy()
        for opt in opts:
            opt.step()
            opt.clear_grad()
    for r, m in enumerate(copies):
        result["emulated_%s/rank%d/losses" % (tag, r)] = np.array(losses[r])
        for k, v in m.state_dict().items():
            result["emulated_%s/rank%d/state/%s" % (tag, r, k)] = v.numpy()


def main(out_dir):
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    pf.set_num_threads(1)
    result = {}
    for tag, model in models().items():
        data_parallel(tag, model, rank, world, result)
    if rank == 0:
        for tag in ("stock", "fused"):
            emulate(tag, world, result)
    np.savez(os.path.join(out_dir, "rank%d.npz" % rank), **result)


if __name__ == "__main__":
    main(sys.argv[1])
