"""Conv + SyncBatchNorm + (residual) + act across data-parallel processes.

The batch statistics are those of the whole global batch: each process runs
the convolution and its local sums (one op), the sums are all-reduced, and a
second op normalizes, adds the residual and applies the activation. Backward
mirrors it: local gradient sums, all-reduce, then the data and weight
gradients. This is what `paddle.nn.SyncBatchNorm` computes (Paddle's own
SyncBatchNorm has no CPU kernel); running statistics are updated from the
global statistics, identically on every process.

Parameter gradients (BN weight and bias, conv weight) are each process's
local contribution, like every other parameter's: `paddle.DataParallel`
all-reduces them. Dygraph only, CPU only (the GPU phases are not built).
"""
import paddle
import paddle.distributed as dist
from paddle.autograd import PyLayer

from ._loader import OPS

_OP = "fastconv_sync_bn"


def world_size(group=None):
    if not dist.is_initialized():
        return 1
    return group.nranks if group is not None else dist.get_world_size()


def _all_reduce(t, group):
    dist.all_reduce(t, group=group)
    return t


class _ConvSyncBNAct(PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, bn_weight, bn_bias, residual, running_mean,
                running_var, conv_attrs, data_format, act, momentum, epsilon, group):
        strides, pads, dilations, groups = conv_attrs
        z, stats = OPS["fastconv_sync_bn_conv_stats"](
            x, weight, bias, strides, pads, dilations, groups, data_format)
        stats = _all_reduce(stats, group)
        count = float(stats[2, 0])
        mean64 = stats[0] / count
        var64 = paddle.clip(stats[1] / count - mean64 * mean64, min=0.0)
        mean = mean64.astype("float32")
        invstd = (1.0 / paddle.sqrt(var64 + epsilon)).astype("float32")
        y = OPS["fastconv_sync_bn_apply"](z, mean, invstd, bn_weight, bn_bias, residual,
                                          data_format, act)
        # paddle.nn.BatchNorm2D's convention, with the biased variance
        paddle.assign(momentum * running_mean + (1 - momentum) * mean, output=running_mean)
        paddle.assign(momentum * running_var + (1 - momentum) * var64.astype("float32"),
                      output=running_var)
        ctx.save_for_backward(x, weight, bn_weight, y, z, mean, invstd)
        ctx.attrs = (conv_attrs, data_format, act, int(round(count)), group,
                     residual.ndim == 4, bias.ndim == 1)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bn_weight, y, z, mean, invstd = ctx.saved_tensor()
        (strides, pads, dilations, groups), data_format, act, count, group, \
            with_res, with_bias = ctx.attrs
        local = OPS["fastconv_sync_bn_backward_reduce"](dy, y, z, mean, data_format, act)
        dbn_bias = local[0].astype("float32")
        dbn_weight = (local[1] * invstd.astype("float64")).astype("float32")
        global_sums = _all_reduce(local.clone(), group)
        dx, dw, dres = OPS["fastconv_sync_bn_backward"](
            dy, y, z, x, weight, mean, invstd, bn_weight, global_sums, strides, pads,
            dilations, groups, data_format, act, count, with_res)
        # conv bias: exactly zero with batch statistics (BN removes the mean)
        dbias = paddle.zeros([dw.shape[0]], dw.dtype) if with_bias else None
        return (dx, dw, dbias, dbn_weight, dbn_bias, dres if with_res else None, None,
                None)


def conv_sync_bn_act(x, weight, bn_weight, bn_bias, running_mean, running_var, bias,
                     residual, strides, pads, dilations, groups, data_format, act,
                     momentum, epsilon, group=None):
    """The training-mode op with statistics over every process of `group`
    (the default group when None). Arguments are validated by ops.conv_bn_act."""
    if not paddle.in_dynamic_mode():
        raise ValueError("%s: sync_bn (a SyncBatchNorm layer) runs in dygraph only; "
                         "static graphs are not supported" % _OP)
    if not x.place.is_cpu_place():
        raise ValueError("%s: argument 'x' is on %s; sync_bn runs on CPU only (the GPU "
                         "phases are not built)" % (_OP, x.place))
    if bias is None:
        bias = paddle.zeros([1, 1], x.dtype)  # placeholder of impossible rank
    if residual is None:
        residual = paddle.zeros([1], x.dtype)
    return _ConvSyncBNAct.apply(
        x, weight, bias, bn_weight, bn_bias, residual, running_mean, running_var,
        (list(strides), list(pads), list(dilations), int(groups)), data_format, act,
        float(momentum), float(epsilon), group)
