"""Functional entry points of the fused ops."""
import math
import weakref

import numpy as np
import paddle

from . import _args
from . import sync_bn as _sync
from ._loader import CLIB, OPS
from .runtime import onednn_available

_OP = "fastconv_conv_bn_act"
# oneDNN's CPU convolution kernels crash on tensors of 2^31 or more elements
# (and so does stock Paddle's CPU convolution); such calls are refused.
CPU_MAX_ELEMENTS = 2 ** 31


def _known(d):
    # In static graphs unknown sizes are -1 or symbolic values.
    return isinstance(d, int) and d >= 0


def float32_on_cpu(x):
    """Whether x is a float32 tensor on the CPU: in dygraph its place, in a
    static graph the current device (where the program will run)."""
    on_cpu = x.place.is_cpu_place() if paddle.in_dynamic_mode() else \
        paddle.get_device() == "cpu"
    return on_cpu and x.dtype == paddle.float32


_PLACEHOLDERS = {}


def _place_key(place):
    """A cheap hashable key of a Place: ("cpu",), ("gpu", id), else its str."""
    if place.is_cpu_place():
        return ("cpu",)
    if place.is_gpu_place():
        return ("gpu", place.gpu_device_id())
    return (str(place),)


def _absent(shape, dtype, place, role=""):
    """The placeholder for an absent bias/residual. In dygraph one read-only
    tensor per (shape, dtype, place, role) is reused rather than allocated per
    call; static graphs get their own constant. `role` keeps placeholders
    that an op updates in place (its version counter moves) apart from those
    that autograd saves for backward (whose version must not move)."""
    if not paddle.in_dynamic_mode():
        return paddle.zeros(shape, dtype=dtype)
    # (str() of a place or dtype costs microseconds, and the ops ask for up
    # to 24 placeholders per call)
    key = (tuple(shape), dtype, _place_key(place), role)
    t = _PLACEHOLDERS.get(key)
    if t is None:
        t = paddle.zeros(shape, dtype=dtype)
        t.stop_gradient = True
        _PLACEHOLDERS[key] = t
    return t


# id(weight) -> the weight buffers whose eval copies (BN folded in, or only
# reordered for oneDNN) the CPU engine caches. When the weight is freed its
# entries are dropped, so the caches never keep a deleted layer's copies alive.
_EVAL_COPY_OWNERS = {}


def _release_eval_copies(key):
    for ptr in _EVAL_COPY_OWNERS.pop(key, ()):
        CLIB.fastconv_release_eval_weights(ptr)


def _track_eval_copies(weight):
    ptr = weight.data_ptr()
    ptrs = _EVAL_COPY_OWNERS.get(id(weight))
    if ptrs is None:
        ptrs = _EVAL_COPY_OWNERS[id(weight)] = set()
        weakref.finalize(weight, _release_eval_copies, id(weight))
    ptrs.add(ptr)


def _autocast_dtype():
    """The low-precision dtype when dygraph paddle.amp.auto_cast (O1/O2) is
    active, else None. Paddle only autocasts on accelerators; on CPU the
    level stays O0."""
    tracer = paddle.base.framework._dygraph_tracer()
    level = getattr(tracer, "_amp_level", None)
    if level is None or str(level).endswith("O0"):
        return None
    return str(getattr(tracer, "_amp_dtype", "float16")).replace("paddle.", "")


def _same_place(a, b):
    """Whether two tensors are on one device. Place._equals: Paddle 2.6's
    Place has no __eq__, and str() of a place costs several microseconds
    (called per parameter per op in the fused models' forward)."""
    return a.place._equals(b.place)


def _autocast(x, *operands):
    """Under auto_cast on GPU: x and the other convolution operands (weight,
    bias, residual; None passes through) in the autocast dtype, as stock
    conv2d gets them; BN parameters and statistics stay fp32, as stock
    batch_norm keeps them. Returns (x, *operands)."""
    dtype = _autocast_dtype()
    if dtype not in ("float16", "bfloat16") or x.place.is_cpu_place():
        return (x,) + operands

    def cast(t):
        if isinstance(t, paddle.Tensor) and t.dtype == paddle.float32:
            return t.astype(dtype)
        return t
    return tuple(cast(t) for t in (x,) + operands)


def _needs_grad(x):
    """Whether backward must compute x's gradient: not for an input that
    stops gradients (the images under a network's first convolution), whose
    backward-data pass is then skipped (the stem's 7x7 convolution over 3
    channels spent about half its backward there)."""
    return not bool(x.stop_gradient)


def _out_size(size, k, stride, dilation, pad_lo, pad_hi):
    span = size + pad_lo + pad_hi - (dilation * (k - 1) + 1)
    return span // stride + 1 if span >= 0 else 0


