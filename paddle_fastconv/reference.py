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
