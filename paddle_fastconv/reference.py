"""Plain-Paddle reference implementations of the fused ops.

They define what each fused op computes, document it in the most direct
form, and serve as the tests' oracle next to the stock layers."""
import paddle.nn.functional as F


def conv_bn_act_reference(x, weight, bn_weight, bn_bias, running_mean, running_var,
                          bias=None, residual=None, stride=1, padding=0, dilation=1,
                          groups=1, data_format="NCHW", act="relu", training=True,
                          momentum=0.9, epsilon=1e-5):
    """conv2d -> batch_norm -> (+ residual) -> relu, with stock Paddle ops.

    `padding` takes the forms of paddle.nn.functional.conv2d (an int,
    [h, w] or [top, bottom, left, right])."""
    z = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation,
                 groups=groups, data_format=data_format)
    y = F.batch_norm(z, running_mean, running_var, weight=bn_weight, bias=bn_bias,
                     training=training, momentum=momentum, epsilon=epsilon,
                     data_format=data_format)
    if residual is not None:
        y = y + residual
    if act == "relu":
        y = F.relu(y)
    return y


def inception_reference(x, weights, biases=None, bn=None, training=True, momentum=0.9,
                        epsilon=1e-5, stage_relu=(False,) * 6, relu_after_concat=True,
                        data_format="NCHW"):
    """ops.inception with stock ops: six conv [-> batch_norm] [-> relu]
    stages in four branches (1x1; 1x1 -> KxK; 1x1 -> KxK; 3x3 max pool ->
    1x1), concatenated along channels, then an optional ReLU."""
    import paddle
    biases = biases or [None] * 6
    bn = bn or [None] * 6

    def stage(i, t):
        k = weights[i].shape[2]
        t = F.conv2d(t, weights[i], biases[i], padding=(k - 1) // 2, data_format=data_format)
        if bn[i] is not None:
            w, b, m, v = bn[i]
            t = F.batch_norm(t, m, v, weight=w, bias=b, training=training, momentum=momentum,
                             epsilon=epsilon, data_format=data_format)
        return F.relu(t) if stage_relu[i] else t

    pooled = F.max_pool2d(x, 3, stride=1, padding=1, data_format=data_format)
    branches = [stage(0, x), stage(2, stage(1, x)), stage(4, stage(3, x)), stage(5, pooled)]
    out = paddle.concat(branches, axis=1 if data_format == "NCHW" else 3)
    return F.relu(out) if relu_after_concat else out


def resnet_block_reference(x, convs, downsample=None, training=True, data_format="NCHW"):
    """ops.resnet_block with stock ops: each BlockConv of `convs` is
    conv2d -> batch_norm, with ReLU after all but the last; the last adds the
    shortcut (x, or downsample's conv2d -> batch_norm of x) before its ReLU."""
    def stage(c, t, act, residual=None):
        return conv_bn_act_reference(
            t, c.weight, c.bn_weight, c.bn_bias, c.running_mean, c.running_var,
            residual=residual, stride=c.stride, padding=c.padding, dilation=c.dilation,
            groups=c.groups, data_format=data_format, act=act, training=training,
            momentum=c.momentum, epsilon=c.epsilon)
    h = x
    for c in convs[:-1]:
        h = stage(c, h, "relu")
    shortcut = x if downsample is None else stage(downsample, x, "none")
    return stage(convs[-1], h, "relu", residual=shortcut)