# The wrappers branch on Python values only (attributes, shapes, the mode),
# never on tensor values: dy2static must not rewrite them (Paddle 2.6's
# rewrite of an early return broke _absent), they run as plain Python while a
# static program is traced and add the op to it.
@paddle.jit.not_to_static
def conv_bn_act(x, weight, bn_weight, bn_bias, running_mean, running_var,
                bias=None, residual=None, stride=1, padding=0, dilation=1,
                groups=1, data_format="NCHW", act="relu", training=True,
                momentum=0.9, epsilon=1e-5, sync_bn=False, group=None):
    """y = act(batch_norm(conv2d(x, weight, bias)) [+ residual]) in one op.

    Same semantics as paddle.nn.functional.conv2d followed by
    paddle.nn.functional.batch_norm(training=training, momentum=momentum,
    epsilon=epsilon), an optional residual add and ReLU (act="relu") or no
    activation (act="none"). In training mode running_mean and running_var
    are updated in place, as BatchNorm2D does. Returns y.

    sync_bn=True (training, dygraph, CPU): batch statistics over every
    process of the data-parallel `group` (default: all), as
    paddle.nn.SyncBatchNorm computes them; see paddle_fastconv.sync_bn.
    """
    op = _OP
    _args.check_tensor(x, "x", op, ndim=4)
    _args.check_tensor(weight, "weight", op, ndim=4)
    if paddle.in_dynamic_mode():
        x, weight, bias, residual = _autocast(x, weight, bias, residual)
    data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS, op)
    act = _args.choice(act, "act", _args.ACTS, op)
    if weight.dtype != x.dtype:
        raise TypeError("%s: argument 'weight' dtype %s differs from x dtype %s"
                        % (op, weight.dtype, x.dtype))
    strides = _args.pair(stride, "stride", op)
    dilations = _args.pair(dilation, "dilation", op)
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError("%s: argument 'groups' must be a positive int, got %r" % (op, groups))
    shape = list(x.shape)
    spatial = shape[2:4] if data_format == "NCHW" else shape[1:3]
    pads = _args.paddings(padding, op, data_format, kernel=list(weight.shape[2:4]),
                          stride=strides, dilation=dilations, spatial=spatial)
    channels = shape[1] if data_format == "NCHW" else shape[3]
    if _known(shape[0]) and shape[0] == 0:
        raise ValueError("%s: argument 'x' has an empty batch (shape %s)" % (op, shape))
    for name, t in (("x", x), ("weight", weight)):
        if any(_known(d) and d == 0 for d in t.shape):
            raise ValueError("%s: argument '%s' has a zero-size dimension (shape %s)"
                             % (op, name, list(t.shape)))
    if _known(channels) and channels != weight.shape[1] * groups:
        raise ValueError(
            "%s: argument 'x' has %d channels (%s) but 'weight' of shape %s with "
            "groups=%d expects %d" % (op, channels, data_format, list(weight.shape),
                                      groups, weight.shape[1] * groups))
    out_channels = weight.shape[0]
    for name, t in (("bn_weight", bn_weight), ("bn_bias", bn_bias),
                    ("running_mean", running_mean), ("running_var", running_var)):
        _args.check_tensor(t, name, op, ndim=1)
        if t.dtype != paddle.float32:
            raise TypeError("%s: argument '%s' must be float32 (BN parameters and "
                            "statistics are kept in fp32), got %s" % (op, name, t.dtype))
        if t.shape[0] != out_channels:
            raise ValueError("%s: argument '%s' must have shape [%d], got %s"
                             % (op, name, out_channels, list(t.shape)))
    if bias is not None:
        _args.check_tensor(bias, "bias", op, ndim=1)
        if bias.dtype != x.dtype or bias.shape[0] != out_channels:
            raise ValueError("%s: argument 'bias' must be %s of shape [%d], got %s %s"
                             % (op, x.dtype, out_channels, bias.dtype, list(bias.shape)))
    if residual is not None:
        _args.check_tensor(residual, "residual", op, ndim=4)
        if residual.dtype != x.dtype:
            raise TypeError("%s: argument 'residual' dtype %s differs from x dtype %s"
                            % (op, residual.dtype, x.dtype))
    if all(_known(v) for v in spatial):
        kh, kw = weight.shape[2], weight.shape[3]
        oh = _out_size(spatial[0], kh, strides[0], dilations[0], pads[0], pads[1])
        ow = _out_size(spatial[1], kw, strides[1], dilations[1], pads[2], pads[3])
        if oh <= 0 or ow <= 0:
            raise ValueError("%s: argument 'x' spatial size %dx%d is too small for kernel "
                             "%dx%d, stride %s, padding %s, dilation %s" % (
                                 op, spatial[0], spatial[1], kh, kw, strides, pads, dilations))
        out_shape = [shape[0], out_channels, oh, ow] if data_format == "NCHW" else \
            [shape[0], oh, ow, out_channels]
        if residual is not None and list(residual.shape) != out_shape and \
                all(_known(v) for v in residual.shape):
            raise ValueError("%s: argument 'residual' must have the output shape %s, got %s"
                             % (op, out_shape, list(residual.shape)))
        if paddle.in_dynamic_mode() and x.place.is_cpu_place() and \
                all(_known(d) for d in shape):
            # (math.prod: numpy's prod took 10-15 us of each call)
            for name, numel in (("x", math.prod(shape)), ("the output", math.prod(out_shape))):
                if numel >= CPU_MAX_ELEMENTS:
                    raise ValueError(
                        "%s: argument 'x' gives %s of %d elements; the CPU convolution "
                        "(oneDNN, as in stock Paddle, which crashes on such inputs) supports "
                        "fewer than 2^31 elements per tensor. Split the batch."
                        % (op, name, numel))
        if training and _known(shape[0]) and shape[0] * oh * ow <= 1:
            raise ValueError("%s: argument 'x' gives one value per channel (output %s); "
                             "training-mode batch statistics need more than one"
                             % (op, out_shape))
    if not isinstance(momentum, (int, float)) or not isinstance(epsilon, (int, float)):
        raise TypeError("%s: arguments 'momentum' and 'epsilon' must be numbers" % op)
    if not epsilon >= 0:
        raise ValueError("%s: argument 'epsilon' must be >= 0, got %r" % (op, epsilon))
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError("%s: argument 'training' must be a bool, got %r" % (op, training))
    if paddle.in_dynamic_mode():
        for name, t in (("weight", weight), ("bn_weight", bn_weight), ("bn_bias", bn_bias),
                        ("running_mean", running_mean), ("running_var", running_var),
                        ("bias", bias), ("residual", residual)):
            if t is not None and not _same_place(t, x):
                raise ValueError("%s: argument '%s' is on %s but 'x' is on %s; move "
                                 "them to one device" % (op, name, t.place, x.place))
    if sync_bn and training and paddle.in_dynamic_mode():
        if _sync.world_size(group) > 1:
            return _sync.conv_sync_bn_act(
                x, weight, bn_weight, bn_bias, running_mean, running_var, bias, residual,
                strides, pads, dilations, groups, data_format, act, momentum, epsilon,
                group)
    # Absent bias/residual travel as 1-element placeholders of a rank the real
    # tensors never have (see the op's registration).
    if bias is None:
        bias = _absent([1, 1], x.dtype, x.place)
    if residual is None:
        residual = _absent([1], x.dtype, x.place)
    if paddle.in_dynamic_mode():
        # The op updates the statistics in place. Hand it detached views that
        # share their memory: autograd marks in-place outputs of an op with
        # differentiable inputs as differentiable, and doing that to the
        # layer's own buffers would make every later in-place update of those
        # leaves an error (and race between threads running the same layer).
        running_mean, running_var = running_mean.detach(), running_var.detach()
        if not training and x.place.is_cpu_place():
            _track_eval_copies(weight)
    outs = OPS[_OP](x, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                    residual, strides, pads, dilations, int(groups), data_format,
                    act, bool(training), float(momentum), float(epsilon), _needs_grad(x))
    return outs[0]


