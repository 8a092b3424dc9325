"""Stock vs fused timing on this machine: the package's main job.

Layer level for now: Conv2D+BatchNorm2D+ReLU with ResNet-50 shapes, stock
dygraph layers against paddle_fastconv.ConvBNReLU with the same weights,
after checking that their outputs agree."""
import json
import statistics
import sys
import time

import numpy as np
import paddle

from . import runtime
from .nn import ConvBNReLU
from .ops import onednn_conv2d

# name: (in, out, kernel, stride, padding, H=W)
LAYERS = {
    "conv3x3_64x64_56": (64, 64, 3, 1, 1, 56),
    "conv1x1_64x256_56": (64, 256, 1, 1, 0, 56),
    "conv1x1_256x64_56": (256, 64, 1, 1, 0, 56),
    "conv3x3_128x128_28": (128, 128, 3, 1, 1, 28),
    "conv3x3_256x256_14": (256, 256, 3, 1, 1, 14),
    "conv1x1_1024x256_14": (1024, 256, 1, 1, 0, 14),
}
DEFAULT_LAYERS = ["conv3x3_64x64_56", "conv1x1_64x256_56"]


def conv_flops(cin, cout, k, hw_out, batch):
    return 2.0 * batch * cout * hw_out * hw_out * cin * k * k


def _sync():
    """Waits for queued GPU work (a no-op on the CPU), so timings are real."""
    if not paddle.get_device().startswith("cpu"):
        paddle.device.synchronize()


def _interleaved_median_ms(fns, repeat, warmup=2):
    """Median ms of each function in `fns` (name -> callable), timed in
    turns: every round runs each function twice in a row, untimed then timed,
    in an order rotated per round. Turns make a machine whose speed drifts
    (shared or throttled CPUs) slow all of them alike, so their ratios hold
    (timed one after the other, minutes apart, they did not: a shared 2-vCPU
    VM drifted by 30%); the untimed run first makes each timed run follow one
    of its own, with its weights and buffers as warm in the caches as in a
    loop that runs only it (timing right after another model cost ResNet-50's
    fused training step a quarter of its speed)."""
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    _sync()
    times = {name: [] for name in names}
    for r in range(repeat):
        for i in range(len(names)):
            name = names[(i + r) % len(names)]
            fns[name]()
            _sync()
            t = time.perf_counter()
            fns[name]()
            _sync()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def peak_memory_mib(fn):
    """Runs fn once and returns the peak of host memory it allocated, in MiB:
    Paddle's CPU allocator (tensors, for stock and fused alike), plus what
    this package keeps outside that allocator: the scratch arena (oneDNN
    scratchpads and reorder buffers, kept between calls) and the pooled
    output blocks in use at their peak (the sum of the two peaks is an upper
    bound, as they need not coincide; like Paddle's statistic, memory cached
    for reuse is not counted). None when this Paddle has no allocator
    statistics (2.x)."""
    from ._loader import CLIB
    core = paddle.base.core
    if not hasattr(core, "host_memory_stat_reset_peak_value"):
        return None
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    before = core.host_memory_stat_current_value("Allocated", 0)
    pool_before = CLIB.fastconv_host_pool_peak(1)
    fn()
    peak = core.host_memory_stat_peak_value("Allocated", 0) - before
    pool = CLIB.fastconv_host_pool_peak(0) - pool_before
    return (peak + pool + runtime.cache_info()["scratch_bytes"]) / 2.0 ** 20


def _stock_fused(spec, data_format, training):
    cin, cout, k, s, p, hw = spec
    conv = paddle.nn.Conv2D(cin, cout, k, stride=s, padding=p, bias_attr=False,
                            data_format=data_format)
    bn = paddle.nn.BatchNorm2D(cout, data_format=data_format)
    fused = ConvBNReLU(cin, cout, k, stride=s, padding=p, data_format=data_format)
    fused.conv.set_state_dict(conv.state_dict())
    fused.bn.set_state_dict(bn.state_dict())
    for m in (conv, bn, fused):
        m.train() if training else m.eval()
    return conv, bn, fused


