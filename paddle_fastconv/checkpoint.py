"""Checkpoints across stock and fused models.

Model weights need nothing: fused layers keep the stock layers' parameters
and state-dict keys, so `model.state_dict()` files load in either direction.

Optimizer state is keyed by each parameter's internal *name*
(`conv2d_3.w_0_velocity_0`), which Paddle numbers in creation order. Two
models built the same way in fresh processes (a stock `resnet50()` and
`paddle_fastconv.models.resnet50(fused=True)`, which builds the stock model and
fuses it) get the same names, so their optimizer states load as they are.
When the names differ (both models built in one process, or built in another
order), `remap_optimizer_state` renames the entries through the models'
structured keys.
"""
import paddle

__all__ = ["remap_optimizer_state"]


def remap_optimizer_state(state, src_model, dst_model):
    """Returns a copy of an optimizer `state_dict()` taken with `src_model`'s
    parameters, renamed for the same optimizer over `dst_model`'s parameters.

    The models must have the same structured parameter keys (a stock model and
    its fused counterpart do). Entries that belong to no parameter (learning
    rate scheduler, step counters) are kept as they are."""
    for name, m in (("src_model", src_model), ("dst_model", dst_model)):
        if not isinstance(m, paddle.nn.Layer):
            raise TypeError("remap_optimizer_state: argument '%s' must be a paddle.nn.Layer, "
                            "got %s" % (name, type(m).__name__))
    src = dict(src_model.named_parameters())
    dst = dict(dst_model.named_parameters())
    if sorted(src) != sorted(dst):
        missing = sorted(set(src) ^ set(dst))[:5]
        raise ValueError("remap_optimizer_state: the models' parameter keys differ (e.g. %s)"
                         % missing)
    rename = {src[k].name: dst[k].name for k in src}
    # Longest names first: 'conv2d_1.w_0' must not match inside 'conv2d_11.w_0'.
    olds = sorted(rename, key=len, reverse=True)

    def new_key(key):
        for old in olds:
            if key == old or key.startswith(old + "_"):
                return rename[old] + key[len(old):]
        return key

    out = {}
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            out[key] = {new_key(k): v for k, v in value.items()}
        else:
            out[new_key(key)] = value
    return out
