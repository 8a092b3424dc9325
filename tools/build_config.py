"""Build configuration of paddle_fastconv: finds Paddle, oneDNN and CUDA,
chooses the engines, compiles the .cu files with nvcc, and writes the build
summary that `python -m paddle_fastconv.info` prints."""
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension
from setuptools.command.build_ext import build_ext

VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
DEFAULT_ARCHS = "75;80;86;89;90"
ONEDNN_DEVEL_HINT = "pip install --no-deps onednn-devel==2025.0.0"


def _fail(msg):
    raise SystemExit("paddle_fastconv build: " + msg)


def _import_paddle():
    import zlib  # noqa: F401  (paddlepaddle-gpu 2.6 exports an old zlib)
    try:
        import paddle
    except ImportError as e:
        _fail("Paddle is not importable (%s). Install paddlepaddle or "
              "paddlepaddle-gpu first, then build with "
              "`pip install --no-build-isolation .`" % e)
    return paddle


class Config:
    pass


def _find_onednn(paddle_dir):
    """(include_dir, lib_path) or (None, None) when Paddle ships no oneDNN."""
    libs = glob.glob(os.path.join(paddle_dir, "libs", "libdnnl.so*"))
    if not libs:
        return None, None
    lib = sorted(libs, key=len)[0]
    candidates = [os.environ.get("PADDLE_FASTCONV_ONEDNN_INCLUDE", ""),
                  os.path.join(sys.prefix, "include"),
                  os.path.join(sysconfig.get_paths()["data"], "include"),
                  os.path.join(paddle_dir, "include", "third_party", "install",
                               "onednn", "include")]
    for inc in candidates:
        if inc and os.path.isfile(os.path.join(inc, "oneapi", "dnnl", "dnnl.hpp")):
            return inc, lib
    _fail("Paddle ships oneDNN (%s) but the complete oneDNN headers "
          "(oneapi/dnnl/dnnl.hpp) were not found; install them with `%s` or "
          "set PADDLE_FASTCONV_ONEDNN_INCLUDE." % (lib, ONEDNN_DEVEL_HINT))


