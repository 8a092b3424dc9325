"""Property-based parity of the Inception op (hypothesis) against the same
block written with stock Paddle ops (paddle_fastconv.reference), in float32
and, as the oracle where exact arithmetic cancels, in float64.

Random input channels, per-stage output channels, the two "same" kernel sizes
(1..7), per-convolution bias / BatchNorm / ReLU, ReLU after the concat or
not, train and eval, NCHW and NHWC, batch 1..3, spatial sizes down to 1x1
(eval) and 3x3 (training; see inception_cases).
Derandomized, bounded by the hypothesis profile (see test_properties.py)."""
import numpy as np
import paddle
from hypothesis import given
from hypothesis import strategies as st

import paddle_fastconv as pf
from paddle_fastconv.reference import inception_reference
from tolerances import assert_as_accurate


@st.composite
def inception_cases(draw):
    training = draw(st.booleans())
    batch = draw(st.integers(1, 3))
    # Training (batch statistics) draws maps of 3x3 and up: on smaller ones
    # the pool branch's 3x3 window covers most of the map, so its BN sees
    # nearly constant values, a channel of near-zero variance whose backward
    # scales rounding noise by up to 1/sqrt(epsilon) (and BN over two values
    # normalizes to +-1 whatever its input): noise compared with noise.
    # tests/test_inception.py runs 1x1 and 4x3 maps against the stock layers.
    low = 3 if training else 1
    h, w = draw(st.integers(low, 6)), draw(st.integers(low, 6))
    return dict(
        fmt=draw(st.sampled_from(["NCHW", "NHWC"])), training=training, batch=batch,
        hw=(h, w), cin=draw(st.integers(1, 6)),
        chans=[draw(st.integers(1, 5)) for _ in range(6)],
        k3=draw(st.sampled_from([1, 3, 5])), k5=draw(st.sampled_from([1, 3, 5, 7])),
        bias=[draw(st.booleans()) for _ in range(6)],
        bn=[draw(st.booleans()) for _ in range(6)],
        relu=[draw(st.booleans()) for _ in range(6)],
        relu_after_concat=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


def _tensors(c, dtype):
    """The inputs and parameters in `dtype`, from the case's seed."""
    rng = np.random.default_rng(c["seed"])
    cin, ch = c["cin"], c["chans"]
    ins = (cin, cin, ch[1], cin, ch[3], cin)
    ks = (1, 1, c["k3"], 1, c["k5"], 1)
    h, w = c["hw"]
    shape = [c["batch"], cin, h, w] if c["fmt"] == "NCHW" else [c["batch"], h, w, cin]

    def t(a, grad=True):
        x = paddle.to_tensor(np.asarray(a).astype(dtype))
        x.stop_gradient = not grad
        return x
    x = t(rng.normal(0.2, 1.0, shape))
    ws = [t(rng.normal(0, 0.5, (o, i, k, k))) for o, i, k in zip(ch, ins, ks)]
    bs = [t(rng.normal(0, 0.5, o)) if b else None for o, b in zip(ch, c["bias"])]
    bn = [(t(rng.uniform(0.5, 1.5, o)), t(rng.normal(0, 0.3, o)),
           t(rng.normal(0, 0.5, o), False), t(rng.uniform(0.5, 2.0, o), False))
          if b else None for o, b in zip(ch, c["bn"])]
    return x, ws, bs, bn


def _near_float64(actual, oracle64, scale, what):
    """Quantities that are zero in exact arithmetic up to BN's epsilon term
    (see the test): there, fp32 stock and fused both return rounding noise,
    so each is compared with the float64 value, to within fp32 noise of the
    gradients' scale, not with the other's noise."""
    a = actual.numpy().astype(np.float64)
    r = oracle64.numpy()
    err = float(np.abs(a - r).max())
    assert err <= 1e-3 * max(scale, 1.0), "%s: %.3g from float64 (gradient scale %.3g)" % (
        what, err, scale)


@given(inception_cases())
def test_inception_op_matches_stock_ops(c):
    kw = dict(training=c["training"], stage_relu=c["relu"],
              relu_after_concat=c["relu_after_concat"], data_format=c["fmt"])
    runs = []
    for fn, dtype in ((pf.ops.inception, "float32"), (inception_reference, "float32"),
                      (inception_reference, "float64")):
        x, ws, bs, bn = _tensors(c, dtype)
        y = fn(x, ws, bs, bn, **kw)
        dy = np.random.default_rng(c["seed"] + 1).normal(0, 1, y.shape)
        (y * paddle.to_tensor(dy).astype(y.dtype)).sum().backward()
        runs.append((x, ws, bs, bn, y))
    (xf, wf, bf, nf, yf), (xs, wsk, bsk, nsk, ys), (xr, wr, br, nr, yr) = runs
    assert_as_accurate(yf, ys, yr, "out", what="out")
    # The scale of the gradients flowing through the backward, for the noise
    # floor of quantities that cancel (see tolerances.assert_as_accurate): a
    # BN channel of tiny or zero variance (a constant pooled input, say)
    # multiplies what passes through it by up to 1/sqrt(epsilon).
    grads = [xs.grad] + [w.grad for w in wsk] + [e[k].grad for e in nsk if e for k in (0, 1)]
    scale = max(float(np.abs(g.numpy()).max()) for g in grads)
    assert_as_accurate(xf.grad, xs.grad, xr.grad, "grad", what="dx", scale=scale)
    for i in range(6):
        bn_train = c["bn"][i] and c["training"]

        fan_in = wf[i].shape[1] * wf[i].shape[2] * wf[i].shape[3]
        # BN in training: the output is invariant to a filter's scale (so a
        # one-element filter's gradient is rounding noise) and to the conv bias
        # (its gradient is zero up to rounding).
        if bn_train and fan_in == 1:
            _near_float64(wf[i].grad, wr[i].grad, scale, "dW%d" % i)
        else:
            assert_as_accurate(wf[i].grad, wsk[i].grad, wr[i].grad, "grad",
                               what="dW%d" % i, scale=scale)
        if c["bias"][i]:
            if bn_train:
                _near_float64(bf[i].grad, br[i].grad, scale, "dbias%d" % i)
            else:
                assert_as_accurate(bf[i].grad, bsk[i].grad, br[i].grad, "grad",
                                   what="dbias%d" % i, scale=scale)
        if c["bn"][i]:
            for k, name in ((0, "dgamma"), (1, "dbeta")):
                assert_as_accurate(nf[i][k].grad, nsk[i][k].grad, nr[i][k].grad, "grad",
                                   what="%s%d" % (name, i), scale=scale)
            for k, name in ((2, "running_mean"), (3, "running_var")):
                assert_as_accurate(nf[i][k], nsk[i][k], nr[i][k], "stat",
                                   what="%s%d" % (name, i))
