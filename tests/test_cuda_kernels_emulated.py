"""Every CUDA launcher executed and checked without a GPU.

The kernel sources (csrc/*/*.cu) are compiled with g++ as host C++ under
csrc/common/cuda_emulation.h, which runs each block's threads as fibers with
real __syncthreads() and warp-shuffle barriers (tests/cuda_emulation/build.py
builds the library once per session into a cache outside the repository;
parity.py drives it through ctypes).  Every launcher of bn_act_cuda.h is
compared with a float64 numpy reference for fp32, fp16 and bf16, NCHW and
channels-last views, sizes that are and are not multiples of the vector width
and block size, and aligned and misaligned pointers, with production block
and grid sizes.  A second build with the grid caps lowered to 3 blocks
(-DFC_BN_TEST_GRID_CAP=3) runs the grid-stride and channel loops.

The harness has teeth: test_planted_bug_is_caught builds copies of the
sources with one bug patched in each (an off-by-one index or range, a removed
__syncthreads(), a wrong reduction, a vector width that ignores channel runs)
and requires the parity suite to fail on every one, while it passes on the
real sources.

Needs only a C++ compiler ($CXX or g++); skipped without one.
"""
import concurrent.futures
import os
import subprocess
import sys

import numpy as np
import pytest

from cuda_emulation import build, parity
from cuda_emulation.kernels import (CUDA_ERROR_INVALID_CONFIGURATION,
                                    CUDA_ERROR_INVALID_VALUE,
                                    CUDA_ERROR_LAUNCH_FAILURE, Kernels, to_float64,
                                    to_storage)

SMALL_GRID_CAP = "FC_BN_TEST_GRID_CAP=3"
VIEWS = parity.NCHW_VIEWS + parity.NHWC_VIEWS


def _require_compiler():
    if build.compiler() is None:
        pytest.skip("no C++ compiler (set CXX or install g++): the emulated CUDA "
                    "kernel tests need one")


@pytest.fixture(scope="session")
def kern():
    _require_compiler()
    return Kernels(build.build_library())


@pytest.fixture(scope="session")
def kern_small_grid():
    _require_compiler()
    return Kernels(build.build_library(defines=[SMALL_GRID_CAP]))


def _view_id(v):
    return "x".join(map(str, v))


# ---------------------------------------------------------------------------
# Parity with production launch sizes
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("align", parity.ALIGNS)
@pytest.mark.parametrize("view", VIEWS, ids=_view_id)
@pytest.mark.parametrize("dtype", parity.DTYPES)
def test_parity(kern, dtype, view, align):
    parity.check_all(kern, dtype, view, align)


@pytest.mark.parametrize("slices", list(parity.SLICE_SETS))
@pytest.mark.parametrize("view", parity.SLICED_VIEWS, ids=_view_id)
@pytest.mark.parametrize("dtype", parity.DTYPES)
def test_parity_channel_slices(kern, dtype, view, slices):
    # Operands that are channel slices of wider tensors (SliceStrides), as
    # the Inception op passes them: right values, and nothing outside the
    # slices read into the result or written.
    parity.check_all(kern, dtype, view, "aligned", parity.SLICE_SETS[slices](view[1]))


@pytest.mark.parametrize("view", [(2, 2, 3000), (3000, 4, 1)], ids=_view_id)
def test_stats_large_mean(kern, view):
    # Shifted Welford keeps the variance accurate where sum / sum-of-squares
    # in fp32 would cancel catastrophically (mean 1e4, std 1).
    parity.check_stats(kern, "float32", view, "aligned", mean=1e4, std=1.0)


@pytest.mark.parametrize("view", [(2, 3, 16), (5, 8, 1)], ids=_view_id)
@pytest.mark.parametrize("dtype", parity.DTYPES)
def test_forward_nan_and_mixed_alignment(kern, dtype, view):
    # A NaN activation gives NaN, or 0 after relu (Paddle's relu); a residual
    # misaligned against aligned z and y forces the scalar path.
    for relu in (False, True):
        parity.check_forward(kern, dtype, view, "mixed", relu, True, False, False, nan=True)


@pytest.mark.parametrize("align", ["aligned", "misaligned"])
@pytest.mark.parametrize("dtype", parity.DTYPES)
def test_fold_bn(kern, dtype, align):
    for out_channels, per_filter, with_bias in [(5, 27, True), (64, 9, False), (3, 0, True),
                                                (7, 1, False), (300, 3, True)]:
        parity.check_fold(kern, dtype, out_channels, per_filter, align, with_bias)