def _prepare_onednn_headers(inc, out_dir):
    """Copies oneapi/dnnl/ and pins dnnl_config.h to Paddle's runtime.

    onednn-devel's config names a SYCL/TBB runtime; Paddle's library is built
    for OpenMP on the CPU with no GPU runtime."""
    dst = os.path.join(out_dir, "oneapi", "dnnl")
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    shutil.copytree(os.path.join(inc, "oneapi", "dnnl"), dst)
    cfg = os.path.join(dst, "dnnl_config.h")
    text = open(cfg).read()
    for name, value in [("DNNL_CPU_THREADING_RUNTIME", "DNNL_RUNTIME_OMP"),
                        ("DNNL_CPU_RUNTIME", "DNNL_RUNTIME_OMP"),
                        ("DNNL_GPU_RUNTIME", "DNNL_RUNTIME_NONE")]:
        text = re.sub(r"#define %s DNNL_RUNTIME_\w+" % name,
                      "#define %s %s" % (name, value), text)
    open(cfg, "w").write(text)
    ver = open(os.path.join(dst, "dnnl_version.h")).read()
    nums = [re.search(r"#define DNNL_VERSION_%s (\d+)" % k, ver).group(1)
            for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(nums)


def _find_cuda(paddle):
    mode = os.environ.get("PADDLE_FASTCONV_WITH_CUDA", "auto").lower()
    if mode in ("0", "off", "false", "no"):
        return None, "disabled by PADDLE_FASTCONV_WITH_CUDA=0"
    if mode == "host":
        return {"host": True}, None
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = os.path.join(cuda_home, "bin", "nvcc") if cuda_home else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        if mode in ("1", "on", "true", "yes"):
            _fail("PADDLE_FASTCONV_WITH_CUDA=1 but nvcc was not found "
                  "(set CUDA_HOME or put nvcc on PATH)")
        return None, "nvcc not found"
    if mode == "auto" and not paddle.is_compiled_with_cuda():
        return None, "Paddle is a CPU build (set PADDLE_FASTCONV_WITH_CUDA=1 to compile the CUDA engine anyway)"
    if not cuda_home:
        cuda_home = "/usr/local/cuda" if os.path.isdir("/usr/local/cuda/include") \
            else os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    return {"nvcc": nvcc, "home": cuda_home}, None


def _cuda_archs(nvcc):
    want = os.environ.get("PADDLE_FASTCONV_CUDA_ARCHS", DEFAULT_ARCHS)
    want = sorted({int(a.replace(".", "").replace("sm_", "")) for a in
                   re.split(r"[;,\s]+", want) if a.strip()})
    try:
        out = subprocess.check_output([nvcc, "--list-gpu-code"], text=True)
        have = {int(m) for m in re.findall(r"sm_(\d+)", out)}
    except (OSError, subprocess.CalledProcessError):
        have = set(want)
    archs = [a for a in want if a in have]
    if not archs:
        _fail("none of the CUDA archs %s is supported by %s (it supports %s)"
              % (want, nvcc, sorted(have)))
    return archs, sorted(set(want) - set(archs))


def configure():
    paddle = _import_paddle()
    from paddle.utils.cpp_extension import extension_utils as eu

    c = Config()
    c.paddle_version = paddle.__version__
    c.paddle_dir = os.path.dirname(paddle.__file__)
    c.cuda, c.cuda_reason = _find_cuda(paddle)
    c.cuda_on_host = bool(c.cuda and c.cuda.get("host"))
    gen_dir = os.path.join(ROOT, "build", "fastconv_generated")
    os.makedirs(gen_dir, exist_ok=True)
    inc, c.onednn_lib = _find_onednn(c.paddle_dir)
    c.onednn_headers = _prepare_onednn_headers(inc, gen_dir) if inc else None

    sources = sorted(glob.glob(os.path.join(CSRC, "common", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "conv_bn_act", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "conv2d", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "sync_bn", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "max_pool", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "avg_pool", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "layout", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "inception", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "resnet_block", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "linear", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "runtime", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "winograd", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "conv1x1", "*.cc")) +
                     glob.glob(os.path.join(CSRC, "onednn", "*.cc")))
    cu_sources = sorted(glob.glob(os.path.join(CSRC, "*", "*.cu")))
    if not c.cuda:
        sources = [s for s in sources if not s.endswith("_cuda.cc")]
    sources = [os.path.relpath(s, ROOT) for s in sources]

    # Paddle's headers go in as system headers so our own code can be built
    # with -Wall -Wextra without their warnings.
    paddle_incs = eu.find_paddle_includes(bool(c.cuda) and not c.cuda_on_host)
    # -fvisibility-inlines-hidden and -Bsymbolic: Paddle's libraries export
    # their own copies of oneDNN's inline C++ functions (built from other
    # headers); without these, our calls would bind to them at load time.
    # -fno-wrapv undoes the -fwrapv of Python's own CFLAGS, which setuptools
    # puts first: with wrapping signed arithmetic GCC cannot vectorize loops
    # over int indices (measured: the Inception pool's backward 12x slower).
    cflags = ["-O3", "-fno-wrapv", "-std=c++17", "-fopenmp", "-fvisibility-inlines-hidden",
              "-Wall", "-Wextra",
              "-Wno-unused-parameter", "-DPADDLE_NO_PYTHON",
              "-DPADDLE_WITH_CUSTOM_KERNEL", "-I" + gen_dir, "-I" + CSRC]
    cflags += ["-isystem" + d for d in paddle_incs]
    if os.environ.get("PADDLE_FASTCONV_WERROR") == "1":
        cflags.append("-Werror")
    base_dir = os.path.join(c.paddle_dir, "base")
    libs_dir = os.path.join(c.paddle_dir, "libs")
    core = eu._get_core_name()
    # --no-undefined: a symbol of ours that nothing defines fails the link,
    # not the first call that reaches it.
    ldflags = ["-Wl,-Bsymbolic", "-Wl,--no-undefined",
               "-L" + base_dir, "-Wl,--no-as-needed", "-l:" + core]
    # One OpenMP runtime for our kernels and oneDNN: in a Paddle process the
    # wheel's oneDNN runs on the Intel OpenMP runtime that Paddle ships
    # (libiomp5, which also implements GCC's GOMP interface). Kernels of ours
    # on libgomp would keep a second pool of threads, and the two pools'
    # spin-waiting workers take turns on the cores: measured, a GoogLeNet
    # Inception block at 6x6 ran 15x slower with 2 threads. Link libiomp5
    # when the wheel has it; GCC's libgomp otherwise.
    iomp = os.path.join(libs_dir, "libiomp5.so")
    c.openmp = "libiomp5 (Paddle's)" if os.path.exists(iomp) else "libgomp"
    ldflags += ["-L" + libs_dir, "-l:libiomp5.so"] if os.path.exists(iomp) else ["-fopenmp"]
    # The C++ API (conv2d, conv2d_grad, ...) lives in libphi_core on Paddle
    # 3.x and in libphi on 2.6.
    for phi in ("libphi_core.so", "libphi.so"):
        if os.path.exists(os.path.join(libs_dir, phi)):
            ldflags += ["-L" + libs_dir, "-l:" + phi]
            break
    if c.onednn_lib:
        cflags.append("-DFASTCONV_WITH_ONEDNN")
        ldflags += ["-L" + os.path.dirname(c.onednn_lib),
                    "-l:" + os.path.basename(c.onednn_lib)]
    else:
        sources = [s for s in sources
                   if "onednn" not in s and "folded_weights" not in s]
    ldflags += ["-Wl,--as-needed",
                "-Wl,-rpath," + base_dir + ":" + libs_dir]
    c.archs = c.skipped_archs = []
    if c.cuda_on_host:
        # Test build (PADDLE_FASTCONV_WITH_CUDA=host): the CUDA engine runs on
        # CPU tensors, its kernels compiled as host C++ under the CPU emulator
        # (common/cuda_emulation.h, the CUDA headers stubbed by
        # tests/cuda_emulation/include). It executes the engine's Paddle-side
        # code (conv2d/pool2d calls, channel slices, what is kept for
        # backward) against the stock layers without a GPU. Not for use.
        stub = os.path.join(ROOT, "tests", "cuda_emulation", "include")
        cflags += ["-DFASTCONV_WITH_CUDA", "-DFASTCONV_CUDA_ON_HOST",
                   "-fno-strict-aliasing", "-pthread", "-I" + stub,
                   # GCC -O3 cannot see that the kernels' batched loads and
                   # their uses share one guard (nvcc and -O2 can).
                   "-Wno-maybe-uninitialized"]
        wrap_dir = os.path.join(gen_dir, "host_kernels")
        os.makedirs(wrap_dir, exist_ok=True)
        for cu in cu_sources:
            rel = os.path.relpath(cu, CSRC)
            wrapper = os.path.join(wrap_dir, rel.replace(os.sep, "_") + ".cc")
            text = '#include "common/cuda_emulation.h"\n#include "%s"\n' % rel
            if not os.path.exists(wrapper) or open(wrapper).read() != text:
                with open(wrapper, "w") as f:
                    f.write(text)
            sources.append(os.path.relpath(wrapper, ROOT))
        cu_sources = []
    elif c.cuda:
        c.archs, c.skipped_archs = _cuda_archs(c.cuda["nvcc"])
        cuda_inc = os.path.join(c.cuda["home"], "include")
        cflags += ["-DPADDLE_WITH_CUDA", "-DFASTCONV_WITH_CUDA", "-isystem" + cuda_inc,
                   "-isystem" + os.path.join(cuda_inc, "cccl")]
        cuda_lib = os.path.join(c.cuda["home"], "lib64")
        ldflags += ["-L" + cuda_lib, "-lcudart", "-Wl,-rpath," + cuda_lib]
    c.cu_sources = cu_sources if c.cuda else []
    # Headers and CUDA sources as dependencies: a change to any of them
    # rebuilds and relinks (setuptools does not compare extra_objects).
    depends = sorted(glob.glob(os.path.join(CSRC, "*", "*.h")) +
                     glob.glob(os.path.join(CSRC, "*", "*.cuh")) + c.cu_sources)
    c.extension = Extension("paddle_fastconv._fastconv_ops", sources=sources,
                            depends=[os.path.relpath(d, ROOT) for d in depends],
                            extra_compile_args=cflags, extra_link_args=ldflags,
                            language="c++")
    _CONFIG["c"] = c
    return c


_CONFIG = {}


def _nvcc_flags(c):
    flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC,-Wall,-Wextra",
             "-Werror", "all-warnings", "-I" + CSRC,
             "-I" + os.path.join(c.cuda["home"], "include", "cccl"),
             "-Xptxas", "-v"]
    for a in c.archs:
        flags += ["-gencode", "arch=compute_%d,code=sm_%d" % (a, a)]
    newest = c.archs[-1]
    flags += ["-gencode", "arch=compute_%d,code=compute_%d" % (newest, newest)]
    return flags


