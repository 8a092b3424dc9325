"""Builds the package in its host test mode (PADDLE_FASTCONV_WITH_CUDA=host,
see tools/build_config.py): the CUDA engine runs CPU tensors, its kernels
compiled as host C++ under csrc/common/cuda_emulation.h.  That executes the
engine's Paddle-side code (the conv2d / conv2d_grad / pool2d calls, channel
slices, what is kept for backward, the parameter gradients) with the
production kernels, without a GPU.

The build is a copy of the sources in the emulation cache
($FC_EMU_CACHE_DIR, see build.py), keyed by a hash of everything the
compiled library depends on, so a session rebuilds only after such a change;
the Python package is refreshed from the repository on every use.  Nothing
is written into the repository."""
import glob
import hashlib
import os
import shutil
import subprocess
import sys

from .build import ROOT, BuildError, _compiler_id, cache_dir, compiler

# What the compiled library depends on, relative to the repository root.
_TREES = ("csrc", "tools", os.path.join("tests", "cuda_emulation", "include"))
_PACKAGE = "paddle_fastconv"
_FILES = ("setup.py", "pyproject.toml")
_IGNORE = shutil.ignore_patterns("*.so", "_build_info.py", "cuda_build_report.txt",
                                 "__pycache__", "*.pyc")
_SUFFIXES = (".h", ".cuh", ".cu", ".cc", ".py")


def _inputs():
    paths = [os.path.join(ROOT, f) for f in _FILES]
    for tree in _TREES:
        for p in glob.glob(os.path.join(ROOT, tree, "**", "*"), recursive=True):
            if p.endswith(_SUFFIXES) and "__pycache__" not in p and \
                    not p.endswith("_build_info.py"):
                paths.append(p)
    return sorted(paths)


def _key():
    import paddle
    h = hashlib.sha256()
    h.update(("%s\0%s\0%s\0" % (sys.executable, paddle.__version__,
                                _compiler_id(compiler()))).encode())
    for p in _inputs():
        h.update(os.path.relpath(p, ROOT).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:20]


def build_host_package():
    """Returns the root of a built host-mode copy of the package (a
    directory holding paddle_fastconv/ with its compiled library)."""
    if compiler() is None:
        raise BuildError("no C++ compiler: set CXX or install g++")
    dest = os.path.join(cache_dir(), "host-engine-" + _key())
    if os.path.exists(os.path.join(dest, ".built")):
        _sync_package(dest)
        return dest
    tmp = "%s.%d.tmp" % (dest, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for tree in _TREES + (_PACKAGE,):
        shutil.copytree(os.path.join(ROOT, tree), os.path.join(tmp, tree), ignore=_IGNORE)
    for f in _FILES:
        shutil.copyfile(os.path.join(ROOT, f), os.path.join(tmp, f))
    env = dict(os.environ, PADDLE_FASTCONV_WITH_CUDA="host", PADDLE_FASTCONV_WERROR="1")
    p = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError("host-mode build failed (exit %d):\n%s" % (
            p.returncode, (p.stdout + p.stderr)[-6000:]))
    open(os.path.join(tmp, ".built"), "w").close()
    try:
        os.replace(tmp, dest)
    except OSError:  # another session finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
        _sync_package(dest)
    _prune(keep=dest)
    return dest


def _prune(keep, newest=2):
    """Drops all but the `newest` finished host builds (about 100 MB each)."""
    done = [d for d in glob.glob(os.path.join(cache_dir(), "host-engine-*"))
            if os.path.exists(os.path.join(d, ".built"))]
    done.sort(key=lambda d: os.path.getmtime(os.path.join(d, ".built")), reverse=True)
    for d in done[newest:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def _sync_package(dest):
    """The repository's Python sources over the cached copy's (the compiled
    library and its build info stay)."""
    src_root = os.path.join(ROOT, _PACKAGE)
    for src in glob.glob(os.path.join(src_root, "**", "*.py"), recursive=True):
        if src.endswith("_build_info.py") or "__pycache__" in src:
            continue
        dst = os.path.join(dest, _PACKAGE, os.path.relpath(src, src_root))
        with open(src, "rb") as f:
            text = f.read()
        if os.path.exists(dst):
            with open(dst, "rb") as f:
                if f.read() == text:
                    continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with open(dst, "wb") as f:
            f.write(text)
