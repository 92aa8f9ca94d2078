"""Benchmark harness (``benchmarks/``, outside the package) smoke test: tiny sizes, every section,
valid JSON with the expected keys (no timing assertions), plus the analytic FLOP count and the
targets file."""

import importlib.util
import json

import pytest

from benchmarks.configs import build_config
from benchmarks.flops import analytic_flops
from benchmarks.jobs.train import PARTS
from benchmarks.report import TARGETS_FILE, format_report, load_targets
from benchmarks.run import SCHEMA, build_parser, main
from cpc_speech.config import preset


def test_analytic_flops_default():
    f = analytic_flops(preset("default"), batch=8, samples=20480, negatives=128, sampling="cross_batch")
    assert f["frames"] == 128
    # conv layers: 2 k Cin Cout frames_out, frames 4096, 1024, 512, 256, 128
    enc = 2 * (10 * 1 * 256 * 4096 + 8 * 256 * 256 * 1024 + 4 * 256 * 256 * (512 + 256 + 128))
    assert f["encoder"] == 8 * enc
    assert f["context"] == 8 * 3 * 2 * (256 * 256 + 256 * 256) * 128  # GRU: 3 gates
    assert f["heads"] == 8 * 2 * 256 * 12 * 256 * 128
    assert f["loss"] == 2 * (8 * 128 * 12) * 256 * (128 + 1)  # shared negatives: positive + 128 gathered
    dense = analytic_flops(preset("default"), 8, 20480, 128, "cross_batch", shared=False)
    assert dense["loss"] == 2 * (8 * 128 * 12) * 256 * (8 * 128)  # a set per step: scores against every frame
    assert f["step"] == 3 * (f["encoder"] + f["context"] + f["heads"] + f["loss"])
    local = analytic_flops(preset("default"), 8, 20480, 128, "same_utterance")
    assert local["loss"] == dense["loss"] // 8  # scores against the own window only
    cfg, _ = build_config("cpc_audio_default", {"batch": 8, "window": 20480, "negatives": 128}, "cross_batch", "none", "cpu", 1)
    t = analytic_flops(cfg.model, 8, 20480, 128, "cross_batch")
    assert cfg.model.context.kind == "lstm" and cfg.model.predictor.kind == "transformer"
    assert t["context"] == 8 * 4 * 2 * (256 * 256 + 256 * 256) * 128  # LSTM: 4 gates
    assert t["heads"] > 10 * f["heads"] and "redundant_qkv" not in t  # the blocks project q/k/v once