@paddle.jit.not_to_static
def onednn_conv2d(x, weight, stride=1, padding=0, dilation=1, groups=1,
                  data_format="NCHW", cache_weights=None, algorithm="auto"):
    """paddle.nn.functional.conv2d without bias, on oneDNN (float32 CPU),
    with backward. Runs the convolutions that have no BatchNorm to fuse (the
    paddle.vision GoogLeNet's), and is the benchmarks' yardstick for the
    fused epilogue's cost.

    cache_weights: keep the filters' oneDNN copy between calls (checked
    against a fingerprint of the weight on every call, rebuilt when it
    changed). None (default): in dygraph when no gradient is taken (under
    paddle.no_grad() or for a weight that stops gradients), where the weight
    is not about to change; never in static graphs.

    algorithm: "auto" (default): with cached weights, the convolutions that
    qualify run on this package's own kernels, 3x3 stride-1 ones on the
    Winograd F(4x4, 3x3) kernel and expanding NHWC 1x1 ones on the 1x1
    kernel (see the README's runtime controls), the rest on oneDNN's direct
    kernels; "direct": oneDNN's direct kernels always."""
    op = "fastconv_onednn_conv2d"
    algorithm = _args.choice(algorithm, "algorithm", ("auto", "direct"), op)
    _args.check_tensor(x, "x", op, ndim=4)
    _args.check_tensor(weight, "weight", op, ndim=4)
    data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS, op)
    strides = _args.pair(stride, "stride", op)
    dilations = _args.pair(dilation, "dilation", op)
    shape = list(x.shape)
    spatial = shape[2:4] if data_format == "NCHW" else shape[1:3]
    pads = _args.paddings(padding, op, data_format, kernel=list(weight.shape[2:4]),
                          stride=strides, dilation=dilations, spatial=spatial)
    if cache_weights is None:
        cache_weights = paddle.in_dynamic_mode() and not (
            paddle.is_grad_enabled() and not weight.stop_gradient)
    elif not isinstance(cache_weights, (bool, np.bool_)):
        raise TypeError("%s: argument 'cache_weights' must be a bool or None, got %r"
                        % (op, cache_weights))
    cache_weights = bool(cache_weights) and paddle.in_dynamic_mode()
    if cache_weights and x.place.is_cpu_place():
        _track_eval_copies(weight)
    return OPS[op](x, weight, strides, pads, dilations, int(groups), data_format,
                   _needs_grad(x), cache_weights, algorithm == "auto")


