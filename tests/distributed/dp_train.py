"""One rank of the 2-process DataParallel test (tests/test_distributed.py).

Launched with `python -m paddle.distributed.launch --nproc_per_node 2`: trains
a stock and a fused ResNet-18 (same initial weights) with paddle.DataParallel
on this rank's shard of the batch, then saves losses, parameters, gradients
of the last step and BN statistics to OUT/rank<k>.npz."""
import os
import sys

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.vision.models import resnet18

if "PADDLE_FASTCONV_ROOT" in os.environ:  # the paddle_fastconv the test imported
    sys.path.insert(0, os.environ["PADDLE_FASTCONV_ROOT"])
import paddle_fastconv as pf  # noqa: E402

STEPS, PER_RANK = 3, 4


def main(out_dir):
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    pf.set_num_threads(1)
    paddle.seed(0)
    stock = resnet18(num_classes=10)
    fused = resnet18(num_classes=10)
    fused.set_state_dict(stock.state_dict())
    pf.fuse(fused)
    result = {}
    for tag, model in (("stock", stock), ("fused", fused)):
        dp = paddle.DataParallel(model)
        opt = paddle.optimizer.Momentum(0.005, momentum=0.9, parameters=dp.parameters())
        losses = []
        for step in range(STEPS):
            # The global batch, the same on all ranks; each takes its shard.
            # 64x64 leaves 2x2 maps in the last stage (BN over 16 values per
            # rank); at 32x32 BN over 4 values makes both runs chaotic.
            rng = np.random.default_rng(100 + step)
            x = rng.normal(0, 1, [PER_RANK * world, 3, 64, 64]).astype("float32")
            y = rng.integers(0, 10, [PER_RANK * world, 1])
            shard = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
            loss = paddle.nn.functional.cross_entropy(dp(paddle.to_tensor(x[shard])),
                                                      paddle.to_tensor(y[shard]))
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
    np.savez(os.path.join(out_dir, "rank%d.npz" % rank), **result)


if __name__ == "__main__":
    main(sys.argv[1])
