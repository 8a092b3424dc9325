"""Cheap keys of stock layers' state, for the fused layers' reused op calls.

A fused layer checks its arguments once and reuses the checked op call
while the key of its stock sublayers is unchanged. The key holds the layers
themselves (compared by identity), copies of their list attributes (an
in-place edit is seen) and each tensor's id and buffer address (a replaced
tensor, or one whose dtype or device changed in place, has a new buffer).
Plain attributes and the layers' own parameter dicts are read directly: a
Layer's attribute lookup of a parameter or sublayer is a Python call.
"""


def snapshot(v):
    """A list attribute as a tuple (a copy)."""
    return tuple(snapshot(e) for e in v) if isinstance(v, (list, tuple)) else v


def tensors_key(*dicts):
    """(id, buffer address) of each tensor in the given parameter or buffer
    dicts."""
    return tuple((id(t), t.data_ptr()) for d in dicts for t in d.values() if t is not None)


def conv_bn_key(conv, bn, geometry=True):
    """Everything a fused op reads from a Conv2D and its BatchNorm (bn may be
    None); geometry=False leaves out the conv's stride, padding, dilation,
    groups and layout, for ops that do not read them (the Inception op
    always runs stride 1 with "same" padding; the Inception layers build
    their convolutions so)."""
    if bn is None:
        key = (conv, None, tensors_key(conv._parameters))
    else:
        key = (conv, bn, tensors_key(conv._parameters, bn._parameters, bn._buffers),
               bn.training, bn._momentum, bn._epsilon, bn._use_global_stats,
               bn._data_format, bn._num_features)
    if not geometry:
        return key
    w = conv._parameters.get("weight")
    return key + (tuple(w.shape) if w is not None else None, snapshot(conv._stride),
                  snapshot(conv._updated_padding), conv._padding_algorithm,
                  snapshot(conv._dilation), conv._groups, conv._data_format,
                  conv._padding_mode)