@paddle.jit.not_to_static
def linear(x, weight, bias=None):
    """paddle.nn.functional.linear: y = x @ weight + bias, weight
    [in_features, out_features], any leading dimensions on x; with backward.
    Float32 CPU tensors (with the oneDNN engine built) run on oneDNN's sgemm
    (batch 8 on GoogLeNet's and ResNet-50's head shapes: 2.9-4.3x faster
    than paddle.nn.Linear in eval, benchmarks/test_bench_linear.py);
    everything else, and inputs with no elements, take Paddle's linear (on
    GPU: cuBLAS)."""
    op = "fastconv_linear"
    _args.check_tensor(x, "x", op)
    _args.check_tensor(weight, "weight", op, ndim=2)
    if bias is not None:
        _args.check_tensor(bias, "bias", op, ndim=1)
    if len(x.shape) == 0:
        raise ValueError("%s: argument 'x' must have at least 1 dimension, got a scalar" % op)
    k, n = weight.shape
    if _known(x.shape[-1]) and _known(k) and x.shape[-1] != k:
        raise ValueError("%s: argument 'x' has %d features in its last dimension (shape "
                         "%s), weight expects %d" % (op, x.shape[-1], list(x.shape), k))
    if bias is not None and _known(bias.shape[0]) and _known(n) and bias.shape[0] != n:
        raise ValueError("%s: argument 'bias' must have out_features = %d values, got "
                         "shape %s" % (op, n, list(bias.shape)))
    empty = any(_known(d) and d == 0 for d in list(x.shape) + [n])
    fast = float32_on_cpu(x) and weight.dtype == paddle.float32 and (
        bias is None or bias.dtype == paddle.float32) and onednn_available()
    if empty or not fast:
        return paddle.nn.functional.linear(x, weight, bias)
    b = bias if bias is not None else _absent([1, 1], x.dtype, x.place)
    return OPS[op](x, weight, b, _needs_grad(x))


@paddle.jit.not_to_static
def to_channels_last(x):
    """x (4-D, NCHW) as a contiguous NHWC tensor: x.transpose([0, 2, 3, 1]).
    Float32 CPU tensors (with the oneDNN engine built) take one oneDNN
    reorder, a sixth of the time of Paddle's transpose and contiguous copy
    for a batch of 224x224 images; others take Paddle's transpose. With
    backward (the inverse copy)."""
    return _relayout(x, True)


@paddle.jit.not_to_static
def to_channels_first(x):
    """x (4-D, NHWC) as a contiguous NCHW tensor: x.transpose([0, 3, 1, 2]);
    as to_channels_last."""
    return _relayout(x, False)


def _relayout(x, to_nhwc):
    op = "fastconv_relayout"
    _args.check_tensor(x, "x", op, ndim=4)
    if float32_on_cpu(x) and onednn_available():
        return OPS[op](x, bool(to_nhwc))
    return x.transpose([0, 2, 3, 1] if to_nhwc else [0, 3, 1, 2])


@paddle.jit.not_to_static
def max_pool2d(x, kernel_size, stride=None, padding=0, data_format="NCHW"):
    """Max pooling of a float32 CPU tensor (floor mode; padded positions
    never win; a window's gradient goes to its first maximum, as in Paddle),
    with backward: paddle.nn.functional.max_pool2d(x, kernel_size, stride,
    padding, data_format=...) at a fraction of its CPU time. Used by fuse()
    for the ResNet stem and GoogLeNet's pools."""
    data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS,
                               "fastconv_max_pool")
    op = "fastconv_max_pool_nhwc" if data_format == "NHWC" else "fastconv_max_pool_nchw"
    return OPS[op](x, *_pool_args(x, kernel_size, stride, padding, op))[0]


def _pool_args(x, kernel_size, stride, padding, op):
    """The checked [kh, kw], [sh, sw], [ph, pw] of a pool op on float32 x."""
    _args.check_tensor(x, "x", op, ndim=4)
    k = _args.pair(kernel_size, "kernel_size", op)
    s = _args.pair(stride if stride is not None else kernel_size, "stride", op)
    p = _args.pair(padding, "padding", op, minimum=0)
    if p[0] >= k[0] or p[1] >= k[1]:
        raise ValueError("%s: argument 'padding' %s must be smaller than kernel_size %s"
                         % (op, p, k))
    if x.dtype != paddle.float32:
        raise TypeError("%s: argument 'x' must be float32, got %s" % (op, x.dtype))
    return k, s, p