def summary(c):
    lines = ["paddle_fastconv %s build summary" % VERSION,
             "  Paddle        %s at %s" % (c.paddle_version, c.paddle_dir),
             "  CPU engine    " + ("oneDNN (headers %s, library %s)" %
                                   (c.onednn_headers, c.onednn_lib)
                                   if c.onednn_lib else
                                   "Paddle conv API (this Paddle ships no oneDNN)"),
             "  OpenMP        " + c.openmp]
    if c.cuda_on_host:
        lines.append("  CUDA engine   on the host (test build: emulated kernels, "
                     "runs CPU tensors)")
    elif c.cuda:
        lines.append("  CUDA engine   sm_%s + PTX compute_%d (nvcc %s)" %
                     (",sm_".join(map(str, c.archs)), c.archs[-1], c.cuda["nvcc"]))
        if c.skipped_archs:
            lines.append("                skipped (unsupported by this nvcc): %s"
                         % c.skipped_archs)
    else:
        lines.append("  CUDA engine   not built: " + c.cuda_reason)
    return "\n".join(lines)


class BuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self):
        # setuptools clears `inplace` while building and copies the library
        # afterwards; remember it so the build info lands next to the copy.
        self._to_source = bool(self.inplace or getattr(self, "editable_mode", False))
        super().run()

    def build_extensions(self):
        c = _CONFIG["c"]
        print(summary(c), flush=True)
        report = []
        for ext in self.extensions:
            for cu in c.cu_sources:
                obj = os.path.join(self.build_temp, os.path.relpath(cu, ROOT) + ".o")
                os.makedirs(os.path.dirname(obj), exist_ok=True)
                cmd = [c.cuda["nvcc"]] + _nvcc_flags(c) + ["--threads", "2", "-c", cu, "-o", obj]
                print(" ".join(cmd), flush=True)
                p = subprocess.run(cmd, capture_output=True, text=True)
                report.append("$ " + " ".join(cmd) + "\n" + p.stdout + p.stderr)
                if p.returncode != 0:
                    sys.stderr.write(p.stdout + p.stderr)
                    raise SystemExit("paddle_fastconv build: nvcc failed on %s" % cu)
                ext.extra_objects.append(obj)
        super().build_extensions()
        self._write_info(c, "\n".join(report))

    def _write_info(self, c, cuda_report):
        info = {"version": VERSION, "paddle_version": c.paddle_version,
                "onednn_headers": c.onednn_headers, "onednn_lib": c.onednn_lib,
                "cuda_archs": c.archs,
                "cuda_ptx": c.archs[-1] if c.archs else None,
                "cuda_reason": c.cuda_reason, "openmp": c.openmp,
                "cuda_on_host": c.cuda_on_host}
        text = ('"""Generated by setup.py: what this build of paddle_fastconv '
                'contains."""\nBUILD_INFO = %r\n' % info)
        dirs = [os.path.join(self.build_lib, "paddle_fastconv")]
        if getattr(self, "_to_source", False):
            dirs.append(os.path.join(ROOT, "paddle_fastconv"))
        for d in dirs:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "_build_info.py"), "w") as f:
                f.write(text)
            if cuda_report:
                with open(os.path.join(d, "cuda_build_report.txt"), "w") as f:
                    f.write(cuda_report)
