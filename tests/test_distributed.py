"""Multi-process data parallel over 2 CPU processes (python -m
paddle.distributed.launch, Paddle's gloo backend): paddle.DataParallel of
stock against fused ResNet-18 from the same weights, and fused
Conv+SyncBatchNorm against stock Conv2D+BatchNorm2D over the global batch
(Paddle's own SyncBatchNorm has no CPU kernel)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import paddle_fastconv
from tolerances import assert_close

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(paddle_fastconv.__file__))


def _launch(out, script):
    env = dict(os.environ, PADDLE_FASTCONV_ROOT=ROOT, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(out / "log"), os.path.join(HERE, "distributed", script),
           str(out)]
    p = subprocess.run(cmd, env=env, cwd=str(out), capture_output=True, text=True,
                       timeout=600)
    logs = ""
    for name in sorted(os.listdir(out / "log")) if (out / "log").exists() else []:
        with open(out / "log" / name, errors="replace") as f:
            logs += "\n== %s\n%s" % (name, f.read()[-3000:])
    assert p.returncode == 0, (p.stdout[-2000:] + p.stderr[-2000:] + logs)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    _launch(out, "dp_train.py")
    return [dict(np.load(out / ("rank%d.npz" % r))) for r in range(2)]


@pytest.fixture(scope="module")
def sync_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sync_bn")
    _launch(out, "sync_bn_train.py")
    return [dict(np.load(out / ("sync_rank%d.npz" % r))) for r in range(2)]


def test_parameters_equal_across_ranks(ranks):
    """Gradients are all-reduced: both ranks apply the same update."""
    r0, r1 = ranks
    for tag in ("stock", "fused"):
        grads = [k for k in r0 if k.startswith(tag + "/grad/")]
        assert grads
        for k in grads:
            np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)
        params = [k for k in r0 if k.startswith(tag + "/state/") and "_mean" not in k
                  and "_variance" not in k]
        for k in params:
            np.testing.assert_array_equal(r0[k], r1[k], err_msg=k)


def test_ranks_saw_different_data(ranks):
    """The control: each rank's BN running statistics come from its own shard."""
    r0, r1 = ranks
    assert not np.array_equal(r0["fused/state/bn1._mean"], r1["fused/state/bn1._mean"])
    assert not np.array_equal(r0["fused/losses"], r1["fused/losses"])


@pytest.mark.parametrize("tag", ["stock", "fused"])
def test_data_parallel_matches_per_shard_emulation(ranks, tag):
    """Each rank's DataParallel run against rank 0's one-process emulation of
    it (distributed/dp_train.py): per-shard losses, the last step's averaged
    gradients, the parameters and each rank's own BN statistics. Stock is the
    control that the emulation is what DataParallel does; fused shows the
    fused ops' gradients reach the all-reduce and their statistics stay per
    rank. Same kernels, inputs and thread count: the results are bitwise
    equal with Paddle 3.3's gloo all-reduce; the tolerance is one of
    summation order only."""
    emulated = ranks[0]
    for r, got in enumerate(ranks):
        assert_close(got[tag + "/losses"], emulated["emulated_%s/rank%d/losses" % (tag, r)],
                     "out", what="rank %d losses" % r)
        grads = [k for k in got if k.startswith(tag + "/grad/")]
        assert len(grads) > 60  # every parameter of ResNet-18 has one
        for k in grads:
            assert_close(got[k], emulated["emulated_" + k], "grad", what="rank %d %s" % (r, k))
        states = [k for k in got if k.startswith(tag + "/state/")]
        for k in states:
            ref = emulated["emulated_%s/rank%d/state/%s" % (tag, r, k[len(tag) + 7:])]
            assert_close(got[k], ref, "out", what="rank %d %s" % (r, k))


def test_fused_data_parallel_first_step_matches_stock(ranks):
    """Before any update the two models are the same function: the first
    step's loss on each shard agrees (later steps are compared with the
    emulation above; see distributed/dp_train.py on why not with stock)."""
    for r in ranks:
        assert_close(r["fused/losses"][0], r["stock/losses"][0], "model", what="loss")


@pytest.mark.parametrize("case", ["nchw_relu", "nhwc_relu_res", "nchw_none_res",
                                  "fuse_sequential"])
def test_sync_bn_matches_batch_norm_over_the_global_batch(sync_ranks, case):
    import paddle

    from distributed import sync_bn_train as job
    name, fmt, act, with_res, via_fuse = [c for c in job.CASES if c[0] == case][0]
    paddle.seed(7)
    conv = paddle.nn.Conv2D(job.CIN, job.COUT, 3, padding=1, bias_attr=False,
                            data_format=fmt)
    bn = paddle.nn.BatchNorm2D(job.COUT, data_format=fmt)
    x, res, dy = job.global_batch(fmt, 11)
    xg = paddle.to_tensor(x)
    xg.stop_gradient = False
    rg = paddle.to_tensor(res)
    rg.stop_gradient = False
    for step in range(2):
        y = bn(conv(xg))
        if with_res:
            y = y + rg
        y = paddle.nn.functional.relu(y) if act == "relu" else y
    (y * paddle.to_tensor(dy)).sum().backward()
    per = job.PER_RANK
    for r, got in enumerate(sync_ranks):
        rows = slice(r * per, (r + 1) * per)
        assert_close(got[case + "/y"], y.numpy()[rows], "out", what="y rank %d" % r)
        assert_close(got[case + "/dx"], xg.grad.numpy()[rows], "grad", what="dx rank %d" % r)
        if with_res:
            assert_close(got[case + "/dres"], rg.grad.numpy()[rows], "grad",
                         what="dresidual rank %d" % r)
        # running statistics: the global batch's, the same on every rank
        assert_close(got[case + "/mean"], bn._mean, "stat", what="running_mean")
        assert_close(got[case + "/var"], bn._variance, "stat", what="running_var")
    # parameter gradients: each rank's share; they sum to the global gradient
    for key, ref in (("dW", conv.weight.grad), ("dgamma", bn.weight.grad),
                     ("dbeta", bn.bias.grad)):
        total = sync_ranks[0][case + "/" + key] + sync_ranks[1][case + "/" + key]
        assert_close(total, ref, "grad", what=key)


def test_sync_bn_layer_in_one_process_is_batch_norm():
    """Without a process group SyncBatchNorm is BatchNorm: the layer takes the
    ordinary fused path, with the stock layers' keys."""
    import paddle

    import paddle_fastconv as pf
    from helpers import randomize_bn, stock_forward
    paddle.seed(1)
    fused = pf.ConvBNReLU(4, 8, 3, padding=1, sync_bn=True)
    assert isinstance(fused.bn, paddle.nn.SyncBatchNorm)
    assert sorted(fused.state_dict()) == sorted(pf.ConvBNReLU(4, 8, 3).state_dict())
    randomize_bn(fused.bn, np.random.default_rng(0))
    conv, bn = paddle.nn.Conv2D(4, 8, 3, padding=1, bias_attr=False), paddle.nn.BatchNorm2D(8)
    conv.set_state_dict(fused.conv.state_dict())
    bn.set_state_dict(fused.bn.state_dict())
    x = paddle.randn([2, 4, 6, 6])
    assert_close(fused(x), stock_forward(conv, bn, "relu", x), "out")
    assert_close(fused.bn._mean, bn._mean, "stat")
    with pytest.raises(TypeError, match="'sync_bn'"):
        pf.ConvBNReLU(4, 8, 3, sync_bn="yes")
