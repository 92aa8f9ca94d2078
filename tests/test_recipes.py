"""Both recipes end to end on tiny generated corpora with the `fast` config: every stage runs, the
report exists with finite numbers in range, and a re-run skips finished work."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("espeakng_loader")


def run(script, tmp_path, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = ["bash", str(ROOT / "recipes" / script / "run.sh"), "--demo", "--conf", "fast",
           "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"), *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def fraction(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_librispeech_recipe_end_to_end(tmp_path):
    run("librispeech", tmp_path, "--demo-speakers", "3", "--demo-utterances", "5", "--hours", "0.05")
    exp = tmp_path / "exp"
    report = json.loads((exp / "report.json").read_text())
    for task in ("phone_probe", "speaker_probe"):
        for name in ("model", "mfcc", "random_init"):
            assert fraction(report[task][name]["accuracy"]), (task, name)
    # MFCC really decodes phones on the generated speech (40 classes; silence alone is ~15-20%)
    assert report["phone_probe"]["mfcc"]["accuracy"] > 0.35
    for cond in ("frozen", "unfrozen", "mfcc", "scratch"):
        per = report["finetune"][cond]["per_test"]
        assert math.isfinite(per) and per >= 0
    assert report["pretraining"]["steps"] == 40
    md = (exp / "report.md").read_text()
    assert "Phone accuracy" in md and "PER" in md
    for name in ("model", "mfcc", "random_init"):
        assert fraction(report["abx"][name]["within"]) and fraction(report["abx"][name]["across"]), name
    for name in ("model", "mfcc"):
        assert 0 < report["units"][name]["pnmi"] <= 1 and report["units"][name]["used_units"] > 1, name
    assert "ABX within-speaker error" in md and "Discrete units" in md
    assert all((exp / "log" / f"stage{i}.log").is_file() for i in range(9))
    # idempotent: a second run finds everything done and changes no result
    before = {p.name: p.stat().st_mtime for p in (exp / "results").iterdir()}
    again = run("librispeech", tmp_path, "--demo-speakers", "3", "--demo-utterances", "5", "--hours", "0.05", "--stage", "1", "--stop-stage", "7")
    assert "already trained" in again.stdout + again.stderr and "up to date" in again.stdout + again.stderr
    assert {p.name: p.stat().st_mtime for p in (exp / "results").iterdir()} == before
    # other fine-tuning inputs: the old checkpoints are moved aside (kept), not resumed into
    changed = run("librispeech", tmp_path, "--demo-speakers", "3", "--demo-utterances", "5", "--hours", "0.04", "--stage", "7", "--stop-stage", "7")
    aside = list(exp.glob("finetune.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "frozen" / "result.json").is_file(), changed.stdout[-2000:]
    assert "moved to" in changed.stdout + changed.stderr
    assert json.loads((exp / "results" / "finetune.json").read_text())["config"]["hours"] == 0.04
    assert (exp / "finetune" / "inputs.json").is_file()


def test_commonvoice_recipe_end_to_end(tmp_path):
    """The paper's cells on a tiny corpus (one training speaker, 4 clips, 0.004-0.005 h per locale):
    0.001 h frozen and 0.003 h frozen / fine-tuned / scratch / MFCC, the 0.001 h clips inside the
    0.003 h ones; then a 5 h budget, which the corpus cannot supply, is refused and its cells say so."""
    args = ("--demo-languages", "en-us,fr", "--demo-speakers", "3", "--demo-utterances", "4")
    run("commonvoice", tmp_path, *args, "--label-hours", "0.003,0.001")
    exp = tmp_path / "exp"
    report = json.loads((exp / "report.json").read_text())
    assert fraction(report["speaker_probe"]["model"]["accuracy"])
    by_locale = report["finetune_by_locale"]
    assert set(by_locale) == {"en_0.001h", "en_0.003h", "fr_0.001h", "fr_0.003h"}
    for loc in ("en", "fr"):
        assert list(by_locale[f"{loc}_0.001h"]) == ["frozen"]
        assert list(by_locale[f"{loc}_0.003h"]) == ["frozen", "unfrozen", "mfcc", "scratch"]
        small = set((tmp_path / "data" / loc / "train_0.001h_ids.txt").read_text().split())
        large = set((tmp_path / "data" / loc / "train_0.003h_ids.txt").read_text().split())
        assert small and small < large
        assert by_locale[f"{loc}_0.003h"]["frozen"]["train_utterances"] == len(large)
    table = report["commonvoice_table"]
    assert table["average_over"] == ["en", "fr"] and table["comparable"] is False
    for key, (budget, cond) in {"small_frozen": ("0.001h", "frozen"), "large_unfrozen": ("0.003h", "unfrozen")}.items():
        values = [by_locale[f"{loc}_{budget}"][cond]["per_test"] for loc in ("en", "fr")]
        assert table["average"][key] == pytest.approx(sum(values) / 2)
    assert (tmp_path / "data" / "corpus" / "fr" / "clips").is_dir()
    # ABX and units per locale: the first locale in results/ (the report's), the other in results/fr/
    for name in ("model", "mfcc", "random_init"):
        assert fraction(report["abx"][name]["within"]) and fraction(report["abx"][name]["across"]), name
    for name in ("model", "mfcc"):
        assert 0 < report["units"][name]["pnmi"] <= 1 and report["units"][name]["used_units"] > 1, name
        fr = json.loads((exp / "results" / "fr" / f"units_{name}.json").read_text())
        en = json.loads((exp / "results" / f"units_{name}.json").read_text())
        assert fr["units"] == en["units"] and fr["quality"]["pnmi"] != en["quality"]["pnmi"]
    assert fraction(json.loads((exp / "results" / "fr" / "abx.json").read_text())["results"]["model"]["within"])
    assert all((exp / "log" / f"stage{i}.log").is_file() for i in range(9))
    # a budget the train split cannot supply: not trained, and the report says why
    out = run("commonvoice", tmp_path, *args, "--label-hours", "0.001,5", "--stage", "7")
    assert (out.stdout + out.stderr).count("5 h budget not trained: not enough labelled audio") == 2
    report = json.loads((exp / "report.json").read_text())
    assert not (exp / "results" / "finetune_en_5h.json").exists()
    cell = report["commonvoice_table"]["rows"]["en"]["cells"]["large_unfrozen"]
    assert cell["status"] == "refused" and cell["note"].startswith("not enough labelled audio: 0.00")
    assert "_not enough labelled audio: 0.00" in (exp / "report.md").read_text()


def test_recipe_help_and_bad_options(tmp_path):
    for script in ("librispeech", "commonvoice"):
        out = subprocess.run(["bash", str(ROOT / "recipes" / script / "run.sh"), "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "--stage" in out.stdout
        bad = subprocess.run(["bash", str(ROOT / "recipes" / script / "run.sh"), "--no-such-option", "1"],
                             capture_output=True, text=True, env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
        assert bad.returncode != 0 and "unknown option --no-such-option" in bad.stderr
    missing = subprocess.run(["bash", str(ROOT / "recipes" / "librispeech" / "run.sh"), "--librispeech-root", str(tmp_path / "nope"),
                              "--data-dir", str(tmp_path / "d"), "--exp-dir", str(tmp_path / "e"), "--stop-stage", "0"],
                             capture_output=True, text=True, env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"))
    assert missing.returncode != 0 and "folder not found" in missing.stderr