def max_pool2d_nhwc(x, kernel_size, stride=None, padding=0):
    """max_pool2d(..., data_format="NHWC")."""
    return max_pool2d(x, kernel_size, stride, padding, data_format="NHWC")


@paddle.jit.not_to_static
def avg_pool2d_nhwc_to_nchw(x, kernel_size, stride=None, padding=0, exclusive=True):
    """Average pooling of an NHWC float32 CPU tensor into an NCHW output, with
    backward: paddle.nn.functional.avg_pool2d(x.transpose([0, 3, 1, 2]),
    kernel_size, stride, padding, exclusive=exclusive) (floor mode) in one
    pass, without transposing the input. Used by fuse(..., channels_last=True)
    for GoogLeNet's head pools, whose heads take NCHW maps."""
    op = "fastconv_avg_pool_nhwc_to_nchw"
    k, s, p = _pool_args(x, kernel_size, stride, padding, op)
    if not isinstance(exclusive, (bool, np.bool_)):
        raise TypeError("%s: argument 'exclusive' must be a bool, got %r" % (op, exclusive))
    h, w = x.shape[1], x.shape[2]
    if min(x.shape) == 0 or (h > 0 and h + 2 * p[0] < k[0]) or (w > 0 and w + 2 * p[1] < k[1]):
        raise ValueError("%s: argument 'x' of shape %s gives no output with kernel_size %s "
                         "and padding %s" % (op, list(x.shape), k, p))
    return OPS[op](x, k, s, p, bool(exclusive))


INCEPTION_STAGES = ("1x1", "3x3 reduce", "3x3", "5x5 reduce", "5x5", "pool projection")


def _stage_list(value, name, op):
    if value is None:
        return [None] * 6
    if not isinstance(value, (list, tuple)) or len(value) != 6:
        raise ValueError("%s: argument '%s' must be a list of 6 entries (one per convolution: "
                         "%s), got %r" % (op, name, ", ".join(INCEPTION_STAGES), value))
    return list(value)


def _cached_args(cache, sig, check, slot="entry"):
    """The op arguments for signature `sig` from the caller's `cache` dict,
    else check() (the full checks) stored there when sig is not None. The
    entry is one (sig, args) object under `slot`, so threads sharing a layer
    agree."""
    entry = cache.get(slot) if sig is not None else None
    if entry is not None and entry[0] == sig:
        return entry[1]
    args = check()
    if sig is not None:
        cache[slot] = (sig, args)
    return args


@paddle.jit.not_to_static
def inception(x, weights, biases=None, bn=None, training=True, momentum=0.9,
              epsilon=1e-5, stage_relu=(False,) * 6, relu_after_concat=True,
              data_format="NCHW", cache=None):
    """One Inception block in one op (CPU: float32; GPU: float32, float16,
    bfloat16 with float32 BN parameters and statistics, as under auto_cast):

        out = concat([s0(x), s2(s1(x)), s4(s3(x)), s5(max_pool3x3(x))], channel axis)
        out = relu(out) if relu_after_concat

    where stage i is conv2d(weights[i]) ("same" padding, stride 1) + biases[i]
    (if given), then batch_norm with bn[i] = (weight, bias, running_mean,
    running_var) (if given; training/eval semantics of paddle.nn.BatchNorm2D,
    running statistics updated in place when training), then ReLU if
    stage_relu[i]. Stages: 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool
    projection; stages 0, 1, 3 and 5 must be 1x1, stages 2 and 4 square with
    an odd size. biases, bn: None or lists of 6 whose entries may be None.
    Each branch writes its slice of the output directly (no concat pass).

    cache: an optional dict the caller keeps per block (the fused layers
    do); for float32 CPU inputs in dygraph the checked arguments are reused
    while the block holds the same tensors and attributes (see
    resnet_block).
    """
    op = "fastconv_inception"

    def check():
        return _check_inception(x, weights, biases, bn, training, momentum, epsilon,
                                stage_relu, relu_after_concat, data_format, op)
    if cache is not None and _cacheable_input(x):
        sig = _inception_signature(x, weights, biases, bn, training, momentum, epsilon,
                                   stage_relu, relu_after_concat, data_format)
        return _run_inception(x, _cached_args(cache, sig, check), training, op)
    args = check()  # (before x is touched: bad input gets the checks' message)
    if paddle.in_dynamic_mode():
        x = _autocast(x)[0]
    return _run_inception(x, args, training, op)


def _tensor_key(t):
    """Identity, dtype and (CPU) device of an optional tensor for the
    argument caches; False when it is not a CPU tensor (no caching)."""
    if t is None:
        return None
    if not isinstance(t, paddle.Tensor) or not t.place.is_cpu_place():
        return False
    return id(t), t.dtype


