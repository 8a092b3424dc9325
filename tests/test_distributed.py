"""Multi-process data parallel: paddle.DataParallel over 2 CPU processes
(python -m paddle.distributed.launch, Paddle's gloo backend), stock against
fused ResNet-18 from the same weights."""
import os
import subprocess
import sys

import numpy as np
import pytest

import paddle_fastconv
from tolerances import assert_close

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(paddle_fastconv.__file__))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    env = dict(os.environ, PADDLE_FASTCONV_ROOT=ROOT, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(out / "log"), os.path.join(HERE, "distributed", "dp_train.py"),
           str(out)]
    p = subprocess.run(cmd, env=env, cwd=str(out), capture_output=True, text=True,
                       timeout=600)
    logs = ""
    for name in sorted(os.listdir(out / "log")) if (out / "log").exists() else []:
        with open(out / "log" / name, errors="replace") as f:
            logs += "\n== %s\n%s" % (name, f.read()[-3000:])
    assert p.returncode == 0, (p.stdout[-2000:] + p.stderr[-2000:] + logs)
    return [dict(np.load(out / ("rank%d.npz" % r))) for r in range(2)]


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


def test_fused_data_parallel_matches_stock(ranks):
    for r in ranks:
        assert_close(r["fused/losses"], r["stock/losses"], "model", what="losses")
        for k in r:
            if k.startswith("stock/"):
                assert_close(r["fused/" + k[6:]], r[k], "model", what=k)
