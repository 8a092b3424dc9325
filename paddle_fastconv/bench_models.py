"""Whole-model part of `paddle-fastconv bench`: ResNet-50 or GoogLeNet, stock
dygraph, fused (pf.fuse, NCHW and channels_last) and, for eval,
paddle.inference with oneDNN on the exported stock model. Outputs are checked
to agree first. On the CPU also the oneDNN floor (paddle_fastconv.floor): the
model's convolutions alone on oneDNN's kernels, which bounds what any fused
engine can reach on the machine."""
import os
import tempfile

import numpy as np
import paddle
from paddle.static import InputSpec

from .bench import _interleaved_median_ms
from .floor import conv_floor
from .freezing import freeze
from .fusion import fuse
from .runtime import onednn_available

GMACS = {"resnet50": 4.1, "googlenet": 1.43}  # per 224x224 image, forward
MODELS = tuple(GMACS)
# GoogLeNet's auxiliary heads (Linear layers) fix its input at 224x224.
FIXED_SIZE = {"googlenet": 224}


def main_output(out):
    """The main logits (GoogLeNet returns them with two auxiliary heads)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def training_loss(out, label):
    ce = paddle.nn.functional.cross_entropy
    if isinstance(out, (tuple, list)):  # GoogLeNet: main + 0.3 * each auxiliary
        return ce(out[0], label) + 0.3 * ce(out[1], label) + 0.3 * ce(out[2], label)
    return ce(out, label)


def _gmacs(name, size):
    # Convolution work scales with the image area.
    return GMACS[name] * (size / 224.0) ** 2


def _images_per_s(fns, batch, repeat):
    """Images/s of each function (name -> callable running one batch), timed
    in turns (bench._interleaved_median_ms), one warm-up run each."""
    ms = _interleaved_median_ms(fns, repeat, warmup=1)
    return {name: batch / (t / 1e3) for name, t in ms.items()}


def inference_runner(model, x, size, threads):
    """A function running `model` exported to paddle.inference (oneDNN on) on x."""
    from paddle import inference
    path = os.path.join(tempfile.mkdtemp(), "model")
    paddle.jit.save(model, path, input_spec=[InputSpec([None, 3, size, size], "float32")])
    prog = path + (".json" if os.path.exists(path + ".json") else ".pdmodel")
    cfg = inference.Config(prog, path + ".pdiparams")
    cfg.disable_gpu()
    # Paddle 3.x names it enable_onednn; 2.6 only has enable_mkldnn.
    (getattr(cfg, "enable_onednn", None) or cfg.enable_mkldnn)()
    cfg.set_cpu_math_library_num_threads(threads)
    cfg.disable_glog_info()
    pred = inference.create_predictor(cfg)
    h = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])
    data = x.numpy()

    def run():
        h.copy_from_cpu(data)
        pred.run()
        # The predictor leaves the calling thread's OpenMP thread count (shared
        # by Paddle's kernels, oneDNN and ours) at 1: put it back, or every
        # later measurement in this process would run single-threaded.
        _set_threads(threads)
        return out.copy_to_cpu()
    return run


def _set_threads(n):
    from paddle.base import core
    from .runtime import set_num_threads
    set_num_threads(n)
    core.set_num_threads(n)


def bench_model(name, batch, size, mode, repeat, threads):
    from paddle.vision import models as vm
    if name not in GMACS:
        raise ValueError("bench: unknown model %r; choose from %s" % (name, list(GMACS)))
    if FIXED_SIZE.get(name, size) != size:
        raise ValueError("bench: %s takes %dx%d images only (its auxiliary heads fix the "
                         "size), got --image-size %d" % (name, FIXED_SIZE[name],
                                                         FIXED_SIZE[name], size))
    paddle.seed(0)
    stock = getattr(vm, name)()
    variants = {}
    for label, cl in (("fused", False), ("fused_channels_last", True)):
        m = getattr(vm, name)()
        m.set_state_dict(stock.state_dict())
        variants[label] = fuse(m, channels_last=cl)
    x = paddle.randn([batch, 3, size, size])
    row = {"model": name, "mode": mode, "batch": batch, "image": size}
    if mode == "eval":
        stock.eval()
        for m in variants.values():
            # as deployed: weights declared constant, so eval calls do not
            # re-read them to see whether they changed (paddle_fastconv.freeze)
            m.eval()  # (returns None on Paddle 2.6)
            freeze(m)
        with paddle.no_grad():
            ref = main_output(stock(x)).numpy()
            fns = {"stock": lambda: stock(x)}
            fns.update({k: (lambda m=m: m(x)) for k, m in variants.items()})
            if x.place.is_cpu_place():  # the oneDNN deployment engine (CPU)
                fns["paddle_inference"] = inference_runner(stock, x, size, threads)
            for k, fn in fns.items():
                got = fn()
                got = got if isinstance(got, np.ndarray) else main_output(got).numpy()
                err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12))
                if err > 1e-3:
                    raise RuntimeError("bench: %s %s disagrees with stock (relative error "
                                       "%.3g)" % (name, k, err))
            if _floor_applies(x):
                fns["onednn_conv_floor"] = conv_floor(stock, x, "eval")
            row.update(_images_per_s(fns, batch, repeat))
        row["fused_gflops"] = 2 * _gmacs(name, size) * _best(row)
    else:
        label = paddle.randint(0, 1000, [batch, 1])
        steps = {}
        for k, m in [("stock", stock)] + list(variants.items()):
            m.train()
            opt = paddle.optimizer.Momentum(1e-4, momentum=0.9, parameters=m.parameters())

            def step(m=m, opt=opt):
                training_loss(m(x), label).backward()
                opt.step()
                opt.clear_grad()
            steps[k] = step
        if _floor_applies(x):
            steps["onednn_conv_floor"] = conv_floor(stock, x, "train")
        row.update(_images_per_s(steps, batch, repeat))
        row["fused_gflops"] = 6 * _gmacs(name, size) * _best(row)
    return row


def _floor_applies(x):
    return x.place.is_cpu_place() and onednn_available()


def _best(row):
    return max(row["fused"], row.get("fused_channels_last", 0.0))


def format_table(rows):
    """The model rows as Markdown. The floor column: img/s of the model's
    convolutions alone on oneDNN, and in brackets the speedup over stock
    that this would be (no engine on these kernels can exceed it)."""
    lines = ["| model | mode | stock img/s | fused img/s | fused channels_last img/s | "
             "speedup (best fused) | paddle.inference img/s | oneDNN conv floor img/s "
             "(max speedup) | GFLOP/s (best fused) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = _best(r)
        cl = r.get("fused_channels_last")
        fl = r.get("onednn_conv_floor")
        lines.append("| %s | %s | %.2f | %.2f | %s | %.2fx | %s | %s | %.0f |" % (
            r["model"], r["mode"], r["stock"], r["fused"], "%.2f" % cl if cl else "-",
            best / r["stock"], "%.2f" % r["paddle_inference"] if "paddle_inference" in r
            else "-", "%.2f (%.2fx)" % (fl, fl / r["stock"]) if fl else "-",
            r["fused_gflops"]))
    return "\n".join(lines)