def test_production_launch_config(kern):
    # The emulator runs the launchers' own grids and blocks: spot-check them.
    def launches(fn, *args):
        kern.clear_launches()
        fn(kern, *args)
        return kern.launches()

    one = (256, 1, 1)
    # NCHW stats: grid (partials, channels), then one warp per channel.
    assert launches(parity.check_stats, "float32", (4, 3, 1500), "aligned") == [
        ((2, 3, 1), one), ((1, 1, 1), one)]
    # Channels-last: 24 channels in 4-wide vectors -> 8 x 32 threads, 5
    # partials of <= 64 rows.
    assert launches(parity.check_stats, "float32", (257, 24, 1), "aligned") == [
        ((1, 5, 1), (8, 32, 1)), ((3, 1, 1), one)]
    # fp16 with inner % 8 == 4: 4-wide units, 2 per thread -> 9 blocks.
    assert launches(parity.check_forward, "float16", (4, 3, 1500), "aligned",
                    True, False, False, False) == [((9, 1, 1), one)]


def test_invalid_arguments(kern):
    f32 = parity.f32(np.ones(4))
    ws = parity.f32(np.ones(64))
    p = np.zeros(64, np.float32)  # any non-null pointer
    kern.clear_launches()
    # Empty tensors succeed without launching, even with null pointers.
    assert kern.call("fc_bn_stats", 0, None, 0, 4, 5, None, None, None, None, 0.9, 1e-5,
                     None, None, None, None, None) == 0
    assert kern.call("fc_bn_act_forward", 1, None, None, None, None, 1, None, 3, 0, 5) == 0
    assert kern.call("fc_fold_bn", 0, None, None, None, None, None, None, 1e-5, 0, 9,
                     None, None) == 0
    assert kern.launches() == []
    assert kern.workspace_bytes((0, 3, 3)) == 0
    inval = CUDA_ERROR_INVALID_VALUE
    assert kern.call("fc_bn_act_forward", 1, None, None, f32, f32, 1, p, 3, 1, 5) == inval
    assert kern.call("fc_bn_act_forward", 1, p, None, f32, f32, 1, p, -1, 1, 5) == inval
    assert kern.call("fc_bn_act_forward", 7, p, None, f32, f32, 1, p, 1, 1, 1) == inval
    assert kern.call("fc_bias_act_forward", 0, p, None, None, 0, p, 1, 1, 1) == inval
    # relu needs y.
    assert kern.call("fc_bn_act_backward_reduce", 0, p, None, p, f32, f32, 1, 1, 1, 1,
                     f32, f32, ws) == inval
    # training needs z, mean, dgamma and dbeta.
    assert kern.call("fc_bn_act_backward_apply", 0, p, None, None, None, f32, f32, None,
                     None, 0, 1, 1, 1, 1, p, None) == inval
    assert kern.call("fc_bn_stats", 0, p, 1, 1, 1, f32, f32, None, None, 0.9, 1e-5,
                     f32, f32, f32, f32, None) == inval
    assert kern.call("fc_fold_bn", 0, None, None, f32, f32, f32, f32, 1e-5, 1, 9,
                     None, f32) == inval
    # A slice's row stride must cover its channels (0 = dense).
    assert kern.call("fc_bn_act_forward", 0, p, None, f32, f32, 1, p, 1, 4, 1,
                     lds={"y": 3}) == inval
    assert kern.call("fc_bn_stats", 0, p, 1, 4, 1, f32, f32, None, None, 0.9, 1e-5,
                     f32, f32, f32, f32, ws, lds={"z": 2}) == inval
    assert kern.call("fc_bn_act_backward_reduce", 0, p, p, p, f32, f32, 1, 1, 4, 1,
                     f32, f32, ws, lds={"dy": 1}) == inval
    assert kern.call("fc_bn_act_backward_apply", 0, p, None, None, None, f32, f32, None,
                     None, 0, 0, 1, 4, 1, p, None, lds={"dz": -1}) == inval
    assert kern.launches() == []


# ---------------------------------------------------------------------------
# Grid-stride and channel loops: grid caps lowered to 3 blocks
# ---------------------------------------------------------------------------

SMALL_GRID_VIEWS = [(4, 3, 1500), (2, 70, 8), (3, 16, 64), (257, 24, 1), (200, 6, 1)]


