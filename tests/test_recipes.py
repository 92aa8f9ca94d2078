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


def test_commonvoice_recipe_end_to_end(tmp_path):
    """Budgets are run smallest first; the 1 h budget already uses every training clip of this tiny
    corpus, so the 5 h budget (same clips) is skipped with a log line."""
    out = run("commonvoice", tmp_path, "--demo-languages", "en-us,fr", "--demo-speakers", "3", "--demo-utterances", "4",
              "--label-hours", "5,1")
    exp = tmp_path / "exp"
    report = json.loads((exp / "report.json").read_text())
    assert fraction(report["speaker_probe"]["model"]["accuracy"])
    by_locale = report["finetune_by_locale"]
    assert set(by_locale) == {"en_1h", "fr_1h"}
    assert (out.stdout + out.stderr).count("already used every training clip: 5 h skipped") == 2
    for entry in by_locale.values():
        assert math.isfinite(entry["frozen"]["per_test"]) and entry["frozen"]["train_hours"] <= 1
    assert (tmp_path / "data" / "corpus" / "fr" / "clips").is_dir()


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
