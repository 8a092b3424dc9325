"""Parity checks of the emulated CUDA launchers against float64 numpy.

Each check_* drives one launcher on fresh random data in guarded buffers and
raises AssertionError on a wrong value, an out-of-bounds write (guard bytes),
a modified input or a launch error.  Used by tests/test_cuda_kernels_emulated.py
and, as `python -m cuda_emulation.parity LIB` (from tests/), to run the quick
suite against a planted-bug build in a separate process.

Tolerances.  The kernels compute in fp32 and round once to the activation
dtype, so an activation output may differ from the exact result by
    u(dtype) * |ref|            rounding to the dtype (unit roundoff u)
  + 8 * eps32 * mag             fp32 arithmetic, mag = sum of |terms|
  + sub(dtype)                  absolute rounding among fp16 subnormals.
Reductions (statistics, dgamma/dbeta) are fp32 sums: 1e-5 of the sum of
|terms|, far above their rounding and far below any indexing error.
"""
import sys
import zlib

import numpy as np

from .kernels import (DTYPE_IDS, Buffer, Kernels, Slice, to_float64, to_storage)

EPS32 = 2.0 ** -23
UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
SUBNORMAL = {"float32": 0.0, "float16": 2.0 ** -25, "bfloat16": 0.0}
REDUCE_RTOL = 1e-5
SENTINEL = 3000.0     # prefilled outputs: any element left unwritten shows up
DTYPES = ("float32", "float16", "bfloat16")

# ChannelView (outer, channels, inner).  NCHW: inner = H*W; channels-last
# (NHWC): inner = 1.  Sizes are chosen so that some are not multiples of the
# vector width or the block size, some allow 2-, 4- or 8-wide vectors, and
# some split a channel into several partials (P > 1: 4x3x1500, 100x16,
# 257x24, 200x6) or exceed a small grid cap (2x70x8).
NCHW_VIEWS = [(2, 3, 49), (4, 5, 12), (3, 16, 64), (1, 2, 7), (4, 3, 1500), (2, 70, 8)]
NHWC_VIEWS = [(37, 3, 1), (100, 16, 1), (257, 24, 1), (130, 2, 1), (3, 40, 1),
              (200, 6, 1)]
# Where the data starts relative to a 64-byte boundary: vector paths need
# "aligned"; "8B" allows only 8-byte vectors; "misaligned" (one element)
# forces scalar access.
ALIGNS = ("aligned", "8B", "misaligned")


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def offset(align, dtype, operand=0):
    """Byte offset of an operand's data; "mixed": only the first aligned."""
    size = np.dtype(np.float32 if dtype == "float32" else np.float16).itemsize
    return {"aligned": 0, "8B": 8, "misaligned": size,
            "mixed": 0 if operand == 0 else size}[align]


def _widen(inside, outside, sl):
    """An (o, ld, i) array holding `inside` in channels [c0, c0 + c)."""
    c0, ld = sl
    o, c, i = inside.shape
    wide = np.broadcast_to(outside, (o, ld, i)).copy()
    wide[:, c0:c0 + c, :] = inside
    return wide


def activation(values, dtype, align="aligned", operand=0, sl=None):
    """Buffer of the values rounded to `dtype`, and the float64 values it holds.
    sl = (c0, ld): a Slice of channels [c0, c0 + c) of a wider (o, ld, i)
    tensor whose other channels hold other data."""
    if sl is None:
        buf = Buffer(to_storage(values, dtype), offset(align, dtype, operand))
        return buf, to_float64(buf.array, dtype)
    values = np.asarray(values, np.float64)
    outside = rng_for("outside", operand, values.shape, sl).normal(
        0, 1, (values.shape[0], sl[1], values.shape[2]))
    wide = _widen(values, outside, sl)
    buf = Buffer(to_storage(wide, dtype), offset(align, dtype, operand))
    sliced = Slice(buf, values.shape, sl[0])
    return sliced, to_float64(sliced.array, dtype)