def bench_layer(name, batch=8, data_format="NCHW", mode="eval", repeat=5):
    spec = LAYERS[name]
    cin, cout, k, s, p, hw = spec
    training = mode == "train"
    conv, bn, fused = _stock_fused(spec, data_format, training)
    shape = [batch, cin, hw, hw] if data_format == "NCHW" else [batch, hw, hw, cin]
    x = paddle.randn(shape)

    def stock():
        return paddle.nn.functional.relu(bn(conv(x)))

    # Outputs must agree before anything is timed.
    with paddle.no_grad():
        a, b = stock().numpy(), fused(x).numpy()
    err = float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
    if err > 1e-4:
        raise RuntimeError("bench: %s %s outputs disagree (relative error %.3g)" % (name, mode, err))
    row = {"layer": name, "mode": mode, "batch": batch, "data_format": data_format,
           "threads": runtime.get_num_threads(), "max_rel_err": err}
    if training:
        xg = x.detach()
        xg.stop_gradient = False

        def step(f):
            def run():
                y = f(xg)
                y.backward(paddle.ones_like(y))
            return run
        fns = {"stock_ms": step(lambda t: paddle.nn.functional.relu(bn(conv(t)))),
               "fused_ms": step(fused)}
        row.update(_interleaved_median_ms(fns, repeat))
        flop_factor = 3.0  # forward, backward data, backward weights
    else:
        with paddle.no_grad():
            fns = {"stock_ms": stock, "fused_ms": lambda: fused(x)}
            if runtime.onednn_available() and x.place.is_cpu_place():
                w = conv.weight
                fns["onednn_conv_ms"] = lambda: onednn_conv2d(
                    x, w, stride=s, padding=p, data_format=data_format,
                    algorithm="direct")
            row.update(_interleaved_median_ms(fns, repeat))
        flop_factor = 1.0
    hw_out = (hw + 2 * p - k) // s + 1
    flops = conv_flops(cin, cout, k, hw_out, batch) * flop_factor
    row["speedup"] = row["stock_ms"] / row["fused_ms"]
    row["fused_gflops"] = flops / row["fused_ms"] / 1e6
    row["stock_gflops"] = flops / row["stock_ms"] / 1e6
    return row


def format_table(rows):
    head = ["layer", "mode", "fmt", "stock ms", "fused ms", "speedup", "oneDNN conv ms",
            "fused GFLOP/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| %s | %s | %s | %.1f | %.1f | %.2fx | %s | %.0f |" % (
            r["layer"], r["mode"], r["data_format"], r["stock_ms"], r["fused_ms"],
            r["speedup"], "%.1f" % r["onednn_conv_ms"] if "onednn_conv_ms" in r else "-",
            r["fused_gflops"]))
    return "\n".join(lines)


def write_chart(rows, model_rows, path, title=""):
    """A PNG bar chart of the fused-over-stock speedups (needs matplotlib)."""
    from .chart import speedup_chart
    labels = ["%s %s %s" % (r["layer"], r["mode"], r["data_format"]) for r in rows]
    values = [r["speedup"] for r in rows]
    for r in model_rows:
        for k in ("fused", "fused_channels_last"):
            if k not in r:
                continue
            labels.append("%s %s %s" % (r["model"], r["mode"], k))
            values.append(r[k] / r["stock"])
    speedup_chart(labels, values, path, title)


def run(layers, batch, modes, data_format, repeat, json_path=None, out=sys.stdout,
        models=(), image_size=224, model_repeat=3, png_path=None):
    from . import bench_models
    rows, model_rows = [], []
    jobs = [("layer", n, m) for n in layers for m in modes] + \
        [("model", n, m) for n in models for m in modes]
    for k, (kind, name, mode) in enumerate(jobs):
        out.write("[%d/%d] %s %s ...\n" % (k + 1, len(jobs), name, mode))
        out.flush()
        if kind == "layer":
            rows.append(bench_layer(name, batch, data_format, mode, repeat))
        else:
            model_rows.append(bench_models.bench_model(
                name, batch, image_size, mode, model_repeat, runtime.get_num_threads()))
    threads = runtime.get_num_threads()
    if rows:
        out.write("\n" + format_table(rows) + "\n")
        out.write("layers: batch %d, %s, %d threads, fp32, median of %d runs (timed in turns)\n"
                  % (batch, data_format, threads, repeat))
    if model_rows:
        out.write("\n" + bench_models.format_table(model_rows) + "\n")
        out.write("models: batch %d, %dx%d, %d threads, fp32, median of %d runs (timed in turns); "
                  "eval runs the fused models frozen (paddle_fastconv.freeze), as "
                  "deployed; paddle.inference runs the exported stock model with oneDNN; the "
                  "oneDNN conv floor is the model's convolutions alone on oneDNN's "
                  "direct kernels (no engine on them can be faster; in brackets the "
                  "speedup over stock it would be; fused eval can go below it, its "
                  "3x3 and expanding 1x1 convolutions running on this package's "
                  "own kernels)\n"
                  % (batch, image_size, image_size, threads, model_repeat))
    device = paddle.get_device()
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"rows": rows, "models": model_rows, "threads": threads,
                       "device": device, "paddle": paddle.__version__}, f, indent=2)
    if png_path and (rows or model_rows):
        write_chart(rows, model_rows, png_path,
                    "paddle_fastconv vs stock on %s, batch %d, %d threads"
                    % (device, batch, threads))
        out.write("chart: %s\n" % png_path)
    return rows, model_rows
