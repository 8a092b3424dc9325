"""Turns a pytest-benchmark JSON of benchmarks/ into a Markdown table.

    python benchmarks/report.py bench.json > table.md

Rows pair the stock, fused and (eval) bare-oneDNN-convolution timings of one
layer, mode and layout; medians in ms, speedup = stock / fused."""
import json
import sys
from collections import defaultdict


def rows(data):
    cases = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "layer" not in info:  # whole models: see model_rows
            continue
        key = (info["layer"], info["mode"], info["data_format"])
        cases[key][info["impl"]] = (b["stats"]["median"] * 1e3, info.get("gflops"),
                                    info.get("peak_mib"))
        cases[key]["threads"] = info["threads"]
    for (layer, mode, fmt), c in sorted(cases.items()):
        if "stock" not in c or "fused" not in c:
            continue
        yield layer, mode, fmt, c


def model_rows(data):
    out = defaultdict(dict)
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if "model" in info:
            out[(info["model"], info["mode"])][info["impl"]] = info["images_per_s"]
            if info.get("peak_mib") is not None:
                out[(info["model"], "peak")][info["impl"]] = info["peak_mib"]
    return out


def _peaks(stock, fused):
    if stock is None or fused is None:
        return "-"
    return "%.0f / %.0f" % (stock, fused)


def main(path):
    with open(path) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    print("| layer | mode | layout | stock ms | fused ms | speedup | bare oneDNN conv ms "
          "| fused GFLOP/s | train peak MiB stock / fused |")
    print("|---|---|---|---|---|---|---|---|---|")
    threads = data["benchmarks"][0]["extra_info"].get("threads") if data["benchmarks"] else None
    for layer, mode, fmt, c in rows(data):
        s, f = c["stock"][0], c["fused"][0]
        conv = "%.1f" % c["onednn_conv"][0] if "onednn_conv" in c else "-"
        print("| %s | %s | %s | %.1f | %.1f | %.2fx | %s | %.0f | %s |"
              % (layer, mode, fmt, s, f, s / f, conv, c["fused"][1] or 0,
                 _peaks(c["stock"][2], c["fused"][2])))
    models = model_rows(data)
    if models:
        print("\n| model | mode | stock img/s | fused img/s (speedup) | fused channels_last "
              "img/s (speedup) | paddle.inference+oneDNN img/s |")
        print("|---|---|---|---|---|---|")
        for (model, mode), c in sorted(models.items()):
            if mode == "peak":
                continue
            inf = c.get("paddle_inference_onednn")
            cl = c.get("fused_channels_last")
            print("| %s | %s | %.2f | %.2f (%.2fx) | %s | %s |" % (
                model, mode, c["stock"], c["fused"], c["fused"] / c["stock"],
                "%.2f (%.2fx)" % (cl, cl / c["stock"]) if cl else "-",
                "%.2f" % inf if inf else "-"))
        for (model, mode), c in sorted(models.items()):
            if mode == "peak" and "stock" in c:
                print("\n%s training step, peak host memory (Paddle's allocator plus the "
                      "fused ops' scratch arena): %s" % (model, ", ".join(
                          "%s %.0f MiB" % (k, v) for k, v in sorted(c.items()))))
    print("\n%s, %s logical CPUs, %s threads for stock and fused, batch 8, fp32, "
          "medians." % (machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?")),
                        machine.get("cpu", {}).get("count", "?"), threads))


if __name__ == "__main__":
    main(sys.argv[1])