def output(shape, dtype, align="aligned", operand=0, sl=None):
    if sl is None:
        return Buffer(to_storage(np.full(shape, SENTINEL), dtype),
                      offset(align, dtype, operand))
    wide = _widen(np.full(shape, SENTINEL), -7.0, sl)
    return Slice(Buffer(to_storage(wide, dtype), offset(align, dtype, operand)),
                 shape, sl[0])


def _lds(sl):
    """SliceStrides of the operands named in sl ({name: (c0, ld)})."""
    return {k: v[1] for k, v in (sl or {}).items()}


def f32(x):
    return np.ascontiguousarray(x, dtype=np.float32)


def _where(shape, flat):
    return np.unravel_index(flat, shape) if shape else ()


def assert_close(got, ref, tol, what):
    """Elementwise |got - ref| <= tol; NaN must match NaN."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    tol = np.nan_to_num(tol, nan=0.0)  # from NaN inputs: the result must be exact
    both_nan = np.isnan(got) & np.isnan(ref)
    bad = ~((np.abs(got - ref) <= tol) | both_nan)
    if bad.any():
        k = np.flatnonzero(bad)[0]
        tol_k = np.broadcast_to(tol, ref.shape).flat[k]
        raise AssertionError("%s: %d of %d values off, first at %s: got %r, expected %r "
                             "(tolerance %.3g)" % (what, bad.sum(), bad.size,
                                                   _where(ref.shape, k), got.flat[k],
                                                   ref.flat[k], tol_k))


def assert_activation(got_buf, ref, mag, dtype, what):
    tol = UNIT_ROUNDOFF[dtype] * np.abs(ref) + 8 * EPS32 * mag + SUBNORMAL[dtype]
    assert_close(to_float64(got_buf.array, dtype), ref, tol, what)


def _launch_ok(kern, err, what, *buffers):
    assert err == 0, "%s: launch returned cudaError %d %s" % (what, err, kern.last_fault())
    for b in buffers:
        if b is not None:
            b.check_guards(what)


def _unchanged(buf, before, what):
    assert np.array_equal(buf.array.view(np.uint8), before.view(np.uint8)), \
        "%s: an input was modified" % what


def check_stats(kern, dtype, view, align, mean=0.0, std=1.0, sl=None):
    what = "bn_stats %s view=%s %s slices=%s" % (dtype, view, align, sl)
    rng = rng_for("stats", dtype, view, align, mean)
    sl = sl or {}
    o, c, i = view
    z, zv = activation(rng.normal(mean, std, view) + 0.25 * np.arange(c)[None, :, None],
                       dtype, align, sl=sl.get("z"))
    z0 = z.array.copy()
    gamma, beta = f32(rng.uniform(0.5, 1.5, c)), f32(rng.normal(0, 0.5, c))
    rm0, rv0 = f32(rng.normal(0, 0.5, c)), f32(rng.uniform(0.5, 2, c))
    rm, rv = rm0.copy(), rv0.copy()
    sm, si, a, b = (f32(np.full(c, np.nan)) for _ in range(4))
    ws = Buffer(f32(np.full(kern.workspace_bytes(view) // 4, np.nan)))
    momentum, eps = 0.9, 1e-5
    err = kern.call("fc_bn_stats", DTYPE_IDS[dtype], z, o, c, i, gamma, beta, rm, rv,
                    momentum, eps, sm, si, a, b, ws, lds=_lds(sl))
    _launch_ok(kern, err, what, z, ws)
    _unchanged(z, z0, what)
    ref_mean, ref_var = zv.mean(axis=(0, 2)), zv.var(axis=(0, 2))
    sd = np.sqrt(ref_var)
    assert_close(sm, ref_mean, 1e-5 * sd + 4 * EPS32 * np.abs(ref_mean), what + " mean")
    ref_invstd = 1 / np.sqrt(ref_var + np.float32(eps))
    assert_close(si, ref_invstd, 2e-5 * ref_invstd, what + " invstd")
    # The coefficients follow from the statistics above in fp32.
    a64, sm64 = a.astype(np.float64), sm.astype(np.float64)
    assert_close(a, gamma * si.astype(np.float64), 4 * EPS32 * np.abs(a64), what + " coef_a")
    assert_close(b, beta - sm64 * a64,
                 4 * EPS32 * (np.abs(beta) + np.abs(sm64 * a64)), what + " coef_b")
    m = np.float32(momentum)
    assert_close(rm, m * rm0 + (1 - m) * ref_mean,
                 4 * EPS32 * (np.abs(rm0) + np.abs(ref_mean)) + 2e-6 * sd,
                 what + " running_mean")
    assert_close(rv, m * rv0 + (1 - m) * ref_var,
                 4 * EPS32 * np.abs(rv0) + 2e-5 * ref_var, what + " running_var")


def check_forward(kern, dtype, view, align, relu, residual, bias_mode, inplace,
                  nan=False, sl=None):
    what = "%s %s view=%s %s relu=%d residual=%d inplace=%d slices=%s" % (
        "bias_act_forward" if bias_mode else "bn_act_forward", dtype, view, align,
        relu, residual, inplace, sl)
    rng = rng_for("forward", dtype, view, align, relu, residual, bias_mode, inplace)
    sl = dict(sl or {})
    if inplace and "z" in sl:
        sl["y"] = sl["z"]
    o, c, i = view
    zin = rng.normal(0, 1, view)
    if nan:
        zin.flat[min(3, zin.size - 1)] = np.nan
    z, zv = activation(zin, dtype, align, 0, sl=sl.get("z"))
    res, resv = activation(rng.normal(0, 1, view), dtype, align, 1) if residual else (None, 0.0)
    y = z if inplace else output(view, dtype, align, 2, sl=sl.get("y"))
    a, b = f32(rng.uniform(0.5, 2, c)), f32(rng.normal(0, 1, c))
    a64 = np.ones(c) if bias_mode else a.astype(np.float64)
    ref = zv * a64[None, :, None] + b.astype(np.float64)[None, :, None] + resv
    mag = (np.abs(zv * a64[None, :, None]) + np.abs(b)[None, :, None] + np.abs(resv))
    if relu:
        ref = np.where(ref > 0, ref, 0.0)  # Paddle's relu: NaN -> 0
    if bias_mode:
        err = kern.call("fc_bias_act_forward", DTYPE_IDS[dtype], z, res, b, int(relu), y,
                        o, c, i, lds=_lds(sl))
    else:
        err = kern.call("fc_bn_act_forward", DTYPE_IDS[dtype], z, res, a, b, int(relu), y,
                        o, c, i, lds=_lds(sl))
    _launch_ok(kern, err, what, z, res, y)
    assert_activation(y, ref, mag, dtype, what)


def _grad_inputs(rng, dtype, view, align, sl):
    c = view[1]
    dy, dyv = activation(rng.normal(0, 1, view), dtype, align, 0, sl=sl.get("dy"))
    y, yv = activation(rng.normal(0, 1, view), dtype, align, 1, sl=sl.get("y"))
    z, zv = activation(rng.normal(0.3, 1.5, view), dtype, align, 2, sl=sl.get("z"))
    mean, invstd = f32(rng.uniform(-0.5, 0.5, c)), f32(rng.uniform(0.5, 2, c))
    return dy, dyv, y, yv, z, zv, mean, invstd


def check_backward_reduce(kern, dtype, view, align, relu, sl=None):
    what = "bn_act_backward_reduce %s view=%s %s relu=%d slices=%s" % (
        dtype, view, align, relu, sl)
    rng = rng_for("reduce", dtype, view, align, relu)
    sl = sl or {}
    o, c, i = view
    dy, dyv, y, yv, z, zv, mean, invstd = _grad_inputs(rng, dtype, view, align, sl)
    dgamma, dbeta = f32(np.full(c, np.nan)), f32(np.full(c, np.nan))
    ws = Buffer(f32(np.full(kern.workspace_bytes(view) // 4, np.nan)))
    err = kern.call("fc_bn_act_backward_reduce", DTYPE_IDS[dtype], dy, y if relu else None,
                    z, mean, invstd, int(relu), o, c, i, dgamma, dbeta, ws, lds=_lds(sl))
    _launch_ok(kern, err, what, dy, y, z, ws)
    g = np.where(yv > 0, dyv, 0.0) if relu else dyv
    xhat = (zv - mean[None, :, None]) * invstd[None, :, None]
    assert_close(dbeta, g.sum(axis=(0, 2)), REDUCE_RTOL * np.abs(g).sum(axis=(0, 2)),
                 what + " dbeta")
    assert_close(dgamma, (g * xhat).sum(axis=(0, 2)),
                 REDUCE_RTOL * np.abs(g * xhat).sum(axis=(0, 2)), what + " dgamma")


def check_backward_apply(kern, dtype, view, align, relu, training, with_dres, sl=None):
    what = "bn_act_backward_apply %s view=%s %s relu=%d training=%d dres=%d slices=%s" % (
        dtype, view, align, relu, training, with_dres, sl)
    rng = rng_for("apply", dtype, view, align, relu, training, with_dres)
    sl = sl or {}
    o, c, i = view
    dy, dyv, y, yv, z, zv, mean, invstd = _grad_inputs(rng, dtype, view, align, sl)
    gamma, dgamma = f32(rng.uniform(0.5, 1.5, c)), f32(rng.normal(0, 50, c))
    dbeta = f32(rng.normal(0, 50, c))
    dz = output(view, dtype, align, 3, sl=sl.get("dz"))
    dres = output(view, dtype, align, 4) if with_dres else None
    err = kern.call("fc_bn_act_backward_apply", DTYPE_IDS[dtype], dy, y if relu else None,
                    z if training else None, mean if training else None, invstd, gamma,
                    dgamma if training else None, dbeta if training else None, int(relu),
                    int(training), o, c, i, dz, dres, lds=_lds(sl))
    _launch_ok(kern, err, what, dy, y, z, dz, dres)
    g = np.where(yv > 0, dyv, 0.0) if relu else dyv
    col = lambda v: v.astype(np.float64)[None, :, None]  # noqa: E731
    scale = col(gamma) * col(invstd)
    terms = [g]
    if training:
        inv_count = 1.0 / (o * i)
        terms += [-col(dbeta) * inv_count,
                  -(zv - col(mean)) * col(invstd) * col(dgamma) * inv_count]
    ref = scale * sum(terms)
    mag = np.abs(scale) * sum(np.abs(t) for t in terms)
    assert_activation(dz, ref, mag, dtype, what + " dz")
    if with_dres:  # g is dy or 0: exact in the dtype
        assert_close(to_float64(dres.array, dtype), g, 0.0, what + " dres")


def check_fold(kern, dtype, out_channels, per_filter, align, with_bias):
    what = "fold_bn %s %dx%d %s bias=%d" % (dtype, out_channels, per_filter, align, with_bias)
    rng = rng_for("fold", dtype, out_channels, per_filter, align, with_bias)
    shape = (out_channels, per_filter)
    has_w = per_filter > 0
    w, wv = activation(rng.normal(0, 1, shape), dtype, align, 0) if has_w else (None, None)
    cb, cbv = (activation(rng.normal(0, 1, out_channels), dtype, align, 1) if with_bias
               else (None, np.zeros(out_channels)))
    gamma, beta = f32(rng.uniform(0.5, 1.5, out_channels)), f32(rng.normal(0, 1, out_channels))
    rm, rv = f32(rng.normal(0, 1, out_channels)), f32(rng.uniform(0.1, 2, out_channels))
    w_out = output(shape, dtype, align, 2) if has_w else None
    bias_out = f32(np.full(out_channels, np.nan))
    eps = np.float32(1e-5)
    err = kern.call("fc_fold_bn", DTYPE_IDS[dtype], w, cb, gamma, beta, rm, rv, eps,
                    out_channels, per_filter, w_out, bias_out)
    _launch_ok(kern, err, what, w, cb, w_out)
    s = gamma / np.sqrt(rv.astype(np.float64) + eps)
    if has_w:
        ref = wv * s[:, None]
        assert_activation(w_out, ref, np.abs(ref), dtype, what + " weights")
    shifted = cbv - rm
    assert_close(bias_out, shifted * s + beta,
                 8 * EPS32 * ((np.abs(cbv) + np.abs(rm)) * s + np.abs(beta)), what + " bias")


# Combinations of the boolean options each parity test runs: every option is
# on in some and off in others.
FORWARD_VARIANTS = [  # (relu, residual, bias_mode, inplace)
    (True, True, False, False), (False, False, True, False),
    (True, False, False, True), (False, True, True, True)]
APPLY_VARIANTS = [  # (relu, training, with_dres)
    (True, True, True), (False, True, False), (True, False, False), (False, False, True)]


def check_all(kern, dtype, view, align, sl=None):
    """Every launcher on one (dtype, view, alignment); sl: channel slices
    ({operand: (c0, ld)}, operands z, y, dy, dz) where the launcher has
    that operand."""
    check_stats(kern, dtype, view, align, sl=sl)
    for v in FORWARD_VARIANTS:
        check_forward(kern, dtype, view, align, *v, sl=sl)
    for relu in (False, True):
        check_backward_reduce(kern, dtype, view, align, relu, sl=sl)
    for v in APPLY_VARIANTS:
        check_backward_apply(kern, dtype, view, align, *v, sl=sl)


QUICK_VIEWS = [(4, 3, 1500), (2, 5, 12), (3, 16, 64), (2, 70, 8), (257, 24, 1),
               (37, 3, 1), (130, 2, 1)]

# Channel slices ({operand: (c0, ld)}) for a view of c channels.
SLICE_SETS = {
    # Every operand a slice at its own offset and row stride, none a multiple
    # of a vector width: scalar access.
    "odd": lambda c: {"z": (1, c + 3), "y": (2, c + 5), "dy": (3, c + 4), "dz": (0, c + 1)},
    # Offsets and strides that keep 16-byte vectors (the Inception op's usual
    # case), y dense.
    "vec": lambda c: {"z": (8, c + 16), "dy": (16, c + 16), "dz": (8, c + 24)},
    # Aligned first rows but a row stride off the vector width: only rows
    # after the first would be misaligned, so the width must follow ld.
    "ld_breaks_vec": lambda c: {"z": (0, c + 2), "y": (0, c + 1)},
}
SLICED_VIEWS = [(4, 3, 1500), (3, 16, 64), (2, 70, 8), (257, 24, 1), (100, 16, 1),
                (37, 3, 1)]


def quick_suite(kern, fail_fast=False):
    """A cross-section of the parity tests (every launcher, dtype and path);
    returns the failure messages.  The planted-bug test expects a non-empty
    list from each bug and an empty one from the production sources."""
    checks = []
    for dtype in DTYPES:
        checks += [(check_all, (dtype, view, align))
                   for view in QUICK_VIEWS for align in ("aligned", "misaligned")]
        checks += [(check_all, (dtype, view, "aligned", SLICE_SETS[name](view[1])))
                   for view in SLICED_VIEWS[::2] for name in SLICE_SETS]
        checks.append((check_fold, (dtype, 64, 9, "aligned", True)))
    failures = []
    for fn, args in checks:
        try:
            fn(kern, *args)
        except AssertionError as e:
            failures.append(str(e))
            if fail_fast:
                break
    return failures


def main(argv):
    """python -m cuda_emulation.parity LIBRARY [--fail-fast]"""
    kern = Kernels(argv[1])
    failures = quick_suite(kern, fail_fast="--fail-fast" in argv[2:])
    for f in failures:
        print("FAIL", f)
    print("%d failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
