"""Reports of a pytest-benchmark JSON of benchmarks/.

    python benchmarks/report.py bench.json > table.md      # Markdown tables
    python benchmarks/report.py bench.json --png chart.png # and a speedup chart
    python benchmarks/report.py --compare old.json new.json [--threshold 0.1]

Table rows pair the stock, fused and (eval) bare-oneDNN-convolution timings
of one layer, mode and layout; medians in ms, speedup = stock / fused.
--compare matches the cases of two runs by name and prints the change of
each median; it exits with status 1 when any case got slower by more than
the threshold (a fraction, default 0.10), so it can gate a change."""
import argparse
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


def _in_turn_rows(data, marker, second, fields):
    """(info[marker], info[second]) -> {name: info[field]} for the cases that
    record medians timed in turns in extra_info (the case's own stats are
    not those medians)."""
    out = {}
    for b in data["benchmarks"]:
        info = b["extra_info"]
        if marker in info:
            out[(info[marker], info[second])] = {k: info.get(f) for k, f in fields.items()}
    return out


def freeze_rows(data):
    """(model, batch) -> {"checked": ms, "frozen": ms} of test_bench_freeze."""
    return _in_turn_rows(data, "freeze_model", "batch",
                         {"checked": "checked_ms", "frozen": "frozen_ms"})


def epilogue_rows(data):
    """(layer, layout) -> {"fused": ms, "bare": ms, "direct": ms or None} of
    test_bench_epilogue (runs before direct_ms was recorded have None)."""
    return _in_turn_rows(data, "epilogue_layer", "data_format",
                         {"fused": "fused_ms", "bare": "bare_ms", "direct": "direct_ms"})


def _peaks(stock, fused):
    if stock is None or fused is None:
        return "-"
    return "%.0f / %.0f" % (stock, fused)


class ReportError(Exception):
    """An input file that is not a benchmarks/ JSON result."""


