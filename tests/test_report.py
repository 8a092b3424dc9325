"""benchmarks/report.py: tables, chart and the regression comparison, on
small pytest-benchmark-shaped JSON files."""
import json
import os
import subprocess
import sys

import pytest

REPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "benchmarks", "report.py")


def _bench_json(path, fused_ms):
    def case(impl, ms, mode="eval"):
        return {"fullname": "benchmarks/test_bench_conv_bn_act.py::test_%s[conv3x3-%s-NCHW]"
                            % (mode, impl),
                "stats": {"median": ms / 1e3},
                "extra_info": {"layer": "conv3x3_64x64_56", "mode": mode, "impl": impl,
                               "data_format": "NCHW", "threads": 2, "gflops": 100.0,
                               "peak_mib": 50.0 if mode == "train" else None}}
    data = {"machine_info": {"cpu": {"brand_raw": "test cpu", "count": 2}},
            "benchmarks": [case("stock", 30.0), case("fused", fused_ms),
                           case("stock", 90.0, "train"), case("fused", 60.0, "train")]}
    path.write_text(json.dumps(data))
    return str(path)


def _run(*args):
    return subprocess.run([sys.executable, REPORT] + list(args), capture_output=True,
                          text=True, timeout=120)


def test_table_shows_speedups_and_peaks(tmp_path):
    p = _run(_bench_json(tmp_path / "a.json", 10.0))
    assert p.returncode == 0, p.stderr
    assert "| conv3x3_64x64_56 | eval | NCHW | 30.0 | 10.0 | 3.00x |" in p.stdout
    assert "| conv3x3_64x64_56 | train | NCHW | 90.0 | 60.0 | 1.50x | - | 100 | 50 / 50 |" \
        in p.stdout


def test_rows_without_a_flop_count_show_a_dash(tmp_path):
    """Pools (benchmarks/test_bench_pools.py) record no GFLOP/s."""
    data = json.loads(open(_bench_json(tmp_path / "a.json", 10.0)).read())
    for b in data["benchmarks"]:
        b["extra_info"].update(layer="maxpool_64_112", gflops=None, peak_mib=None)
    (tmp_path / "p.json").write_text(json.dumps(data))
    p = _run(str(tmp_path / "p.json"))
    assert p.returncode == 0, p.stderr
    assert "| maxpool_64_112 | eval | NCHW | 30.0 | 10.0 | 3.00x | - | - | - |" in p.stdout


def test_compare_flags_a_regression_and_passes_otherwise(tmp_path):
    old = _bench_json(tmp_path / "old.json", 10.0)
    slower = _bench_json(tmp_path / "slow.json", 12.5)
    same = _bench_json(tmp_path / "same.json", 10.4)
    p = _run("--compare", old, slower)
    assert p.returncode == 1 and "+25.0% **slower**" in p.stdout, p.stdout
    p = _run("--compare", old, same)
    assert p.returncode == 0 and "0 of 4 cases slower" in p.stdout, p.stdout


def test_png_chart(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "chart.png"
    p = _run(_bench_json(tmp_path / "a.json", 10.0), "--png", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_table_with_the_onednn_floor(tmp_path):
    def case(impl, ips, mode):
        return {"fullname": "benchmarks/test_bench_models.py::test_resnet50_%s[%s]" % (mode, impl),
                "stats": {"median": 8.0 / ips},
                "extra_info": {"model": "resnet50", "mode": mode, "impl": impl,
                               "threads": 2, "images_per_s": ips}}
    data = {"machine_info": {"cpu": {"brand_raw": "test cpu", "count": 2}},
            "benchmarks": [case("stock", 10.0, "eval"), case("fused", 20.0, "eval"),
                           case("fused_channels_last", 22.0, "eval"),
                           case("paddle_inference_onednn", 21.0, "eval"),
                           case("onednn_conv_floor", 25.0, "eval"),
                           case("stock", 4.0, "train"), case("fused", 7.0, "train")]}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    p = _run(str(path))
    assert p.returncode == 0, p.stderr
    assert ("| resnet50 | eval | 10.00 | 20.00 (2.00x) | 22.00 (2.20x) | 21.00 | "
            "25.00 (2.50x) | 88% |") in p.stdout
    assert "| resnet50 | train | 4.00 | 7.00 (1.75x) | - | - | - | - |" in p.stdout


def test_epilogue_table_from_the_in_turn_medians(tmp_path):
    """benchmarks/test_bench_epilogue.py: fused and bare medians come from
    extra_info (timed in turns), not from the case's own stats."""
    data = json.loads(open(_bench_json(tmp_path / "a.json", 10.0)).read())
    data["benchmarks"].append({
        "fullname": "benchmarks/test_bench_epilogue.py::test_eval_fused_vs_bare_conv[c-NHWC]",
        "stats": {"median": 0.5},
        "extra_info": {"epilogue_layer": "conv1x1_64x256_56", "data_format": "NHWC",
                       "threads": 2, "fused_ms": 5.5, "bare_ms": 5.0}})
    data["benchmarks"].append({
        "fullname": "benchmarks/test_bench_epilogue.py::test_eval_fused_vs_bare_conv[c3-NHWC]",
        "stats": {"median": 0.5},
        "extra_info": {"epilogue_layer": "conv3x3_64x64_56", "data_format": "NHWC",
                       "threads": 2, "fused_ms": 4.2, "bare_ms": 4.0, "direct_ms": 8.4}})
    (tmp_path / "e.json").write_text(json.dumps(data))
    p = _run(str(tmp_path / "e.json"))
    assert p.returncode == 0, p.stderr
    # a run from before direct_ms was recorded, and one with it
    assert "| conv1x1_64x256_56 | NHWC | 5.5 | 5.0 | 1.100 | - | - |" in p.stdout
    assert "| conv3x3_64x64_56 | NHWC | 4.2 | 4.0 | 1.050 | 8.4 | 0.500 |" in p.stdout
    # the layer table is unchanged by the extra case
    assert "| conv3x3_64x64_56 | eval | NCHW | 30.0 | 10.0 | 3.00x |" in p.stdout


@pytest.mark.parametrize("content, says", [
    ("", "is not a JSON file"),                       # a run still writing it
    ('{"benchmarks": [', "is not a JSON file"),       # cut short
    ('{"machine_info": {}}', "has no 'benchmarks' list"),
])
def test_a_file_that_is_no_result_gets_a_clear_message(tmp_path, content, says):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = _bench_json(tmp_path / "good.json", 10.0)
    for args in ([str(bad)], ["--compare", good, str(bad)]):
        r = _run(*args)
        assert r.returncode == 2, r.stderr
        assert "report.py: " in r.stderr and says in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    r = _run(str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr, r.stderr
