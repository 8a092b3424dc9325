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

# Whole-GoogLeNet gradients (tests/test_googlenet.py), relative L2 error
# against a float64 run whose max pools route as the fp32 model's did: the
# fused model's median and worst error over all gradients may exceed 2x
# stock fp32's by these amounts. A ReLU pre-activation within rounding of
# zero gates its value the other way in one fp32 model and not the other,
# and one such flip near the top moves every gradient below it: stock fp32
# itself measured 4.5e-3 below Inception 5a's 3x3 branch in the BN model's
# training step, whose batch statistics over few values (72 per channel in
# Inception 5) amplify it (worst gradient 0.036 fused, 0.0124 stock).
MODEL_GRAD_FLIP_ALLOWANCE = {"median": 5e-3, "worst": 1e-2, "worst_bn_train": 3e-2}


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


# Absolute noise floor of assert_as_accurate: with unit-scale test data the
# gradients are O(1); a result that cancels to ~1e-3 (a small channel behind
# another BatchNorm) carries fp32 noise of the *terms* it was summed from,
# ~1e-6, whatever the engine. Real bugs show as errors of O(0.1).
NOISE_FLOOR = 1e-5


def assert_as_accurate(actual, stock, oracle64, kind, what="", factor=2.0, scale=1.0):
    """For ill-conditioned quantities that the table cannot bound: `actual`
    passes when it is within the table's tolerance of `stock`, or else when
    its error against a float64 run of the stock layers (`oracle64`) is at
    most `factor` times stock fp32's own error against it. Used where exact
    arithmetic cancels a gradient: BatchNorm makes the output invariant to
    the scale of each filter, so the part of dW along W is zero up to the
    epsilon term, and with a fan-in of one element it is all of dW; and BN
    over a few values per channel amplifies rounding (property tests draw
    such shapes on purpose). Errors below NOISE_FLOOR always pass; `scale`
    raises that floor for gradients whose scale is not 1 (BN over a channel
    of tiny variance multiplies its gradients by 1/std: the rounding noise of
    a quantity that cancels grows with them)."""
    tol = TOLERANCES["float32"][kind]
    a, s, r = (_np(t).astype(np.float64) for t in (actual, stock, oracle64))
    assert a.shape == s.shape == r.shape, "%s: shapes %s %s %s" % (what, a.shape, s.shape,
                                                                   r.shape)
    assert np.isfinite(a).all() == np.isfinite(s).all(), "%s: non-finite values differ" % what
    if not a.size:
        return
    err = np.abs(a - s).max()
    if err <= tol["atol"] + tol["rtol"] * np.abs(s).max():
        return
    err_fused, err_stock = np.abs(a - r).max(), np.abs(s - r).max()
    assert err_fused <= factor * err_stock + max(tol["atol"], NOISE_FLOOR * max(scale, 1.0)), (
        "%s: fused differs from stock by %.3g (table bound %.3g) and from float64 by "
        "%.3g, more than %.1fx stock fp32's own error %.3g" % (
            what, err, tol["atol"] + tol["rtol"] * np.abs(s).max(), err_fused, factor,
            err_stock))



# Parameter updates of whole networks after SGD steps (GoogLeNet): the
# gradients of a deep network in fp32 differ from float64 by ~1% for stock
# and fused alike (conditioning: the tests against a float64 oracle show it),
# and max pools route a window's gradient to one input, which near-ties can
# flip between two runs whose activations differ by ulps. Updates are compared
# in relative L2 norm; a real bug in a stage, branch or BN term shows as 10%
# and more.
NETWORK_UPDATE_L2 = 3e-2


def assert_close_l2(actual, expected, bound=NETWORK_UPDATE_L2, what=""):
    a, e = _np(actual).astype(np.float64), _np(expected).astype(np.float64)
    assert a.shape == e.shape, "%s: shape %s != %s" % (what, a.shape, e.shape)
    assert np.isfinite(a).all() == np.isfinite(e).all(), "%s: non-finite values differ" % what
    norm = np.linalg.norm(e)
    err = np.linalg.norm(a - e) / norm if norm > 0 else np.linalg.norm(a)
    assert err <= bound, "%s: relative L2 error %.3g > %.3g" % (what, err, bound)
