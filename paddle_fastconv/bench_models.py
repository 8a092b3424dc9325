"""Whole-model part of `paddle-fastconv bench`: ResNet-50 stock dygraph,
fused (pf.fuse, NCHW and channels_last) and, for eval, paddle.inference with
oneDNN on the exported stock model. Outputs are checked to agree first."""
import os
import tempfile

import numpy as np
import paddle
from paddle.static import InputSpec

from .bench import _median_ms
from .fusion import fuse

GMACS = {"resnet50": 4.1}  # per 224x224 image, forward


def _gmacs(name, size):
    # Convolution work scales with the image area.
    return GMACS[name] * (size / 224.0) ** 2


def _median_s(fn, repeat):
    return _median_ms(fn, repeat, warmup=1) / 1e3


def inference_runner(model, x, size, threads):
    """A function running `model` exported to paddle.inference (oneDNN on) on x."""
    from paddle import inference
    path = os.path.join(tempfile.mkdtemp(), "model")
    paddle.jit.save(model, path, input_spec=[InputSpec([None, 3, size, size], "float32")])
    prog = path + (".json" if os.path.exists(path + ".json") else ".pdmodel")
    cfg = inference.Config(prog, path + ".pdiparams")
    cfg.disable_gpu()
    cfg.enable_onednn()
    cfg.set_cpu_math_library_num_threads(threads)
    cfg.disable_glog_info()
    pred = inference.create_predictor(cfg)
    h = pred.get_input_handle(pred.get_input_names()[0])
    out = pred.get_output_handle(pred.get_output_names()[0])
    data = x.numpy()

    def run():
        h.copy_from_cpu(data)
        pred.run()
        return out.copy_to_cpu()
    return run


def bench_model(name, batch, size, mode, repeat, threads):
    from paddle.vision import models as vm
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
            m.eval()
        with paddle.no_grad():
            ref = stock(x).numpy()
            fns = {"stock": lambda: stock(x)}
            fns.update({k: (lambda m=m: m(x)) for k, m in variants.items()})
            if x.place.is_cpu_place():  # the oneDNN deployment engine (CPU)
                fns["paddle_inference"] = inference_runner(stock, x, size, threads)
            for k, fn in fns.items():
                got = fn()
                got = got if isinstance(got, np.ndarray) else got.numpy()
                err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-12))
                if err > 1e-3:
                    raise RuntimeError("bench: %s %s disagrees with stock (relative error "
                                       "%.3g)" % (name, k, err))
            for k, fn in fns.items():
                row[k] = batch / _median_s(fn, repeat)
        row["fused_gflops"] = 2 * _gmacs(name, size) * max(row["fused"],
                                                          row["fused_channels_last"])
    else:
        label = paddle.randint(0, 1000, [batch, 1])
        for k, m in [("stock", stock)] + list(variants.items()):
            m.train()
            opt = paddle.optimizer.Momentum(1e-4, momentum=0.9, parameters=m.parameters())

            def step(m=m, opt=opt):
                paddle.nn.functional.cross_entropy(m(x), label).backward()
                opt.step()
                opt.clear_grad()
            row[k] = batch / _median_s(step, repeat)
        row["fused_gflops"] = 6 * _gmacs(name, size) * max(row["fused"],
                                                          row["fused_channels_last"])
    return row


def format_table(rows):
    lines = ["| model | mode | stock img/s | fused img/s | fused channels_last img/s | "
             "speedup (best fused) | paddle.inference img/s | GFLOP/s (best fused) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        best = max(r["fused"], r["fused_channels_last"])
        lines.append("| %s | %s | %.2f | %.2f | %.2f | %.2fx | %s | %.0f |" % (
            r["model"], r["mode"], r["stock"], r["fused"], r["fused_channels_last"],
            best / r["stock"], "%.2f" % r["paddle_inference"] if "paddle_inference" in r
            else "-", r["fused_gflops"]))
    return "\n".join(lines)
