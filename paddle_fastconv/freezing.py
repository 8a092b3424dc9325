"""`freeze(model)`: declare a model's weights constant, for inference.

In eval mode the CPU engine keeps each layer's weights in oneDNN's layout,
with BatchNorm folded in, between calls. By default every call checks that
the weights have not changed since (a fingerprint of each weight: an
optimizer step or `set_state_dict` between two calls is always seen, as
Paddle's optimizers do not bump a tensor's version). That check reads every
weight once per forward: about 100 MB for ResNet-50, 8 ms of a 71 ms batch-1
eval forward on the project's 2-core machine (benchmarks/test_bench_freeze.py).

`freeze(model)` skips it for the model's parameters:
- every parameter stops gradients (so no optimizer step can change it), and
  the eval copies built before freezing are dropped, to be rebuilt from the
  current values;
- BatchNorm parameters and running statistics are still compared on every
  call (they are small), so a frozen model may still run in training mode;
- changing a frozen parameter's values by other means (`set_value`,
  `set_state_dict`, in-place tensor ops) is NOT seen: call `unfreeze(model)`
  first, or `freeze(model)` again after the change.

`unfreeze(model)` restores each parameter's `stop_gradient` and the per-call
check (which then sees any change made while frozen).

Programs run by paddle.inference have their own parameter tensors; for a
process whose weights never change, `paddle_fastconv.runtime.set_weight_checks(False)`
trusts every cached copy instead.
"""
import weakref

from paddle import nn

from .ops import _track_eval_copies
from ._loader import CLIB

__all__ = ["freeze", "unfreeze", "is_frozen"]

# id(parameter) -> its stop_gradient before freeze()
_SAVED_STOP_GRADIENT = {}


def _check_model(model, fn):
    if not isinstance(model, nn.Layer):
        raise TypeError("%s: argument 'model' must be a paddle.nn.Layer, got %s"
                        % (fn, type(model).__name__))


def _forget(key):
    _SAVED_STOP_GRADIENT.pop(key, None)


def freeze(model):
    """Declares the parameters of `model` constant (see the module
    docstring); returns the model."""
    _check_model(model, "freeze")
    for p in model.parameters():
        key = id(p)
        if key not in _SAVED_STOP_GRADIENT:
            _SAVED_STOP_GRADIENT[key] = p.stop_gradient
            weakref.finalize(p, _forget, key)
        p.stop_gradient = True
        ptr = p.data_ptr()
        # Copies built from earlier values must not be trusted: drop them
        # (this also clears an older frozen mark), then mark the buffer. The
        # tracking drops the mark again when the parameter is freed.
        CLIB.fastconv_release_eval_weights(ptr)
        CLIB.fastconv_freeze_weight(ptr, 1)
        _track_eval_copies(p)
    return model


def unfreeze(model):
    """Undoes freeze(model): each parameter's stop_gradient as it was before
    and the per-call weight check; returns the model."""
    _check_model(model, "unfreeze")
    for p in model.parameters():
        CLIB.fastconv_freeze_weight(p.data_ptr(), 0)
        saved = _SAVED_STOP_GRADIENT.pop(id(p), None)
        if saved is not None:
            p.stop_gradient = saved
    return model


def is_frozen(model):
    """Whether every parameter of `model` is frozen (a model without
    parameters is not)."""
    _check_model(model, "is_frozen")
    params = model.parameters()
    return bool(params) and all(id(p) in _SAVED_STOP_GRADIENT for p in params)
