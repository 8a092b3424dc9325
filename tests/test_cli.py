"""The command line: info, bench (a tiny run) and argument errors."""
import json
import subprocess
import sys

import pytest

from conftest import has_gpu


def _run(args, cwd, env_threads="1"):
    import os

    import paddle_fastconv
    # The subprocess imports the same paddle_fastconv as this process.
    root = os.path.dirname(os.path.dirname(paddle_fastconv.__file__))
    env = dict(os.environ, OMP_NUM_THREADS=env_threads,
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    return subprocess.run([sys.executable] + safe + ["-m", "paddle_fastconv"] + args,
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_info(tmp_path):
    p = _run(["info"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "cpu_engine" in p.stdout and "library" in p.stdout
    import paddle_fastconv
    assert "winograd_f4x3            %s\n" % paddle_fastconv.winograd_status() in p.stdout
    assert "conv1x1_kernels          %s\n" % paddle_fastconv.conv1x1_status() in p.stdout


def test_bench_tiny_layer_run_writes_json(tmp_path):
    out = tmp_path / "b.json"
    p = _run(["bench", "--layers", "conv3x3_64x64_56", "--model", "none", "--batch", "1",
              "--repeat", "1", "--mode", "eval", "--threads", "1", "--json", str(out)],
             tmp_path)
    assert p.returncode == 0, p.stderr
    assert "| conv3x3_64x64_56 | eval |" in p.stdout
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["max_rel_err"] < 1e-4 and rows[0]["threads"] == 1


def test_bench_png_chart(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "b.png"
    p = _run(["bench", "--layers", "conv1x1_64x256_56", "--model", "none", "--batch", "1",
              "--repeat", "1", "--mode", "eval", "--threads", "1", "--png", str(out)],
             tmp_path)
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,msg", [
    (["bench", "--layers", "nope", "--model", "none"], "unknown layer"),
    (["bench", "--threads", "0"], "must be >= 1"),
    (["bench", "--layers", "none", "--model", "googlenet", "--image-size", "64"],
     "googlenet takes 224x224 images only"),
    (["bench", "--model", "vgg"], "invalid choice"),
    pytest.param(["bench", "--device", "gpu", "--model", "none"], "--device gpu needs",
                 marks=pytest.mark.skipif(has_gpu(), reason="a GPU is present")),
])
def test_bench_argument_errors(tmp_path, args, msg):
    p = _run(args, tmp_path)
    assert p.returncode != 0 and msg in (p.stderr + p.stdout)


def test_bench_small_model_run_reports_the_onednn_floor(tmp_path):
    """The model table (ResNet-50 on small images to stay fast): stock,
    fused, paddle.inference and the oneDNN conv floor, eval and train."""
    out = tmp_path / "m.json"
    p = _run(["bench", "--layers", "none", "--model", "resnet50", "--batch", "2",
              "--image-size", "64", "--repeat", "1", "--threads", "2", "--json", str(out)],
             tmp_path)
    assert p.returncode == 0, p.stderr
    assert "oneDNN conv floor img/s (max speedup)" in p.stdout
    models = json.loads(out.read_text())["models"]
    assert [(r["model"], r["mode"]) for r in models] == [("resnet50", "eval"),
                                                          ("resnet50", "train")]
    for r in models:
        for k in ("stock", "fused", "fused_channels_last", "onednn_conv_floor"):
            assert r[k] > 0, (r["mode"], k)
    assert models[0]["paddle_inference"] > 0