def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["--quick", "--presets", "tiny", "--sampling", "cross_batch", "--threads", "1",
               "--output", str(out), "--machine", "testbox"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["schema"] == SCHEMA and res["targets_spec"] == load_targets()
    for key in ("machine", "settings", "matmul", "train", "loader", "extract", "targets", "load_average_start"):
        assert key in res, key
    m = res["machine"]
    assert m["name"] == "testbox" and m["threads"] == 1 and m["torch"] and m["cpu_model"] and m["cores"] >= 1
    assert "error" not in res["matmul"], res["matmul"]
    assert res["matmul"]["fp32"]["gflops_best"] > 0

    fp32, auto = res["train"]  # the same configuration in fp32 and in the automatic precision, in turn
    assert fp32["precision_requested"] == "fp32" and fp32["precision"] == "fp32"
    # each measurement process resolves auto itself (a timing where the CPU has no AMX)
    assert auto["precision_requested"] == "auto" and auto["precision"] in ("fp32", "bf16")
    assert res["matmul"]["auto"]["name"] in ("fp32", "bf16") and res["matmul"]["auto"]["reason"]
    for tr in (fp32, auto):
        assert "error" not in tr, tr
        assert tr["config"] == "tiny" and tr["sampling"] == "cross_batch" and tr["isolated"]
        assert len(tr["step_seconds"]["values"]) == res["settings"]["steps"]
        for key in ("median", "min", "max", "q1", "q3"):
            assert tr["step_seconds"][key] > 0
        assert tr["audio_seconds_per_second"]["median"] > 0 and tr["gflops_per_second"] > 0
        assert set(tr["flops"]) >= {"encoder", "context", "heads", "loss", "forward", "step"}
        parts = tr["split"]["parts"]
        assert set(parts) == set(PARTS)
        assert abs(sum(p["share"] for p in parts.values()) - 1) < 1e-6
        assert tr["memory"]["peak_rss_mb"] > 0
        assert all(v == v for v in tr["loss_values"])  # finite, not NaN
    (train_cmp,) = [c for c in res["comparisons"] if c["what"] == "train"]
    ratio = auto["audio_seconds_per_second"]["median"] / fp32["audio_seconds_per_second"]["median"]
    assert train_cmp["ratio"] == pytest.approx(ratio) and train_cmp["resolved"] == auto["precision"]
    assert "reference" not in res  # no figures from other machines

    ld = res["loader"]
    assert "error" not in ld, ld
    assert set(ld["workers"]) == {"0", "1", "2"}
    assert all(w["windows"] > 0 for w in ld["workers"].values())
    assert "error" not in ld["e2e"], ld["e2e"]
    assert ld["e2e"]["workers"] == 2 and 0 <= ld["e2e"]["wait_share"] <= 1

    assert set(res["extract"]) == {"fp32", "auto"}
    for prec, ex in res["extract"].items():
        assert "error" not in ex["short"] and "error" not in ex["long"], ex
        assert ex["short"]["rtf"] > 0 and ex["long"]["peak_rss_mb"] > 0
        assert ex["long"]["frames"] == int(res["settings"]["long_seconds"] * 100)
        assert ex["short"]["precision_requested"] == prec
    assert {c["what"] for c in res["comparisons"]} == {"train", "extract short", "extract long"}

    names = [t["name"] for t in res["targets"]]
    assert any("over fp32" in n for n in names) and any("peak RSS" in n for n in names)
    report = format_report(res)
    assert "matmul" in report and "precisions side by side" in report and "CPC_audio" not in report


def test_bench_options_outside_the_package():
    args = build_parser().parse_args(["--quick", "--only", "matmul"])
    assert args.quick and args.only == "matmul"
    from cpc_speech.cli import build_parser as cli_parser

    with pytest.raises(SystemExit):  # `cpc-speech bench` is gone: `make bench` / python -m benchmarks.run
        cli_parser().parse_args(["bench", "--quick"])
    assert importlib.util.find_spec("cpc_speech.bench") is None


def test_targets_file_loads_strictly(tmp_path):
    assert load_targets() == {
        "train_speedup_over_fp32": {"default": 2.5, "paper": 3.5}, "encoder_fraction_of_roofline": 0.5,
        "extract_speedup_over_fp32": 3.0, "step_peak_rss_mb_max": 1024.0, "long_extract_peak_rss_mb_max": 1024.0,
        "loader_wait_share_max": 0.05,
    }
    good = json.loads(TARGETS_FILE.read_text())
    path = tmp_path / "targets.json"
    for change, message in (
        (lambda d: d.update(format="cpc_speech.bench-targets/2"), "format must be"),
        (lambda d: d["targets"].pop("loader_wait_share_max"), "missing \\['loader_wait_share_max'\\]"),
        (lambda d: d["targets"].update(extract_speedup_over_fp32="3"), "targets.extract_speedup_over_fp32 must be a number"),
        (lambda d: d["targets"]["train_speedup_over_fp32"].update(huge=4.0), "train_speedup_over_fp32.huge"),
        (lambda d: d.update(reference={}), "unknown key"),
    ):
        data = json.loads(json.dumps(good))
        change(data)
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message) as err:
            load_targets(path)
        assert str(path) in str(err.value)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_targets(path)


def test_bench_rejects_unknown_section(tmp_path):
    with pytest.raises(ValueError):
        main(["--quick", "--only", "nope", "--output", str(tmp_path / "x.json")])