def _inception_signature(x, weights, biases, bn, training, momentum, epsilon, stage_relu,
                         relu_after_concat, data_format):
    """What inception's checks depend on (see _block_signature); None when
    an argument is not of the shape the cache handles."""
    lists = (weights, biases, bn, stage_relu)
    if not all(isinstance(v, (list, tuple)) and len(v) == 6 for v in lists if v is not None) \
            or weights is None:
        return None
    sig = [x.dtype, data_format, bool(training), momentum, epsilon,
           tuple(bool(r) for r in stage_relu), bool(relu_after_concat)]
    for i in range(6):
        w = weights[i]
        keys = [_tensor_key(w), _tensor_key(biases[i] if biases is not None else None)]
        entry = bn[i] if bn is not None else None
        if entry is not None:
            if not isinstance(entry, (list, tuple)) or len(entry) != 4:
                return None
            keys += [_tensor_key(t) for t in entry]
        if w is None or False in keys:
            return None
        sig.append((tuple(keys), w.data_ptr()))
    return tuple(sig)


def _check_inception(x, weights, biases, bn, training, momentum, epsilon, stage_relu,
                     relu_after_concat, data_format, op):
    """inception's checks; returns the op's arguments after x (running
    statistics not yet detached)."""
    _args.check_tensor(x, "x", op, ndim=4)
    data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS, op)
    weights = _stage_list(weights, "weights", op)
    biases = _stage_list(biases, "biases", op)
    bn = _stage_list(bn, "bn", op)
    relus = _stage_list(list(stage_relu), "stage_relu", op)
    for i, w in enumerate(weights):
        _args.check_tensor(w, "weights[%d]" % i, op, ndim=4)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError("%s: argument 'training' must be a bool, got %r" % (op, training))
    if not isinstance(momentum, (int, float)) or not isinstance(epsilon, (int, float)):
        raise TypeError("%s: arguments 'momentum' and 'epsilon' must be numbers" % op)
    if not epsilon >= 0:
        raise ValueError("%s: argument 'epsilon' must be >= 0, got %r" % (op, epsilon))
    if paddle.in_dynamic_mode():
        x, *convs = _autocast(x, *weights, *biases)
        weights, biases = convs[:6], convs[6:]
    bias_in = [b if b is not None else _absent([1, 1], x.dtype, x.place) for b in biases]
    scale, shift, mean, var = [], [], [], []
    for i, entry in enumerate(bn):
        if entry is None:
            p = _absent([1, 1], paddle.float32, x.place)
            # (static graphs: a separate variable for each in-place output)
            entry = (p, p) + tuple(_absent([1, 1], paddle.float32, x.place,
                                           role="in-place statistics") for _ in range(2))
        elif not isinstance(entry, (list, tuple)) or len(entry) != 4:
            raise ValueError("%s: argument 'bn' entry %d must be None or (weight, bias, "
                             "running_mean, running_var)" % (op, i))
        scale.append(entry[0])
        shift.append(entry[1])
        mean.append(entry[2])
        var.append(entry[3])
    if paddle.in_dynamic_mode() and not training and x.place.is_cpu_place():
        # eval caches the filters' oneDNN copies, keyed by stages 0, 2, 4, 5
        # (the merged 1x1 convolution's by stage 0)
        for i in (0, 2, 4, 5):
            _track_eval_copies(weights[i])
    return (list(weights), bias_in, scale, shift, mean, var, data_format, float(momentum),
            float(epsilon), [int(bool(r)) for r in relus], bool(relu_after_concat))


def _run_inception(x, args, training, op):
    weights, bias_in, scale, shift, mean, var, data_format, momentum, epsilon, relus, \
        relu_after_concat = args
    if paddle.in_dynamic_mode():
        # fresh detached views of the statistics: see _BlockCall
        mean = [t.detach() for t in mean]
        var = [t.detach() for t in var]
    outs = OPS[op](x, *weights, *bias_in, *scale, *shift, mean, var, data_format,
                   bool(training), momentum, epsilon, relus, relu_after_concat)
    return outs[0]


BLOCK_SLOTS = ("conv1", "conv2", "conv3", "downsample")


class BlockConv:
    """One Conv+BatchNorm stage of `resnet_block`: the convolution's weight
    (no bias) and attributes, and the BatchNorm's parameters, running
    statistics, momentum and epsilon (paddle.nn.BatchNorm2D semantics)."""

    __slots__ = ("weight", "bn_weight", "bn_bias", "running_mean", "running_var",
                 "stride", "padding", "dilation", "groups", "momentum", "epsilon")

    def __init__(self, weight, bn_weight, bn_bias, running_mean, running_var, stride=1,
                 padding=0, dilation=1, groups=1, momentum=0.9, epsilon=1e-5):
        self.weight, self.bn_weight, self.bn_bias = weight, bn_weight, bn_bias
        self.running_mean, self.running_var = running_mean, running_var
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.momentum, self.epsilon = groups, momentum, epsilon


