"""examples/train.py runs end to end: an image folder, and scikit-learn's
digits when scikit-learn is installed; both write the curves PNG."""
import os
import subprocess
import sys

import numpy as np
import pytest

import paddle_fastconv

ROOT = os.path.dirname(os.path.dirname(paddle_fastconv.__file__))
SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "examples", "train.py")


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def _image_folder(root, per_class, seed):
    """Two classes of noisy 12x12 images (dark and light), one subfolder each."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for label, level in (("dark", 60), ("light", 190)):
        os.makedirs(root / label)
        for i in range(per_class):
            img = np.clip(rng.normal(level, 30, [12, 12, 3]), 0, 255).astype("uint8")
            Image.fromarray(img).save(root / label / ("%d.png" % i))


def test_train_on_an_image_folder(tmp_path):
    pytest.importorskip("matplotlib")
    _image_folder(tmp_path / "data", per_class=8, seed=0)
    out = tmp_path / "curves.png"
    p = _run(["--data", str(tmp_path / "data"), "--epochs", "2", "--batch", "4",
              "--image-size", "16", "--threads", "1", "--out", str(out)], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 classes" in p.stdout and "| 2 |" in p.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_on_digits(tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    out = tmp_path / "curves.png"
    p = _run(["--epochs", "1", "--image-size", "16", "--threads", "1", "--out", str(out)],
             tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "scikit-learn digits, 1437 train / 360 test images, 10 classes" in p.stdout
    assert out.exists()


def test_bad_arguments(tmp_path):
    p = _run(["--data", str(tmp_path / "missing")], tmp_path)
    assert p.returncode != 0 and "--data must be" in p.stderr


def test_train_googlenet_on_an_image_folder(tmp_path):
    """GoogLeNet (main + auxiliary losses) at its 224x224 input, tiny run."""
    pytest.importorskip("matplotlib")
    _image_folder(tmp_path / "data", per_class=4, seed=1)
    out = tmp_path / "curves.png"
    p = _run(["--data", str(tmp_path / "data"), "--model", "googlenet", "--epochs", "1",
              "--batch", "4", "--image-size", "224", "--threads", "2", "--out", str(out)],
             tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "model googlenet" in p.stdout and "| 1 |" in p.stdout
    assert out.exists()
    bad = _run(["--model", "googlenet", "--image-size", "64"], tmp_path)
    assert bad.returncode != 0 and "needs --image-size 224" in bad.stderr
