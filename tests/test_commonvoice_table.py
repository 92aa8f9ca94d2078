"""The Common Voice table of Riviere et al. (2020): the report's table and averages from hand-written
result files, refused label budgets, nested budget subsets drawn from the train pool, and split files
that share a speaker refused with a message naming the file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from cpc_speech.cli import main
from cpc_speech.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def recipe_util(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "recipes" / "utils" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plan(locale, **budgets):
    """A label-budget plan: budgets {"1": "drawn" | available hours of a refusal}."""
    entries = []
    for name, state in budgets.items():
        hours = float(name.replace("_", "."))
        if state == "drawn":
            entries.append({"name": f"{name}h", "hours": hours, "status": "drawn"})
        else:
            entries.append({"name": f"{name}h", "hours": hours, "status": "refused", "available_hours": state,
                            "reason": f"not enough labelled audio: {state:.3f} h available"})
    return {"format_version": 1, "kind": "cpc_speech.label_budgets", "locale": locale, "seed": 0, "nested": True,
            "pool": {"hours": 7.5 if all(s == "drawn" for s in budgets.values()) else 0.3}, "budgets": entries}


def finetune_result(**per_test):
    return {"finetune": {c: {"per_dev": v + 0.01, "per_test": v, "train_hours": 1.0} for c, v in per_test.items()}}


def make_run(tmp_path):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  seed: 0\n")
    (run / "log.jsonl").write_text(json.dumps({"split": "train", "step": 1, "loss": 2.0}) + "\n")
    return run


def write(path, data):
    path.write_text(json.dumps(data))


@pytest.fixture
def cv_run(tmp_path):
    run = make_run(tmp_path)
    res = run / "results"
    write(res / "label_budgets_fr.json", plan("fr", **{"1": "drawn", "5": "drawn"}))
    write(res / "label_budgets_es.json", plan("es", **{"1": "drawn", "5": "drawn"}))
    write(res / "label_budgets_nl.json", plan("nl", **{"1": "drawn", "5": 0.3}))
    write(res / "finetune_fr_1h.json", finetune_result(frozen=0.40))
    write(res / "finetune_fr_5h.json", finetune_result(frozen=0.35, unfrozen=0.30, scratch=0.45, mfcc=0.50))
    write(res / "finetune_es_1h.json", finetune_result(frozen=0.50))
    write(res / "finetune_es_5h.json", finetune_result(frozen=0.45, unfrozen=0.20, scratch=0.55, mfcc=0.60))
    write(res / "finetune_nl_1h.json", finetune_result(frozen=0.70))
    return run


def test_table_values_and_averages_come_from_the_result_files(cv_run):
    rep = write_report(cv_run, plots=False, log=lambda m: None)
    t = rep["commonvoice_table"]
    assert t["budgets"] == {"small": 1.0, "large": 5.0} and t["comparable"] is True
    assert [c["title"] for c in t["columns"]] == ["1 h frozen", "5 h frozen", "5 h fine-tuned", "5 h from scratch", "5 h MFCC"]
    assert list(t["rows"]) == ["es", "fr", "nl"]
    fr = t["rows"]["fr"]["cells"]
    assert {k: c["per_test"] for k, c in fr.items()} == {
        "small_frozen": 0.40, "large_frozen": 0.35, "large_unfrozen": 0.30, "large_scratch": 0.45, "large_mfcc": 0.50}
    # nl cannot supply 5 h: refused cells, left out of the average (which is over es and fr only)
    nl = t["rows"]["nl"]["cells"]
    assert nl["small_frozen"] == {"per_test": 0.70, "status": "measured", "note": ""}
    for key in ("large_frozen", "large_unfrozen", "large_scratch", "large_mfcc"):
        assert nl[key] == {"per_test": None, "status": "refused", "note": "not enough labelled audio: 0.300 h available"}
    assert t["average_over"] == ["es", "fr"] and list(t["left_out"]) == ["nl"]
    assert t["average"] == pytest.approx({"small_frozen": 0.45, "large_frozen": 0.40, "large_unfrozen": 0.25,
                                          "large_scratch": 0.50, "large_mfcc": 0.55})
    assert t["published"]["small_frozen"] == 0.439 and t["published"]["large_unfrozen"] == 0.310
    md = (cv_run / "report.md").read_text()
    assert "## Common Voice: the paper's table (test PER, %)" in md
    assert "| **average** (2 of 3 locales) | | 45.0 | 40.0 | 25.0 | 50.0 | 55.0 |" in md
    assert "| fr | 7.500 | 40.0 | 35.0 | 30.0 | 45.0 | 50.0 |" in md
    nl_row = next(line for line in md.splitlines() if line.startswith("| nl |"))
    assert nl_row.startswith("| nl | 0.300 | 70.0 |") and nl_row.count("_not enough labelled audio: 0.300 h available_") == 4
    pub = next(line for line in md.splitlines() if "published, not measured here" in line)
    assert pub.endswith("| | 43.9 | 38.8 | 31.0 | 38.3 | – |")
    assert "`nl` is left out of the average (5 h frozen, 5 h fine-tuned, 5 h from scratch: not enough labelled audio" in md
    assert "not comparable" not in md


def test_missing_cells_and_other_budgets(cv_run):
    res = cv_run / "results"
    (res / "finetune_es_5h.json").unlink()  # drawn but not run: es drops out of the average
    rep = write_report(cv_run, plots=False, log=lambda m: None)
    t = rep["commonvoice_table"]
    assert t["rows"]["es"]["cells"]["large_unfrozen"] == {"per_test": None, "status": "missing", "note": "no results/finetune_es_5h.json"}
    assert t["average_over"] == ["fr"] and t["average"]["large_unfrozen"] == pytest.approx(0.30)
    # budgets other than 1 h / 5 h: titles follow them, and the published row is marked not comparable
    for loc in ("fr", "es", "nl"):
        (res / f"label_budgets_{loc}.json").unlink()
    for p in res.glob("finetune_*.json"):
        p.unlink()
    write(res / "label_budgets_fr.json", plan("fr", **{"0_02": "drawn", "0_1": 0.05}))
    write(res / "finetune_fr_0.02h.json", finetune_result(frozen=0.8))
    rep = write_report(cv_run, plots=False, log=lambda m: None)
    t = rep["commonvoice_table"]
    assert t["columns"][0]["title"] == "0.02 h frozen" and t["comparable"] is False and t["average_over"] == []
    assert all(v is None for v in t["average"].values())
    md = (cv_run / "report.md").read_text()
    assert "No locale has every paper cell measured" in md and "the published row is not comparable" in md


def test_inconsistent_plans_are_refused(cv_run, capsys):
    write(cv_run / "results" / "label_budgets_nl.json", plan("nl", **{"1": "drawn", "10": "drawn"}))
    assert main(["report", str(cv_run), "--no-plots"]) != 0
    err = capsys.readouterr().err
    assert "label_budgets_nl.json: budgets 1 h / 10 h differ from 1 h / 5 h" in err
    write(cv_run / "results" / "label_budgets_nl.json", {"kind": "something else"})
    assert main(["report", str(cv_run), "--no-plots"]) != 0
    assert "label_budgets_nl.json: not a label-budget plan" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ recipe utils


def write_locale(folder: Path, splits):
    """Common Voice split TSVs: splits = {split: [(client_id, clip name), ...]}."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        (folder / f"{split}.tsv").write_text("client_id\tpath\tsentence\n" + "".join(f"{c}\t{p}\thello\n" for c, p in rows))


