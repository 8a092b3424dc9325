"""freeze(model) / unfreeze(model) and set_weight_checks: frozen models skip
the per-call weight fingerprint and still give stock's outputs; what freeze
promises to see (BN statistics, a freeze after a change) is seen, and what
it documents as unseen (a frozen weight changed by set_value) is seen again
after unfreeze."""
import gc

import numpy as np
import paddle
import pytest
from paddle import nn
from paddle.vision.models import googlenet, resnet18

import paddle_fastconv as pf
from tolerances import assert_close

needs_onednn = pytest.mark.skipif(not pf.onednn_available(),
                                  reason="the eval weight caches belong to the oneDNN engine")


def _checks():
    return pf.cache_info()["weight_checks"]


def _main(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@needs_onednn
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_frozen_resnet_matches_stock_without_weight_checks(channels_last):
    stock = resnet18()
    fused = resnet18()
    fused.set_state_dict(stock.state_dict())
    stock.eval(), fused.eval()
    pf.fuse(fused, channels_last=channels_last)
    x = paddle.randn([2, 3, 64, 64])
    with paddle.no_grad():
        ref = stock(x)
        fused(x)
        before = _checks()
        fused(x)
        per_call = _checks() - before
        assert per_call > 0  # unfrozen: every cached layer is checked
        pf.freeze(fused)
        assert pf.is_frozen(fused)
        fused(x)  # rebuilds the copies freeze dropped (fingerprinted once)
        before = _checks()
        out = fused(x)
        out2 = fused(x)
        assert _checks() == before
    assert_close(out, ref, "out", what="frozen eval logits")
    assert_close(out2, ref, "out", what="frozen eval logits, second call")
    pf.unfreeze(fused)
    assert not pf.is_frozen(fused)
    with paddle.no_grad():
        before = _checks()
        fused(x)
        assert _checks() - before == per_call


@needs_onednn
def test_frozen_googlenet_matches_stock_without_weight_checks():
    """GoogLeNet's caches are the other kind: filters only reordered (no BN),
    for the Inception op and the plain convolutions."""
    stock, fused = googlenet(), googlenet()
    fused.set_state_dict(stock.state_dict())
    stock.eval(), fused.eval()
    pf.fuse(fused)
    pf.freeze(fused)
    x = paddle.randn([1, 3, 224, 224])  # the auxiliary heads fix the size
    with paddle.no_grad():
        fused(x)
        before = _checks()
        out = _main(fused(x))
        assert _checks() == before
        ref = _main(stock(x))
    assert_close(out, ref, "model", what="frozen GoogLeNet logits")


def _layer_and_stock(fmt="NCHW"):
    conv = nn.Conv2D(8, 16, 3, padding=1, bias_attr=False, data_format=fmt)
    bn = nn.BatchNorm2D(16, data_format=fmt)
    bn._mean.set_value(np.random.randn(16).astype("float32") * 0.1)
    bn._variance.set_value(np.random.rand(16).astype("float32") + 0.5)
    fused = pf.nn.ConvBNReLU.from_layers(conv, bn)
    return conv, bn, fused


def _stock(conv, bn, x):
    return nn.functional.relu(bn(conv(x)))


def test_freeze_drops_copies_built_before_it():
    """An eval call caches the folded weights; the weights then change; a
    freeze must not trust the old copy."""
    conv, bn, fused = _layer_and_stock()
    fused.eval(), conv.eval(), bn.eval()
    x = paddle.randn([2, 8, 9, 9])
    with paddle.no_grad():
        fused(x)
        conv.weight.set_value(conv.weight.numpy() * 1.5 + 0.1)
        pf.freeze(fused)
        assert_close(fused(x), _stock(conv, bn, x), "out", what="first frozen call")


def test_unfreeze_sees_a_change_made_while_frozen():
    conv, bn, fused = _layer_and_stock()
    fused.eval(), conv.eval(), bn.eval()
    x = paddle.randn([2, 8, 9, 9])
    pf.freeze(fused)
    with paddle.no_grad():
        fused(x)
        conv.weight.set_value(-conv.weight.numpy())  # documented as unseen while frozen
        pf.unfreeze(fused)
        assert_close(fused(x), _stock(conv, bn, x), "out", what="after unfreeze")


def test_frozen_layer_still_sees_batchnorm_changes():
    """BN sources are compared on every call, frozen or not: a training-mode
    call (running statistics move) and a set_state_dict of the BN parameters
    are both seen by the next eval call."""
    conv, bn, fused = _layer_and_stock("NHWC")
    x = paddle.randn([2, 9, 9, 8])
    pf.freeze(fused)
    fused.eval(), conv.eval(), bn.eval()
    with paddle.no_grad():
        fused(x)
    fused.train(), bn.train()
    y_train = fused(x)  # moves the running statistics (bn's own buffers)
    fused.eval(), bn.eval()
    with paddle.no_grad():
        assert_close(fused(x), _stock(conv, bn, x), "out", what="eval after a training call")
        assert y_train.shape == [2, 9, 9, 16]
        bn.weight.set_value(bn.weight.numpy() * 2.0)
        bn.bias.set_value(bn.bias.numpy() + 0.25)
        assert_close(fused(x), _stock(conv, bn, x), "out", what="eval after new BN parameters")


def test_freeze_stops_gradients_and_unfreeze_restores_them():
    conv, bn, fused = _layer_and_stock()
    bn.bias.stop_gradient = True  # a parameter the user froze for fine-tuning
    pf.freeze(fused)
    pf.freeze(fused)  # twice: unfreeze still restores the original flags
    assert all(p.stop_gradient for p in fused.parameters())
    assert pf.cache_info()["frozen_weights"] >= len(fused.parameters())
    pf.unfreeze(fused)
    assert conv.weight.stop_gradient is False and bn.weight.stop_gradient is False
    assert bn.bias.stop_gradient is True
    # a frozen model cannot be changed by an optimizer step: no gradients
    pf.freeze(fused)
    fused.train()
    opt = paddle.optimizer.SGD(0.1, parameters=fused.parameters())
    before = conv.weight.numpy().copy()
    x = paddle.randn([2, 8, 9, 9])
    x.stop_gradient = False
    fused(x).sum().backward()
    opt.step()
    np.testing.assert_array_equal(conv.weight.numpy(), before)
    assert x.grad is not None
    pf.unfreeze(fused)


def test_a_freed_frozen_weight_is_forgotten():
    gc.collect()  # earlier tests' models
    base = pf.cache_info()["frozen_weights"]
    fused = _layer_and_stock()[2]
    pf.freeze(fused)
    assert pf.cache_info()["frozen_weights"] == base + len(fused.parameters())
    del fused
    gc.collect()
    assert pf.cache_info()["frozen_weights"] == base


@needs_onednn
def test_set_weight_checks_off_trusts_every_copy():
    conv, bn, fused = _layer_and_stock()
    fused.eval(), conv.eval(), bn.eval()
    x = paddle.randn([2, 8, 9, 9])
    assert pf.get_weight_checks() is True
    try:
        with paddle.no_grad():
            fused(x)
            pf.set_weight_checks(False)
            assert pf.get_weight_checks() is False
            before = _checks()
            out = fused(x)
            assert _checks() == before
            assert_close(out, _stock(conv, bn, x), "out", what="checks off")
    finally:
        pf.set_weight_checks(True)
    with paddle.no_grad():
        before = _checks()
        fused(x)
        assert _checks() > before


@pytest.mark.parametrize("fn", [pf.freeze, pf.unfreeze, pf.is_frozen])
def test_bad_arguments(fn):
    with pytest.raises(TypeError, match="argument 'model' must be a paddle.nn.Layer"):
        fn(paddle.randn([2]))
    with pytest.raises(TypeError, match="set_weight_checks: argument 'on' must be a bool"):
        pf.set_weight_checks(1)