def _block_slot(stage, slot, x, data_format, op):
    """The op's arguments for one present slot: (weight, scale, shift, mean,
    var, strides, pads, dilations, groups, momentum, epsilon)."""
    if not isinstance(stage, BlockConv):
        raise TypeError("%s: argument '%s' must be a paddle_fastconv.ops.BlockConv, got %s"
                        % (op, slot, type(stage).__name__))
    w = stage.weight
    _args.check_tensor(w, "%s.weight" % slot, op, ndim=4)
    if paddle.in_dynamic_mode():
        w = _autocast(x, w)[1]
    if w.dtype != x.dtype:
        raise TypeError("%s: argument '%s.weight' dtype %s differs from x dtype %s"
                        % (op, slot, w.dtype, x.dtype))
    if any(_known(d) and d == 0 for d in w.shape):
        raise ValueError("%s: argument '%s.weight' has a zero-size dimension (shape %s)"
                         % (op, slot, list(w.shape)))
    bn = (stage.bn_weight, stage.bn_bias, stage.running_mean, stage.running_var)
    for name, t in zip(("bn_weight", "bn_bias", "running_mean", "running_var"), bn):
        _args.check_tensor(t, "%s.%s" % (slot, name), op, ndim=1)
        if t.dtype != paddle.float32:
            raise TypeError("%s: argument '%s.%s' must be float32 (BN parameters and "
                            "statistics are kept in fp32), got %s" % (op, slot, name, t.dtype))
    strides = _args.pair(stage.stride, "%s.stride" % slot, op)
    dilations = _args.pair(stage.dilation, "%s.dilation" % slot, op)
    groups = stage.groups
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError("%s: argument '%s.groups' must be a positive int, got %r"
                         % (op, slot, groups))
    if isinstance(stage.padding, str) and stage.padding.upper() == "SAME":
        raise ValueError("%s: argument '%s.padding' 'SAME' is not supported by the block "
                         "op (it depends on the input size); give explicit padding"
                         % (op, slot))
    pads = _args.paddings(stage.padding, op, data_format, kernel=list(w.shape[2:4]),
                          stride=strides, dilation=dilations)
    for name, v in (("momentum", stage.momentum), ("epsilon", stage.epsilon)):
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise TypeError("%s: argument '%s.%s' must be a number, got %r"
                            % (op, slot, name, v))
    if not stage.epsilon >= 0:
        raise ValueError("%s: argument '%s.epsilon' must be >= 0, got %r"
                         % (op, slot, stage.epsilon))
    if paddle.in_dynamic_mode():
        for t, name in ((w, "weight"),) + tuple(zip(bn, ("bn_weight", "bn_bias",
                                                          "running_mean", "running_var"))):
            if not _same_place(t, x):
                raise ValueError("%s: argument '%s.%s' is on %s but 'x' is on %s; move "
                                 "them to one device" % (op, slot, name, t.place, x.place))
    return (w,) + tuple(bn) + (strides, list(pads), dilations, int(groups),
                               float(stage.momentum), float(stage.epsilon))


def _hashable(v):
    return tuple(_hashable(e) for e in v) if isinstance(v, (list, tuple)) else v


def _block_signature(x, stages, training, data_format):
    """What the checks of resnet_block depend on, for a CPU x in dygraph: the
    stages' tensors (identity, buffer, dtype, device) and attributes. None
    when the stages are not all BlockConv (the full checks then raise)."""
    sig = [x.dtype, data_format, bool(training)]
    for stage in stages:
        if stage is None:
            sig.append(None)
            continue
        if not isinstance(stage, BlockConv):
            return None
        keys = tuple(_tensor_key(t) for t in (stage.weight, stage.bn_weight, stage.bn_bias,
                                              stage.running_mean, stage.running_var))
        if None in keys or False in keys:
            return None
        sig.append((keys, stage.weight.data_ptr(), _hashable(stage.stride),
                    _hashable(stage.padding), _hashable(stage.dilation), stage.groups,
                    stage.momentum, stage.epsilon))
    return tuple(sig)