def load(path):
    """A --benchmark-json file's contents; ReportError (naming the file)
    when it is missing, not JSON (e.g. a run still writing it, or killed)
    or has no benchmark list."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ReportError("cannot read %s: %s" % (path, e.strerror or e))
    except ValueError as e:
        raise ReportError("%s is not a JSON file (%s); was its pytest run finished?"
                          % (path, e))
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ReportError("%s has no 'benchmarks' list: not a pytest --benchmark-json "
                          "file" % path)
    return data


def chart(data, path):
    """Bar chart of fused-over-stock speedups (layers and whole models)."""
    labels, values, colors = [], [], []
    for layer, mode, fmt, c in rows(data):
        # (layers without a layout, the Linear ones, record "-")
        labels.append(" ".join([layer.replace("conv", ""), mode] + ([fmt] if fmt != "-" else [])))
        values.append(c["stock"][0] / c["fused"][0])
        colors.append("tab:blue" if mode == "eval" else "tab:orange")
    for (model, mode), c in sorted(model_rows(data).items()):
        if mode == "peak" or "stock" not in c:
            continue
        for impl in ("fused", "fused_channels_last"):
            if impl in c:
                labels.append("%s %s %s" % (model, mode, impl.replace("fused_", "")))
                values.append(c[impl] / c["stock"])
                colors.append("tab:green" if mode == "eval" else "tab:red")
    if not values:
        raise SystemExit("report: no stock/fused pairs in the JSON to chart")
    machine = data.get("machine_info", {}).get("cpu", {})
    _chart_module().speedup_chart(
        labels, values, path, "paddle_fastconv vs stock, %s, %s threads" % (
            machine.get("brand_raw", "?"),
            data["benchmarks"][0]["extra_info"].get("threads", "?")), colors)


def _chart_module():
    # paddle_fastconv/chart.py on its own: importing the package would load Paddle.
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "paddle_fastconv", "chart.py")
    spec = importlib.util.spec_from_file_location("paddle_fastconv_chart", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def compare(old_path, new_path, threshold):
    """Prints per-case median changes; returns the number of regressions."""
    runs = []
    for p in (old_path, new_path):
        runs.append({b["fullname"]: b["stats"]["median"] for b in load(p)["benchmarks"]})
    old, new = runs
    common = sorted(set(old) & set(new))
    if not common:
        raise SystemExit("report: the two runs have no benchmark in common")
    print("| case | old ms | new ms | change |")
    print("|---|---|---|---|")
    slower = 0
    for name in common:
        change = new[name] / old[name] - 1
        flag = " **slower**" if change > threshold else ""
        slower += bool(flag)
        print("| %s | %.2f | %.2f | %+.1f%%%s |" % (name.split("::")[-1], old[name] * 1e3,
                                                    new[name] * 1e3, 100 * change, flag))
    only = sorted(set(old) ^ set(new))
    if only:
        print("\nin one run only: %s" % ", ".join(n.split("::")[-1] for n in only))
    print("\n%d of %d cases slower by more than %.0f%%" % (slower, len(common),
                                                          100 * threshold))
    return slower


def _turn_table(rows, header, line):
    """A Markdown table of _in_turn_rows' results, one line(key, row) each;
    nothing when the run has none."""
    if rows:
        print("\n" + header)
        print("|---" * (header.count("|") - 1) + "|")
        for key, c in sorted(rows.items()):
            print(line(key, c))


def _ms(v):
    """A median in ms: one decimal, two under 1 ms (the Linear layers)."""
    return "%.2f" % v if v < 1 else "%.1f" % v


def main(path):
    data = load(path)
    machine = data.get("machine_info", {})
    print("| layer | mode | layout | stock ms | fused ms | speedup | bare oneDNN conv ms "
          "| fused GFLOP/s | train peak MiB stock / fused |")
    print("|---|---|---|---|---|---|---|---|---|")
    threads = data["benchmarks"][0]["extra_info"].get("threads") if data["benchmarks"] else None
    for layer, mode, fmt, c in rows(data):
        s, f = c["stock"][0], c["fused"][0]
        conv = "%.1f" % c["onednn_conv"][0] if "onednn_conv" in c else "-"
        gflops = "%.0f" % c["fused"][1] if c["fused"][1] is not None else "-"  # pools: none
        print("| %s | %s | %s | %s | %s | %.2fx | %s | %s | %s |"
              % (layer, mode, fmt, _ms(s), _ms(f), s / f, conv, gflops,
                 _peaks(c["stock"][2], c["fused"][2])))
    models = model_rows(data)
    if models:
        print("\n| model | mode | stock img/s | fused img/s (speedup) | fused channels_last "
              "img/s (speedup) | paddle.inference+oneDNN img/s | oneDNN conv floor img/s "
              "(max speedup) | best fused / floor |")
        print("|---|---|---|---|---|---|---|---|")
        for (model, mode), c in sorted(models.items()):
            if mode == "peak":
                continue
            inf = c.get("paddle_inference_onednn")
            cl = c.get("fused_channels_last")
            fl = c.get("onednn_conv_floor")
            best = max(c["fused"], cl or 0.0)
            print("| %s | %s | %.2f | %.2f (%.2fx) | %s | %s | %s | %s |" % (
                model, mode, c["stock"], c["fused"], c["fused"] / c["stock"],
                "%.2f (%.2fx)" % (cl, cl / c["stock"]) if cl else "-",
                "%.2f" % inf if inf else "-",
                "%.2f (%.2fx)" % (fl, fl / c["stock"]) if fl else "-",
                "%.0f%%" % (100 * best / fl) if fl else "-"))
        for (model, mode), c in sorted(models.items()):
            if mode == "peak" and "stock" in c:
                print("\n%s training step, peak host memory (Paddle's allocator plus the "
                      "fused ops' scratch arena and pooled outputs in use): %s" % (
                          model, ", ".join(
                          "%s %.0f MiB" % (k, v) for k, v in sorted(c.items()))))
    _turn_table(freeze_rows(data),
                "| model (fused, channels_last, eval) | batch | checked ms | frozen ms | speedup |",
                lambda k, c: "| %s | %d | %s | %s | %.2fx |" % (
                    k[0], k[1], _ms(c["checked"]), _ms(c["frozen"]), c["checked"] / c["frozen"]))
    _turn_table(epilogue_rows(data),
                "| layer (eval, frozen) | layout | fused ms | bare conv ms | fused / bare "
                "| bare oneDNN direct ms | fused / direct |",
                lambda k, c: "| %s | %s | %s | %s | %.3f | %s | %s |" % (
                    k[0], k[1], _ms(c["fused"]), _ms(c["bare"]), c["fused"] / c["bare"],
                    _ms(c["direct"]) if c["direct"] else "-",
                    "%.3f" % (c["fused"] / c["direct"]) if c["direct"] else "-"))
    print("\n%s, %s logical CPUs, %s threads for stock and fused, batch 8 (the freeze "
          "table: as listed), fp32, medians." % (machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?")),
                        machine.get("cpu", {}).get("count", "?"), threads))


def cli(argv=None):
    p = argparse.ArgumentParser(description="Markdown tables, a PNG chart, or a regression "
                                            "comparison of benchmarks/ JSON results.")
    p.add_argument("json", nargs="?", help="a --benchmark-json file of benchmarks/")
    p.add_argument("--png", help="also draw the speedups into this PNG (needs matplotlib)")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                   help="compare two runs case by case instead")
    p.add_argument("--threshold", type=float, default=0.10,
                   help="slowdown fraction that counts as a regression (default 0.10)")
    args = p.parse_args(argv)
    try:
        if args.compare:
            return 1 if compare(args.compare[0], args.compare[1], args.threshold) else 0
        if not args.json:
            p.error("give a JSON file, or --compare OLD NEW")
        main(args.json)
        if args.png:
            chart(load(args.json), args.png)
    except ReportError as e:
        print("report.py: %s" % e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