@pytest.mark.parametrize("align", ["aligned", "misaligned"])
@pytest.mark.parametrize("dtype", parity.DTYPES)
def test_parity_small_grid(kern_small_grid, dtype, align):
    kern_small_grid.clear_launches()
    for view in SMALL_GRID_VIEWS:
        parity.check_all(kern_small_grid, dtype, view, align)
    # Slices: the cursors' row carries across grid-stride steps.
    for view in [(4, 3, 1500), (257, 24, 1)]:
        for name, slices in parity.SLICE_SETS.items():
            parity.check_all(kern_small_grid, dtype, view, align, slices(view[1]))
    parity.check_fold(kern_small_grid, dtype, 300, 3, align, True)
    capped = [g for g, _ in kern_small_grid.launches() if 3 in g[:2]]
    assert capped, "no launch hit the grid cap: the loops were not exercised"


# ---------------------------------------------------------------------------
# The emulator itself
# ---------------------------------------------------------------------------

def test_emulator_warp_shuffles(kern):
    out = np.zeros((64, 4), np.int32)
    assert kern.call("fc_selftest_shuffle", out) == 0
    lane = np.arange(64) % 32
    base = np.arange(64) - lane
    value = lambda l: 3 * (base + l) + 1  # noqa: E731
    assert (out[:, 0] == np.where(lane + 5 < 32, value(lane + 5), value(lane))).all()
    assert (out[:, 1] == np.where(lane >= 3, value(lane - 3), value(lane))).all()
    assert (out[:, 2] == value(lane ^ 6)).all()
    assert (out[:, 3] == value(7)).all()


@pytest.mark.parametrize("workers", [1, 2])
def test_emulator_shared_memory_is_per_block(kern, workers):
    blocks = 16
    x = np.random.default_rng(0).integers(0, 1000, (blocks, 256)).astype(np.int32)
    out = np.zeros_like(x)
    kern.lib.fc_emu_set_workers(workers)
    try:
        assert kern.call("fc_selftest_reverse", x, out, blocks) == 0
    finally:
        kern.lib.fc_emu_set_workers(1)
    assert (out == x[:, ::-1] + 3).all()


def test_emulator_reports_deadlock(kern):
    out = np.zeros(256, np.int32)
    assert kern.call("fc_selftest_divergent_barrier", out) == CUDA_ERROR_LAUNCH_FAILURE
    assert "deadlock" in kern.last_fault()
    assert "100 threads wait at __syncthreads" in kern.last_fault()


def test_emulator_rejects_bad_launch(kern):
    assert kern.call("fc_selftest_bad_launch", 0) == CUDA_ERROR_INVALID_CONFIGURATION
    assert kern.call("fc_selftest_bad_launch", 1) == CUDA_ERROR_INVALID_CONFIGURATION
    assert kern.call("fc_selftest_bad_launch", 2) == CUDA_ERROR_INVALID_VALUE


def test_emulator_half_conversions(kern):
    rng = np.random.default_rng(1)
    edge = [0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e6, 2.0 ** -24, 2.0 ** -25,
            3 * 2.0 ** -26, 2.0 ** -14, 2.0 ** -14 - 2.0 ** -25, 1 + 2.0 ** -11,
            1 + 3 * 2.0 ** -11, 1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 3.4e38,
            np.inf, -np.inf, np.nan, 1e-40]
    rand = rng.uniform(1, 2, 20000) * 2.0 ** rng.integers(-30, 20, 20000)
    x = parity.f32(np.concatenate([edge, -rand, rand]))
    n = x.size
    hb, bb = np.zeros(n, np.uint16), np.zeros(n, np.uint16)
    hf, bf = np.zeros(n, np.float32), np.zeros(n, np.float32)
    kern.call("fc_selftest_convert", x, n, hb, hf, bb, bf)
    nan = np.isnan(x)
    with np.errstate(over="ignore"):
        ref_h = x.astype(np.float16)  # numpy rounds to nearest even
    assert (hb[~nan] == ref_h.view(np.uint16)[~nan]).all()
    assert np.isnan(hf[nan]).all() and (hf[~nan] == ref_h[~nan]).all()
    ref_b = to_storage(x, "bfloat16")
    assert (bb[~nan] == ref_b[~nan]).all()
    assert (bf[~nan] == to_float64(ref_b, "bfloat16")[~nan]).all()
    assert np.isnan(bf[nan]).all()


# ---------------------------------------------------------------------------
# The harness has teeth: planted bugs must fail the parity suite
# ---------------------------------------------------------------------------