@paddle.jit.not_to_static
def resnet_block(x, convs, downsample=None, training=True, data_format="NCHW", cache=None):
    """A whole ResNet block in one op (paddle.vision's BasicBlock or
    BottleneckBlock):

        h = x
        for conv in convs[:-1]: h = relu(BN(conv(h)))
        shortcut = x if downsample is None else BN(downsample_conv(x))
        out = relu(BN(convs[-1](h)) + shortcut)

    convs: 2 (BasicBlock) or 3 (BottleneckBlock) `BlockConv` stages;
    downsample: None (identity shortcut: x must have the output's shape) or a
    `BlockConv`. Training uses batch statistics and updates every stage's
    running statistics in place; eval folds BN into the convolutions. On CPU
    (float32, oneDNN), NCHW blocks in eval run their stages in NHWC
    internally; on GPU the stages run on cuDNN with the fused BN kernels
    (fp32/fp16/bf16). Training keeps each stage's convolution and ReLU
    outputs for backward; eval keeps none (backward recomputes them).
    Returns out.

    cache: an optional dict the caller keeps per block (the fused layers
    do): for float32 CPU inputs in dygraph, the checked arguments are kept
    in it and reused by later calls whose stages hold the same tensors (same
    objects, buffers, dtypes, devices) and attributes, skipping the Python
    checks (about 0.1 ms per call on the project's machine).
    """
    op = "fastconv_resnet_block"
    stages = list(convs) + [None] * (3 - len(convs)) + [downsample] \
        if isinstance(convs, (list, tuple)) and len(convs) in (2, 3) else None

    def check():
        return _BlockCall(*_check_block(x, convs, downsample, training, data_format, op),
                          training)
    if cache is not None and stages is not None and _cacheable_input(x):
        sig = _block_signature(x, stages, training, data_format)
        return _cached_args(cache, sig, check)(x)
    call = check()  # (before x is touched: bad input gets the checks' message)
    if paddle.in_dynamic_mode():
        x = _autocast(x)[0]
    return call(x)


def _cacheable_input(x):
    """Whether the argument caches apply to x: a non-empty 4-D float32 CPU
    tensor in dygraph (float32 on the CPU: nothing to autocast)."""
    return paddle.in_dynamic_mode() and isinstance(x, paddle.Tensor) and \
        x.place.is_cpu_place() and x.dtype == paddle.float32 and len(x.shape) == 4 and \
        x.shape[0] > 0


def _checked_block_call(x, convs, downsample=None, training=True, data_format="NCHW"):
    """resnet_block's checks for these arguments, done once: returns a
    callable `call(x)` that runs the op on them (for a float32 CPU x in
    dygraph; the fused blocks keep it while their layers are unchanged)."""
    return _BlockCall(*_check_block(x, convs, downsample, training, data_format,
                                    "fastconv_resnet_block"), training)


def _check_block(x, convs, downsample, training, data_format, op):
    """resnet_block's checks; returns the op's per-slot arguments (running
    statistics not yet detached) and the data format."""
    _args.check_tensor(x, "x", op, ndim=4)
    data_format = _args.choice(data_format, "data_format", _args.DATA_FORMATS, op)
    if not isinstance(convs, (list, tuple)) or len(convs) not in (2, 3):
        raise ValueError("%s: argument 'convs' must be a list of 2 (BasicBlock) or 3 "
                         "(BottleneckBlock) BlockConv stages, got %r" % (op, convs))
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError("%s: argument 'training' must be a bool, got %r" % (op, training))
    if _known(x.shape[0]) and x.shape[0] == 0:
        raise ValueError("%s: argument 'x' has an empty batch (shape %s)" % (op, list(x.shape)))
    if paddle.in_dynamic_mode():
        x = _autocast(x)[0]  # (the weights are checked against its dtype)
    stages = list(convs) + [None] * (3 - len(convs)) + [downsample]
    slots = []
    for slot, stage in zip(BLOCK_SLOTS, stages):
        if stage is None:
            p = _absent([1, 1], paddle.float32, x.place)
            # (static graphs: a separate variable for each in-place output)
            stats = tuple(_absent([1, 1], paddle.float32, x.place,
                                  role="in-place statistics") for _ in range(2))
            slots.append((_absent([1, 1], x.dtype, x.place), p, p) + stats +
                         ([1, 1], [0, 0, 0, 0], [1, 1], 1, 0.9, 1e-5))
        else:
            slots.append(_block_slot(stage, slot, x, data_format, op))
    if paddle.in_dynamic_mode() and not training and x.place.is_cpu_place():
        for s, stage in zip(slots, stages):
            if stage is not None:
                _track_eval_copies(s[0])
    return slots, data_format


class _BlockCall:
    """resnet_block's checked per-slot arguments, laid out once as the op's
    inputs and attributes; calling it runs the op on x."""

    __slots__ = ("head", "means", "variances", "tail")

    def __init__(self, slots, data_format, training):
        col = list(zip(*slots))
        flat = lambda vals: [int(v) for vs in vals for v in vs]  # noqa: E731
        self.head = col[0] + col[1] + col[2]  # weights, BN scales, BN shifts
        self.means, self.variances = col[3], col[4]
        self.tail = (data_format, bool(training), flat(col[5]), flat(col[6]), flat(col[7]),
                     list(col[8]), list(col[9]), list(col[10]))

    def __call__(self, x):
        if paddle.in_dynamic_mode():
            # Fresh detached views of the running statistics: the op updates
            # them in place, autograd marks an in-place output of an op with
            # differentiable inputs as differentiable, and a layer's own
            # buffer (or a shared placeholder) marked so would refuse its
            # next in-place update.
            means = [t.detach() for t in self.means]
            variances = [t.detach() for t in self.variances]
        else:
            means, variances = list(self.means), list(self.variances)
        return OPS["fastconv_resnet_block"](x, *self.head, means, variances, *self.tail)[0]

