"""Builds the CPU-emulated kernel library for the tests.

Every csrc/*/*.cu is compiled as host C++ with csrc/common/cuda_emulation.h
(g++ -O2 -std=c++17 -pthread), together with emu_shim.cc (extern "C"
launchers for ctypes) and emu_selftest.cu (checks of the emulator itself),
into one shared library.

Objects and libraries are cached in $FC_EMU_CACHE_DIR (default
<tmp>/paddle_fastconv_emu-<uid>), each under a hash of the compiler, the flags
and the text of every source and header it can read, so a test session builds
once and later sessions rebuild only what changed.  Nothing is written into
the repository.

Variants for the planted-bug tests are built from a copy of csrc/ with textual
patches applied, so the production sources carry no bug hooks.
"""
import concurrent.futures
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CSRC = os.path.join(ROOT, "csrc")
STUB_INCLUDE = os.path.join(HERE, "include")
TEST_SOURCES = [os.path.join(HERE, "emu_shim.cc"),
                os.path.join(HERE, "emu_selftest.cu")]
FLAGS = ["-std=c++17", "-O2", "-pthread", "-fPIC",
         # The kernels type-pun activations through AlignedVec.
         "-fno-strict-aliasing",
         "-Wall", "-Wextra", "-Werror",
         "-include", "common/cuda_emulation.h"]


class BuildError(RuntimeError):
    pass


def compiler():
    """Path of the C++ compiler ($CXX, else g++), or None when absent."""
    return shutil.which(os.environ.get("CXX") or "g++")


@functools.lru_cache(maxsize=None)
def _compiler_id(cxx):
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True)
    return cxx + "\n" + out.stdout


def cache_dir():
    d = os.environ.get("FC_EMU_CACHE_DIR") or os.path.join(
        tempfile.gettempdir(), "paddle_fastconv_emu-%d" % os.getuid())
    os.makedirs(d, exist_ok=True)
    return d


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _headers_digest(csrc):
    """Digest of every header the sources can include: a header change
    rebuilds everything, which is simple and cheap enough here."""
    h = hashlib.sha256()
    for root in (csrc, STUB_INCLUDE):  # names relative to root: copies match
        for p in sorted(glob.glob(os.path.join(root, "*.h")) +
                        glob.glob(os.path.join(root, "*", "*.h")) +
                        glob.glob(os.path.join(root, "*", "*.cuh"))):
            h.update(os.path.relpath(p, root).encode() + b"\0" + _read(p))
    return h.hexdigest()


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise BuildError("command failed (exit %d):\n%s\n%s%s" % (
            p.returncode, " ".join(cmd), p.stdout, p.stderr))


_locks = {}
_locks_guard = threading.Lock()


def _lock(key):
    """One lock per output: builds running in parallel threads (the planted
    bugs) compile a shared unit once."""
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _unique_tmp(path):
    return "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())


def _compile(cxx, src, csrc, flags, headers, out_dir):
    key = hashlib.sha256("\0".join(
        [_compiler_id(cxx), " ".join(flags), headers]).encode() + _read(src))
    obj = os.path.join(out_dir, key.hexdigest()[:24] + ".o")
    with _lock(obj):
        if not os.path.exists(obj):
            tmp = _unique_tmp(obj)
            _run([cxx, "-x", "c++"] + flags + ["-I" + csrc, "-I" + STUB_INCLUDE,
                                               "-c", src, "-o", tmp])
            os.replace(tmp, obj)  # atomic: other sessions may share the cache
    return obj


def _patch_tree(tree, patches):
    """Copies the sources and headers of csrc/ to `tree` and applies patches
    {relpath: [(old, new), ...]}; each `old` must occur exactly once, so a
    patch that no longer matches the sources fails loudly instead of planting
    nothing.  Only the files a build reads are copied (not, say, an editor's
    lock file beside them)."""
    for pattern in ("*.h", "*.cuh", "*.cu"):
        for src in glob.glob(os.path.join(CSRC, "*", pattern)):
            dst = os.path.join(tree, os.path.relpath(src, CSRC))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copyfile(src, dst)
    for rel, edits in patches.items():
        path = os.path.join(tree, rel)
        with open(path) as f:
            text = f.read()
        for old, new in edits:
            n = text.count(old)
            if n != 1:
                raise BuildError("patch for %s: %r occurs %d times (expected "
                                 "once); update the planted bug" % (rel, old, n))
            text = text.replace(old, new)
        with open(path, "w") as f:
            f.write(text)


def build_library(defines=(), patches=None, jobs=None):
    """Builds (or finds in the cache) the emulated library; returns its path.

    defines: macros for every translation unit, e.g. "FC_BN_TEST_GRID_CAP=3".
    patches: {path under csrc/: [(old, new), ...]} for a planted-bug variant.
    """
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler: set CXX or install g++")
    if not patches:
        return _build(cxx, CSRC, defines, jobs)
    # Objects are keyed by content, not path, so the copy's unpatched
    # translation units reuse the cached objects of the production build.
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        tree = os.path.join(tmp, "csrc")
        _patch_tree(tree, patches)
        return _build(cxx, tree, defines, jobs)


def _build(cxx, csrc, defines, jobs):
    headers = _headers_digest(csrc)
    # The defines are for the kernels; the test sources ignore them, so their
    # objects are shared between variants.
    units = [(s, FLAGS + ["-D" + d for d in defines])
             for s in sorted(glob.glob(os.path.join(csrc, "*", "*.cu")))]
    units += [(s, FLAGS) for s in TEST_SOURCES]
    obj_dir = os.path.join(cache_dir(), "obj")
    os.makedirs(obj_dir, exist_ok=True)
    jobs = jobs or int(os.environ.get("FC_EMU_JOBS", "0")) or min(
        4, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        objs = list(pool.map(
            lambda u: _compile(cxx, u[0], csrc, u[1], headers, obj_dir), units))
    key = hashlib.sha256("\0".join(objs).encode()).hexdigest()[:24]
    lib = os.path.join(cache_dir(), "lib", "fc_emu_%s.so" % key)
    with _lock(lib):
        if not os.path.exists(lib):
            os.makedirs(os.path.dirname(lib), exist_ok=True)
            tmp = _unique_tmp(lib)
            _run([cxx, "-shared", "-pthread"] + objs + ["-o", tmp])
            os.replace(tmp, lib)
    return lib