# name: (file under csrc/, original text, planted text, extra defines).  Each
# original must occur exactly once (build.py fails otherwise).
PLANTED_BUGS = {
    # EwCursor carries the inner index one step late.
    "index_off_by_one": (
        "conv_bn_act/bn_elementwise_kernels.cu",
        "    if (i >= g.inner_u) {", "    if (i > g.inner_u) {", ()),
    # Neighbouring statistics partials overlap by one unit.
    "range_off_by_one": (
        "conv_bn_act/bn_stats_kernels.cu",
        "min_i64(plane_u, k_begin + chunk_u);", "min_i64(plane_u, k_begin + chunk_u + 1);", ()),
    # Warp 0 reads the per-warp Welford records before all are written.
    "missing_syncthreads": (
        "conv_bn_act/bn_stats_kernels.cu",
        "    sh[2][warp] = m2;\n  }\n  __syncthreads();\n", "    sh[2][warp] = m2;\n  }\n", ()),
    # Channels-last tree: a round reads rows the previous round still writes.
    "missing_syncthreads_in_tree": (
        "conv_bn_act/bn_stats_kernels.cu",
        "      s_n[tid] = n;\n    }\n    __syncthreads();\n", "      s_n[tid] = n;\n    }\n", ()),
    # The block sum drops the partial sums of half of the warps.
    "wrong_reduction": (
        "conv_bn_act/bn_backward_reduce_kernels.cu",
        "a = warp_reduce_sum(lane < kWarpsPerBlock ? sh[0][lane]",
        "a = warp_reduce_sum(lane < kWarpsPerBlock / 2 ? sh[0][lane]", ()),
    # NCHW vector width checked against a whole plane instead of one
    # channel's run: vectors straddle channels.
    "vector_straddles_channels": (
        "conv_bn_act/bn_kernels_common.cuh",
        "  if (v.inner != 1) return v.inner;", "  if (v.inner != 1) return v.outer * v.inner;",
        ()),
    # Channel slices read as dense tensors (the row gap dropped).
    "slice_row_stride_ignored": (
        "conv_bn_act/bn_elementwise_kernels.cu",
        "  return u * VEC + o * gap;", "  return u * VEC + 0 * o * gap;", ()),
    # The elementwise cursor misses the row carry of a grid-stride step.
    "slice_row_carry_missed": (
        "conv_bn_act/bn_elementwise_kernels.cu",
        "      cu -= g.chans_u;\n      ++o;\n", "      cu -= g.chans_u;\n", (SMALL_GRID_CAP,)),
    # Channels-last statistics step rows by the channel count, not the stride.
    "slice_stats_row_stride": (
        "conv_bn_act/bn_stats_kernels.cu",
        "z + rr * ld + c0", "z + rr * (ld - ld + channels) + c0", ()),
    # Vector width chosen without the slices' row strides: misaligned rows.
    "slice_vector_width": (
        "conv_bn_act/bn_kernels_common.cuh",
        "run = std::gcd(run, row_ld(ld, v));", "run = std::gcd(run, row_ld(0 * ld, v));", ()),
    # The next channel iteration overwrites the shared sums while warp 0 may
    # still read them; only blocks that loop over channels (small grid cap).
    "missing_trailing_syncthreads": (
        "conv_bn_act/bn_backward_reduce_kernels.cu",
        "sh[1][lane] : 0.f);\n  }\n  __syncthreads();\n}", "sh[1][lane] : 0.f);\n  }\n}",
        (SMALL_GRID_CAP,)),
}


def _run_quick_suite(lib, *flags):
    """parity.quick_suite in a child process: a planted bug may crash it."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
        [tests_dir] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    p = subprocess.run([sys.executable, "-m", "cuda_emulation.parity", lib, *flags],
                       capture_output=True, text=True, env=env, timeout=600)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="session")
def planted_runs():
    """{name: (exit code, output)} of the quick suite on every planted-bug
    build and on the production sources ("none"), built and run in parallel."""
    _require_compiler()

    def run(name):
        if name == "none":
            return name, _run_quick_suite(build.build_library(jobs=1))
        path, old, new, defines = PLANTED_BUGS[name]
        lib = build.build_library(defines=defines, patches={path: [(old, new)]}, jobs=1)
        return name, _run_quick_suite(lib, "--fail-fast")

    workers = min(4, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(run, ["none"] + list(PLANTED_BUGS)))


def test_quick_suite_passes_on_production_sources(planted_runs):
    rc, out = planted_runs["none"]
    assert rc == 0, out[-3000:]


@pytest.mark.parametrize("bug", list(PLANTED_BUGS))
def test_planted_bug_is_caught(planted_runs, bug):
    rc, out = planted_runs[bug]
    assert rc != 0, "planted bug %r went unnoticed:\n%s" % (bug, out[-2000:])
    # A failed check (not, say, an import error) is what caught it.
    assert "FAIL " in out or rc < 0, out[-2000:]