def test_cv_splits_writes_ids_and_refuses_shared_speakers(tmp_path):
    cv = recipe_util("cv_splits")
    loc = tmp_path / "fr"
    write_locale(loc, {"train": [("a", "common_voice_fr_1.mp3"), ("b", "common_voice_fr_2.mp3")],
                       "dev": [("c", "common_voice_fr_3.mp3")], "test": [("d", "common_voice_fr_4.mp3")]})
    assert cv.main([str(loc), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "train_ids.txt").read_text() == "common_voice_fr_1\ncommon_voice_fr_2\n"
    assert (tmp_path / "out" / "test_ids.txt").read_text() == "common_voice_fr_4\n"
    write_locale(loc, {"test": [("d", "common_voice_fr_4.mp3"), ("b", "common_voice_fr_5.mp3")]})
    with pytest.raises(cv.SplitError) as err:
        cv.write_split_ids(loc, tmp_path / "out2")
    assert f"{loc / 'test.tsv'} shares 1 client_id(s) with {loc / 'train.tsv'} (e.g. 'b')" in str(err.value)
    assert not (tmp_path / "out2").exists()  # nothing written


def test_label_budgets_are_nested_and_refused_when_too_large(tmp_path):
    lb = recipe_util("label_budgets")
    # 6 speakers x 10 clips of 1..10 s at 16 kHz, one without a transcription: 320 s = 0.089 h in the pool
    manifest, transcripts, train = [], [], []
    for s in range(6):
        for i in range(10):
            uid = f"spk{s}_{i}"
            manifest.append(f"{uid}\t/nonexistent/{uid}.mp3\tspk{s}\t{16000 * (i + 1)}\t16000")
            if not (s == 5 and i == 9):
                transcripts.append(f"{uid} a b")
            train.append(uid)
    train.append("not_in_manifest")
    (tmp_path / "m.tsv").write_text("id\tpath\tspeaker\tnum_samples\tsample_rate\n" + "\n".join(manifest) + "\n")
    (tmp_path / "t.txt").write_text("\n".join(transcripts) + "\n")
    (tmp_path / "p.txt").write_text("0 sil\n1 a\n2 b\n")
    (tmp_path / "train_ids.txt").write_text("\n".join(train) + "\n")
    args = ["--manifest", str(tmp_path / "m.tsv"), "--phones", str(tmp_path / "p.txt"), "--transcripts", str(tmp_path / "t.txt"),
            "--train-ids", str(tmp_path / "train_ids.txt"), "--locale", "fr", "--out-dir", str(tmp_path / "out"),
            "--plan", str(tmp_path / "plan.json")]
    assert lb.main(args + ["--hours", "0.08,0.02,0.2"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["pool"] == {"train_ids": str(tmp_path / "train_ids.txt"), "listed": 61, "utterances": 59,
                            "hours": pytest.approx(320 / 3600), "speakers": 6, "not_in_manifest": 1, "no_transcript": 1}
    small, large, refused = plan["budgets"]
    assert [b["name"] for b in plan["budgets"]] == ["0.02h", "0.08h", "0.2h"]
    assert refused == {"name": "0.2h", "hours": 0.2, "status": "refused", "available_hours": pytest.approx(320 / 3600),
                       "reason": "not enough labelled audio: 0.089 h available"}
    assert not (tmp_path / "out" / "train_0.2h_ids.txt").exists()
    ids = {b["name"]: (tmp_path / "out" / f"train_{b['name']}_ids.txt").read_text().split() for b in (small, large)}
    assert set(ids["0.02h"]) < set(ids["0.08h"])  # nested: the small budget is part of the large one
    assert small["drawn_from"] == "0.08h" and large["drawn_from"] == "pool"
    durations = {f"spk{s}_{i}": i + 1 for s in range(6) for i in range(10)}
    for b in (small, large):
        seconds = sum(durations[u] for u in ids[b["name"]])
        assert b["drawn_hours"] == pytest.approx(seconds / 3600) and b["hours"] * 3600 - 10 < seconds <= b["hours"] * 3600
    assert large["speakers"] == 6 and "spk5_9" not in ids["0.08h"]
    assert lb.main(args + ["--hours", "1,x"]) == 1
