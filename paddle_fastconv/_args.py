"""Argument normalization and validation shared by the functional ops and the
layers. Errors name the op and the argument, and are raised before anything
reaches C++."""
import numbers

import paddle

DATA_FORMATS = ("NCHW", "NHWC")
ACTS = ("relu", "none")


def pair(value, name, op, minimum=1):
    """int or 2-sequence of ints -> [a, b], each >= minimum."""
    if type(value) in (list, tuple) and len(value) == 2 and type(value[0]) is int \
            and type(value[1]) is int and min(value) >= minimum:
        return [value[0], value[1]]  # the common case, without ABC checks (per op call)
    if type(value) is int and value >= minimum:
        return [value, value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = [int(value)] * 2
    elif isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        value = [int(v) for v in value]
    else:
        raise TypeError("%s: argument '%s' must be an int or a pair of ints, got %r"
                        % (op, name, value))
    if min(value) < minimum:
        raise ValueError("%s: argument '%s' must be >= %d, got %r"
                         % (op, name, minimum, value))
    return value


def _same_pads(size, k, stride, dilation):
    out = -(-size // stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return [total // 2, total - total // 2]


def paddings(padding, op, data_format="NCHW", kernel=None, stride=None,
             dilation=None, spatial=None):
    """Paddle's padding forms -> [top, bottom, left, right].

    Accepts an int, [h, w], [top, bottom, left, right], the 4-D nested form
    of paddle.nn.Conv2D and the strings 'VALID' / 'SAME' ('SAME' needs the
    input's spatial size)."""
    if type(padding) in (list, tuple) and len(padding) == 4 and \
            all(type(v) is int and v >= 0 for v in padding):
        return list(padding)  # the common cases, without ABC checks (per op call)
    if type(padding) in (list, tuple) and len(padding) == 2 and \
            all(type(v) is int and v >= 0 for v in padding):
        return [padding[0], padding[0], padding[1], padding[1]]
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return [0, 0, 0, 0]
        if mode == "SAME":
            h = _same_pads(spatial[0], kernel[0], stride[0], dilation[0])
            w = _same_pads(spatial[1], kernel[1], stride[1], dilation[1])
            return h + w
        raise ValueError("%s: argument 'padding' string must be 'SAME' or "
                         "'VALID', got %r" % (op, padding))
    if isinstance(padding, numbers.Integral) and not isinstance(padding, bool):
        p = [int(padding)] * 4
    elif isinstance(padding, (list, tuple)) and len(padding) == 2 and all(
            isinstance(v, numbers.Integral) for v in padding):
        p = [int(padding[0])] * 2 + [int(padding[1])] * 2
    elif isinstance(padding, (list, tuple)) and len(padding) == 4 and all(
            isinstance(v, numbers.Integral) for v in padding):
        p = [int(v) for v in padding]
    elif isinstance(padding, (list, tuple)) and len(padding) == 4 and all(
            isinstance(v, (list, tuple)) and len(v) == 2 for v in padding):
        # paddle.nn.Conv2D's nested form: one [before, after] pair per dim.
        pairs = [[int(a), int(b)] for a, b in padding]
        batch, chan = (0, 1) if data_format == "NCHW" else (0, 3)
        h, w = (2, 3) if data_format == "NCHW" else (1, 2)
        if pairs[batch] != [0, 0] or pairs[chan] != [0, 0]:
            raise ValueError("%s: argument 'padding' may only pad the spatial "
                             "dimensions, got %r" % (op, padding))
        p = pairs[h] + pairs[w]
    else:
        raise TypeError("%s: argument 'padding' must be an int, [h, w], "
                        "[top, bottom, left, right], 'SAME' or 'VALID', got %r"
                        % (op, padding))
    if min(p) < 0:
        raise ValueError("%s: argument 'padding' must be non-negative, got %r"
                         % (op, padding))
    return p


def choice(value, name, options, op):
    if not isinstance(value, str) or value not in options:
        raise ValueError("%s: argument '%s' must be one of %s, got %r"
                         % (op, name, ", ".join(repr(o) for o in options), value))
    return value


def check_tensor(t, name, op, ndim=None, float_only=True):
    if not isinstance(t, (paddle.Tensor, paddle.static.Variable)) and not _is_value(t):
        raise TypeError("%s: argument '%s' must be a paddle.Tensor, got %s"
                        % (op, name, type(t).__name__))
    if ndim is not None and len(t.shape) != ndim:
        raise ValueError("%s: argument '%s' must be %d-D, got shape %s"
                         % (op, name, ndim, list(t.shape)))
    if float_only and t.dtype not in (paddle.float32, paddle.float16, paddle.bfloat16):
        raise TypeError("%s: argument '%s' must be float32, float16 or bfloat16, "
                        "got %s" % (op, name, t.dtype))


def _is_value(t):
    # PIR static-graph values (paddle.pir.Value) in to_static programs.
    pir = getattr(paddle, "pir", None)
    return pir is not None and isinstance(t, getattr(pir, "Value", ()))
