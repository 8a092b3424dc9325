"""paddle_fastconv.floor: which convolution passes the oneDNN floor runs for
a model, that oneDNN takes each of them, and its errors. (Its timing is a
benchmark, not a test: see benchmarks/test_bench_models.py.)"""
import paddle
import pytest
from paddle import nn
from paddle.vision.models import googlenet, resnet18

import paddle_fastconv as pf
from paddle_fastconv.floor import ConvFloor, conv_calls, conv_floor

pytestmark = pytest.mark.skipif(not pf.runtime.onednn_available(),
                                reason="the floor runs oneDNN's kernels")


def test_resnet18_calls_and_passes():
    model = resnet18()
    x = paddle.randn([2, 3, 32, 32])
    calls = conv_calls(model, x)
    assert len(calls) == 20  # stem, 16 in the blocks, 3 downsamples
    stem, first_block = calls[0], calls[1]
    # N, C, H, W, O, KH, KW, strides, dilations, pads (t, b, l, r), groups
    assert stem == ((2, 3, 32, 32, 64, 7, 7, 2, 2, 1, 1, 3, 3, 3, 3, 1), True)
    assert first_block == ((2, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1), False)
    assert sum(is_input for _, is_input in calls) == 1

    def count(floor, name):
        return sum(t for _, n, t in floor.passes if n == name)
    ev = conv_floor(model, x, "eval")
    assert count(ev, "forward_inference") == 20 and len(ev.passes) < 20  # repeats merged
    tr = conv_floor(model, x, "train")
    assert count(tr, "forward_training") == 20 and count(tr, "backward_weights") == 20
    assert count(tr, "backward_data") == 19  # none for the images
    ev(), tr()  # oneDNN takes every pass


def test_googlenet_and_layouts_and_odd_convolutions():
    """SAME padding, NHWC, groups, dilation, asymmetric padding; GoogLeNet's
    convolutions all run."""
    model = nn.Sequential(
        nn.Conv2D(4, 8, 3, padding="SAME", stride=2, data_format="NHWC"),
        nn.Conv2D(8, 8, 3, groups=4, dilation=2, padding=[0, 1, 2, 0],
                  data_format="NHWC"))
    x = paddle.randn([1, 9, 9, 4])
    calls = conv_calls(model, x)
    assert calls[0][0] == (1, 4, 9, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1)
    assert calls[1][0] == (1, 8, 5, 5, 8, 3, 3, 1, 1, 2, 2, 0, 1, 2, 0, 4)
    conv_floor(model, x, "train")()
    g = googlenet()
    g.eval()
    floor = conv_floor(g, paddle.randn([1, 3, 224, 224]), "eval")
    assert sum(t for _, _, t in floor.passes) == 57 + 2  # + the auxiliary heads' 1x1
    floor()


def test_errors_name_the_argument():
    x = paddle.randn([1, 3, 8, 8])
    with pytest.raises(ValueError, match="'mode'"):
        conv_floor(nn.Conv2D(3, 4, 3), x, "predict")
    with pytest.raises(TypeError, match="'model'"):
        conv_floor("resnet", x)
    with pytest.raises(ValueError, match="stock model"):
        conv_floor(pf.fuse(resnet18()), paddle.randn([1, 3, 32, 32]))
    with pytest.raises(ValueError, match="no paddle.nn.Conv2D"):
        conv_floor(nn.Linear(4, 4), paddle.randn([2, 4]))
    # the C side refuses an impossible convolution with a message
    with pytest.raises(RuntimeError, match="groups"):
        ConvFloor([((1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 2), "forward_inference", 1)])
    with pytest.raises(RuntimeError, match="smaller than the filter"):
        ConvFloor([((1, 3, 2, 2, 4, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1), "forward_inference", 1)])
