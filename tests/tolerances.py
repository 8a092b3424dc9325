"""The one table of tolerances per dtype, used by every parity test.

Each entry bounds the error relative to the expected tensor's scale:
    max|actual - expected| <= atol + rtol * max|expected|
Why the fp32 numbers are what they are:
- out: the fused path sums the convolution in oneDNN's order (blocked,
  vectorized) and, in eval, multiplies BN into the weights before summing;
  stock Paddle sums im2col+GEMM in another order and applies BN after.
  Differences are a few ulps of the largest output.
- grad: weight and BN-parameter gradients are sums over N*H*W terms, whose
  order differs between the engines; their rounding grows with the count.
- stat: running statistics are reductions like the gradients, but of one
  pass only.
- model: whole models (ResNet) compared layer-for-layer with stock; fp32
  rounding compounds over ~50 layers and BatchNorms, most in training mode
  where small late-stage feature maps make BN ill-conditioned. Gradients of
  whole models are checked against a float64 oracle instead (see
  tests/test_fusion.py).
- cancel: quantities that are exactly zero in exact arithmetic and are only
  rounding noise in both engines, e.g. the conv-bias gradient in training
  (BN subtracts the channel mean, so sum(dz) = 0). Compared absolutely, at
  the noise level of the unit-scale test data.
"""
import numpy as np

TOLERANCES = {
    "float32": {
        "out": dict(rtol=2e-5, atol=1e-6),
        "grad": dict(rtol=1e-4, atol=1e-6),
        "stat": dict(rtol=2e-5, atol=1e-7),
        "cancel": dict(rtol=0.0, atol=1e-4),
        "model": dict(rtol=1e-3, atol=1e-5),
    },
    # GPU only (the CPU engine is fp32). Half precision keeps ~3 decimal
    # digits; bf16 ~2; statistics are fp32 in both.
    "float16": {
        "out": dict(rtol=5e-3, atol=1e-3),
        "grad": dict(rtol=2e-2, atol=1e-3),
        "stat": dict(rtol=1e-3, atol=1e-5),
        "cancel": dict(rtol=0.0, atol=5e-2),
    },
    "bfloat16": {
        "out": dict(rtol=3e-2, atol=1e-2),
        "grad": dict(rtol=8e-2, atol=1e-2),
        "stat": dict(rtol=5e-3, atol=1e-5),
        "cancel": dict(rtol=0.0, atol=2e-1),
    },
}


def _np(t):
    if hasattr(t, "numpy"):
        if str(t.dtype).endswith("bfloat16") or str(t.dtype).endswith("float16"):
            t = t.astype("float32")
        return t.numpy()
    return np.asarray(t)


def assert_close(actual, expected, kind, dtype="float32", what=""):
    tol = TOLERANCES[dtype][kind]
    a, e = _np(actual).astype(np.float64), _np(expected).astype(np.float64)
    assert a.shape == e.shape, "%s: shape %s != %s" % (what, a.shape, e.shape)
    assert np.isfinite(a).all() == np.isfinite(e).all(), "%s: non-finite values differ" % what
    err = np.abs(a - e).max() if a.size else 0.0
    bound = tol["atol"] + tol["rtol"] * (np.abs(e).max() if e.size else 0.0)
    assert err <= bound, "%s (%s, %s): max error %.3g > bound %.3g (max |expected| %.3g)" % (
        what, kind, dtype, err, bound, np.abs(e).max())
