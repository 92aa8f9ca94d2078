"""``cpc-speech report``: report.json from a real tiny run folder (pretraining, phone / speaker probes and
CTC fine-tuning all produced by the real code), Markdown numbers equal to the JSON numbers, valid PNG
plots, missing sections, several fine-tuning files, baseline markers and errors."""

from __future__ import annotations

import datetime
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cpc_speech.cli import main
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.corpora.manifest import read_manifest
from cpc_speech.report import ReportError, write_report
from cpc_speech.report.inputs import split_run_name
from cpc_speech.report.pretraining import pretraining_section
from cpc_speech.train.trainer import pretrain

SMALL = [
    "model.preset=tiny", "model.predictor.steps=4", "loss.negatives=16", "data.window_samples=4800",
    "data.batch_size=4", "data.num_workers=0", "train.lr=2e-3", "train.warmup_steps=2", "train.log_every=2",
    "train.valid_every=4", "train.valid_batches=2", "train.max_steps=8", "train.checkpoint_every=100", "train.threads=1",
]
PHONES = ["sil", "aa", "iy", "s"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tone_corpus, tmp_path_factory):
    """A real tiny pretraining run with real probe and fine-tuning results in RUN_DIR/results."""
    from cpc_speech.finetune.config import FinetuneConfig
    from cpc_speech.finetune.run import run_finetune
    from cpc_speech.probes.linear import FitConfig
    from cpc_speech.probes.phone import run_phone_probe
    from cpc_speech.probes.speaker import run_speaker_probe

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("report")
    run = root / "run"
    pretrain(config_from_dict(PretrainConfig, {}, SMALL), str(tone_corpus), str(run), valid_manifest=str(tone_corpus), progress=False)
    rows = read_manifest(tone_corpus)
    labels = root / "labels"
    labels.mkdir()
    ali = []
    for r in rows:  # 150 ms "phones" cycling through the inventory, shifted per speaker
        spk = int(r.speaker[3:])
        ali.append(r.id + " " + " ".join(str((i // 15 + spk) % 4) for i in range(r.num_samples // 160)))
    (labels / "ali.txt").write_text("\n".join(ali) + "\n")
    (labels / "phones.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(PHONES)))
    train = [r.id for r in rows if not r.id.endswith("3")]
    test = [r.id for r in rows if r.id.endswith("3")]
    for name, ids in (("train", train), ("test", test), ("ft_train", train[:-4]), ("ft_dev", train[-4:])):
        (labels / f"{name}.txt").write_text("\n".join(ids) + "\n")
    res = run / "results"
    quiet = dict(progress=False, log=lambda m: None, workers=1)
    run_phone_probe(run, tone_corpus, labels / "ali.txt", labels / "train.txt", labels / "test.txt", labels / "phones.txt",
                    out=res / "phone_probe.json", fit=FitConfig(max_epochs=3, weight_decays=(0.0,)), **quiet)
    spk_fit = FitConfig(optimizer="lbfgs", max_epochs=3, weight_decays=(1e-3,))
    run_speaker_probe(run, tone_corpus, labels / "train.txt", labels / "test.txt", out=res / "speaker_probe.json", fit=spk_fit, **quiet)
    run_speaker_probe(run, tone_corpus, labels / "train.txt", labels / "test.txt", protocol="window", window_frames=32,
                      baselines=("mfcc",), out=res / "speaker_probe_window.json", fit=spk_fit, **quiet)
    cfg = FinetuneConfig(model=str(run), manifest=str(tone_corpus), phones=str(labels / "phones.txt"), alignments=str(labels / "ali.txt"),
                         train_split=str(labels / "ft_train.txt"), dev_split=str(labels / "ft_dev.txt"),
                         test_split=str(labels / "test.txt"), hours=None, epochs=2, batch_size=4, threads=1).validate()
    run_finetune(cfg, progress=False, out=str(res / "finetune.json"), log=lambda m: None)
    torch.set_num_threads(n_threads)
    return run


def copy_run(run: Path, dest: Path, results: bool = True) -> Path:
    """A copy of the run folder without its checkpoints (and optionally without results)."""
    skip = {"checkpoints", "plots", "report.json", "report.md"} | (set() if results else {"results"})
    shutil.copytree(run, dest, ignore=lambda d, names: [n for n in names if n in skip or n.endswith(".cache")])
    return dest


def results_of(run: Path, name: str) -> dict:
    return json.loads((run / "results" / name).read_text())


# ----------------------------------------------------------------------------- Markdown parsing


def md_tables(text: str):
    """[(headers, rows)] of every pipe table, cells stripped."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if current is None:
                current = [cells, []]
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current[1].append(cells)
        elif current is not None:
            tables.append(tuple(current))
            current = None
    if current is not None:
        tables.append(tuple(current))
    return tables


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def p1(x):
    return "–" if x is None else f"{100 * x:.1f}"


class Checker:
    """Asserts table cells and remembers which ones were checked, so that unchecked numbers fail."""

    def __init__(self, text):
        self.tables = md_tables(text)
        self.checked = set()

    def find(self, first_header, contains=None):
        hits = [i for i, (h, rows) in enumerate(self.tables) if h[0] == first_header
                and (contains is None or any(contains in " ".join(r) for r in rows) or contains in " ".join(h))]
        assert hits, (first_header, contains, [t[0] for t in self.tables])
        return hits

    def cell(self, t, row_label, header, expected):
        headers, rows = self.tables[t]
        r = next(i for i, row in enumerate(rows) if row[0] == row_label)
        c = headers.index(header)
        assert rows[r][c] == expected, (headers[0], row_label, header, rows[r][c], expected)
        self.checked.add((t, r, c))

    def all_numbers_checked(self):
        for t, (headers, rows) in enumerate(self.tables):
            for r, row in enumerate(rows):
                for c, cell in enumerate(row):
                    if c and NUMBER.fullmatch(cell):
                        assert (t, r, c) in self.checked, f"unchecked number {cell!r} in table {headers} row {row}"


# ----------------------------------------------------------------------------- the full report


def test_report_json_markdown_and_plots(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    assert main(["report", str(run), "--print"]) == 0
    out = capsys.readouterr().out
    rep = json.loads((run / "report.json").read_text())
    md = (run / "report.md").read_text()

    # --- probes: the numbers of the result files, per feature set
    for section, file, names in (("phone_probe", "phone_probe.json", {"model", "mfcc", "random_init"}),
                                 ("speaker_probe", "speaker_probe.json", {"model", "mfcc", "random_init"}),
                                 ("speaker_probe_window", "speaker_probe_window.json", {"model", "mfcc"})):
        src = results_of(run, file)
        assert set(rep[section]) == names
        for name, entry in rep[section].items():
            s = src["results"][name]
            assert entry["accuracy"] == s["accuracy"] and 0 <= entry["accuracy"] <= 1
            for key in ("train_utterances", "train_frames", "dev_utterances", "test_utterances", "test_frames", "feature_dim"):
                assert entry[key] == s[key], (section, name, key)
        assert rep["details"][section]["majority"] == src["majority"]
    assert rep["speaker_probe"]["model"]["speakers"] == 4 and rep["speaker_probe"]["model"]["test_examples"] == 4
    assert rep["speaker_probe_window"]["mfcc"]["test_examples"] > rep["speaker_probe_window"]["mfcc"]["test_utterances"]
    pca = rep["phone_probe"]["model"]["per_class_accuracy"]
    assert list(pca) == PHONES and pca == results_of(run, "phone_probe.json")["results"]["model"]["per_class_accuracy"]

    # --- fine-tuning
    ft = results_of(run, "finetune.json")["finetune"]
    assert list(rep["finetune"]) == ["frozen", "unfrozen", "mfcc", "scratch"] and "finetune_by_locale" not in rep
    for name, c in rep["finetune"].items():
        for key in ("per_dev", "per_test", "train_hours", "train_utterances", "best_epoch", "epochs_run"):
            assert c[key] == ft[name][key], (name, key)
        assert [r["dev_per"] for r in c["curve"]] == [r["dev_per"] for r in ft[name]["curve"]]

    # --- pretraining, recomputed from log.jsonl here
    events = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    train = [e for e in events if e["split"] == "train"]
    valid = [e for e in events if e["split"] == "valid"]
    p = rep["pretraining"]
    assert p["steps"] == p["max_steps"] == 8 and p["finished"] and not p["resumed"]
    assert (p["train_events"], p["valid_events"]) == (4, 2)
    assert p["final_train_loss"] == train[-1]["loss"] and p["final_valid_loss"] == valid[-1]["loss"]
    assert p["best_train_loss"] == min(e["loss"] for e in train) and p["best_valid_loss"] == min(e["loss"] for e in valid)
    assert p["final_valid_accuracy"] == valid[-1]["accuracy"] and len(p["final_valid_accuracy"]) == 4
    assert p["final_accuracy"]["split"] == "valid" and p["final_accuracy"]["per_step"] == valid[-1]["accuracy"]
    assert p["final_accuracy"]["mean"] == pytest.approx(valid[-1]["accuracy_mean"])
    assert p["audio_seconds_per_second"] > 0 and p["wall_time_seconds"] == pytest.approx(events[-1]["time"] - events[0]["time"])
    assert p["parameters"] == events[0]["parameters"]

    # --- config, data, versions, seeds, created
    assert rep["config"] == yaml.safe_load((run / "config.yaml").read_text())
    assert rep["data"]["train"]["utterances"] == 16 and rep["data"]["train"]["speakers"] == 4
    assert rep["data"]["train"]["hours"] == pytest.approx(16 * 1.5 / 3600)
    assert set(rep["versions"]) >= {"cpc_speech", "torch", "numpy", "python", "platform"}
    assert rep["versions"]["torch"] == torch.__version__
    assert rep["seeds"] == {"pretrain": 0, "phone_probe": 0, "speaker_probe": 0, "speaker_probe_window": 0, "finetune": 0}
    assert datetime.datetime.fromisoformat(rep["created"]).tzinfo is not None
    assert rep["missing"] == {}

    # --- Markdown: every number of every table is a JSON number formatted
    ck = Checker(md)
    (head,) = ck.find("Task")
    majority = {s: rep["details"][s]["majority"]["accuracy"] for s in ("phone_probe", "speaker_probe", "speaker_probe_window")}
    for section, label in (("phone_probe", "Phone accuracy (%, frame, context)"),
                           ("speaker_probe", "Speaker accuracy (%, utterance, context)"),
                           ("speaker_probe_window", "Speaker accuracy (%, window, context)")):
        sec = rep[section]
        for key, col in (("model", "Model"), ("mfcc", "MFCC"), ("random_init", "Random init")):
            ck.cell(head, label, col, p1(sec[key]["accuracy"]) if key in sec else "–")
        ck.cell(head, label, "Majority class", p1(majority[section]))
        notes = ck.tables[head][1][[r[0] for r in ck.tables[head][1]].index(label)][-1]
        assert ("below MFCC" in notes) == (sec["model"]["accuracy"] < sec["mfcc"]["accuracy"])
        assert ("below random init" in notes) == ("random_init" in sec and sec["model"]["accuracy"] < sec["random_init"]["accuracy"])
        assert ("below majority class" in notes) == (sec["model"]["accuracy"] < majority[section])
    (per,) = ck.find("Condition")
    titles = {"frozen": "Model frozen", "unfrozen": "Model fine-tuned", "mfcc": "MFCC", "scratch": "Scratch"}
    for name, c in rep["finetune"].items():
        ck.cell(per, titles[name], "Dev PER (%)", p1(c["per_dev"]))
        ck.cell(per, titles[name], "Test PER (%)", p1(c["per_test"]))
        ck.cell(per, titles[name], "Train hours", f"{c['train_hours']:.3f}")
        for key, col in (("train_utterances", "Train utterances"), ("best_epoch", "Best epoch"), ("epochs_run", "Epochs")):
            ck.cell(per, titles[name], col, str(c[key]))
    probe_tables = ck.find("Features")
    assert len(probe_tables) == 3
    for t, section in zip(probe_tables, ("phone_probe", "speaker_probe", "speaker_probe_window")):
        unit = "frames" if section == "phone_probe" else "examples"
        for name, e in rep[section].items():
            label = {"model": "model", "mfcc": "MFCC", "random_init": "random init"}[name]
            ck.cell(t, label, "Test accuracy (%)", p1(e["accuracy"]))
            for key, col in (("train_utterances", "Train utterances"), (f"train_{unit}", f"Train {unit}"),
                             ("test_utterances", "Test utterances"), (f"test_{unit}", f"Test {unit}"), ("feature_dim", "Feature dim"),
                             ("short_utterances", "Short utterances left out")):
                ck.cell(t, label, col, str(e[key]))
            ck.cell(t, label, "Weight decay", f"{e['best']['weight_decay']:g}")
            ck.cell(t, label, "Epochs", str(e["best"]["epochs"]))
    (pre,) = ck.find("Quantity")
    for label, expected in (
        ("Steps trained", "8"), ("Max steps (config)", "8"),
        (f"Final train loss (step {p['final_train_step']})", f"{p['final_train_loss']:.4f}"),
        (f"Best train loss (step {p['best_train_step']})", f"{p['best_train_loss']:.4f}"),
        (f"Final valid loss (step {p['final_valid_step']})", f"{p['final_valid_loss']:.4f}"),
        (f"Best valid loss (step {p['best_valid_step']})", f"{p['best_valid_loss']:.4f}"),
        ("Final mean InfoNCE accuracy (%, valid, step 8)", p1(p["final_accuracy"]["mean"])),
        ("Throughput (audio seconds per second, median)", f"{p['audio_seconds_per_second']:.1f}"),
        ("Wall time (seconds, first to last log event)", f"{p['wall_time_seconds']:.1f}"),
        ("Parameters", str(p["parameters"])), ("Train utterances", "16"),
    ):
        ck.cell(pre, label, "Value", expected)
    (acc,) = ck.find("Split", contains="k=1")
    for split in ("valid", "train"):
        label = f"{split} (step 8)"
        for k, a in enumerate(p[f"final_{split}_accuracy"], 1):
            ck.cell(acc, label, f"k={k}", p1(a))
        ck.cell(acc, label, "mean", p1(p[f"final_{split}_accuracy_mean"]))
    (data,) = ck.find("Split", contains="Speakers")
    for split in ("train", "valid"):
        d = rep["data"][split]
        ck.cell(data, split, "Utterances", str(d["utterances"]))
        ck.cell(data, split, "Hours", f"{d['hours']:.3f}")
        ck.cell(data, split, "Speakers", str(d["speakers"]))
    ck.all_numbers_checked()

    # --- --print: the headline table on stdout, and where the report is
    headline = md.split("## Headline", 1)[1].split("\n\n")[1]
    assert headline.startswith("| Task |")
    assert headline in out and f"{run / 'report.md'}" in out

    # --- plots: valid, non-trivial PNGs, linked from the Markdown
    import matplotlib.image as mpimg

    assert set(rep["plots"]) == {"loss", "accuracy_by_k", "phone_confusion", "phone_accuracy", "finetune_curves"}
    for key, rel in rep["plots"].items():
        path = run / rel
        assert path.parent == run / "plots" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5000, key
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300, (key, img.shape)
        assert float(np.std(img[..., :3])) > 0.05, key  # not a blank canvas
        assert f"]({rel})" in md
    assert not list((run / "plots").glob(".*"))  # no temporary files left behind


# ----------------------------------------------------------------------------- missing sections


def test_missing_sections_are_reported_and_stale_plots_removed(run_dir, tmp_path, capsys):
    run = copy_run(run_dir, tmp_path / "run")
    (run / "plots").mkdir()
    for name in ("finetune_curves.png", "phone_confusion.png", "mine.png"):  # plots of an earlier report + a user's file
        (run / "plots" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    shutil.rmtree(run / "results")
    (run / "manifests.json").unlink()
    capsys.readouterr()
    assert main(["report", str(run), "--print"]) == 0
    out = capsys.readouterr()
    rep = json.loads((run / "report.json").read_text())
    for section in ("phone_probe", "speaker_probe", "speaker_probe_window", "finetune", "data"):
        assert section not in rep and section in rep["missing"], section
    assert "results/phone_probe.json" in rep["missing"]["phone_probe"]
    md = (run / "report.md").read_text()
    assert "_Missing: no results/phone_probe.json" in md and "_Missing: no results/finetune.json" in md
    assert "_Missing: no manifests.json" in md
    assert "No probe results" in out.out and "missing:" in out.err
    assert set(rep["plots"]) == {"loss", "accuracy_by_k"}
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["accuracy_by_k.png", "loss.png", "mine.png"]
    assert rep["pretraining"]["steps"] == 8  # the pretraining part is still complete
    Checker(md).find("Quantity")


def test_run_without_validation_and_torn_log(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run", results=False)
    lines = [ln for ln in (run / "log.jsonl").read_text().splitlines() if '"valid"' not in ln]
    (run / "log.jsonl").write_text("\n".join(lines) + '\n{"split": "train", "st')  # killed mid-write
    rep = write_report(run, plots=False, log=lambda m: None)
    p = rep["pretraining"]
    assert p["skipped_log_lines"] == 1 and p["valid_events"] == 0 and p["final_valid_loss"] is None
    assert p["final_accuracy"]["split"] == "train" and "validation" in rep["missing"]
    md = (run / "report.md").read_text()
    assert "no validation events" in md and "1 unreadable line(s)" in md
    assert not (run / "plots").exists()


def test_pretraining_summary_of_a_resumed_log():
    ev = [
        {"split": "info", "step": 0, "time": 100.0, "parameters": 10},
        {"split": "train", "step": 2, "loss": 5.0, "accuracy": [0.1, 0.2], "time": 101.0, "audio_seconds_per_second": 1.0},
        {"split": "train", "step": 4, "loss": 4.0, "accuracy": [0.2, 0.2], "time": 102.0, "audio_seconds_per_second": 10.0},
        {"split": "train", "step": 6, "loss": 3.9, "accuracy": [0.3, 0.2], "time": 103.0, "audio_seconds_per_second": 12.0},
        # killed after step 6, resumed from the step-4 checkpoint: step 6 logged again
        {"split": "train", "step": 6, "loss": 3.5, "accuracy": [0.4, 0.2], "time": 200.0, "audio_seconds_per_second": 2.0},
        {"split": "valid", "step": 6, "loss": 3.7, "accuracy": [0.5, 0.3], "accuracy_mean": 0.4, "time": 201.0},
        {"split": "train", "step": 8, "loss": 3.6, "accuracy": [0.5, 0.4], "time": 202.0, "audio_seconds_per_second": 11.0},
    ]
    p = pretraining_section(ev, 0, {"train": {"max_steps": 10}})
    assert p["steps"] == 8 and not p["finished"] and p["resumed"] and p["train_events"] == 4
    assert p["best_train_loss"] == 3.5 and p["best_train_step"] == 6  # the re-logged value wins
    assert p["final_train_loss"] == 3.6 and p["final_valid_loss"] == 3.7 and p["best_valid_step"] == 6
    assert p["final_accuracy"] == {"split": "valid", "step": 6, "per_step": [0.5, 0.3], "mean": pytest.approx(0.4)}
    assert p["audio_seconds_per_second"] == 11.0  # median of 10, 12, 11 (first interval of each start left out)
    assert p["audio_seconds_per_second_last"] == 11.0
    assert p["wall_time_seconds"] == 102.0 and p["parameters"] == 10
    assert split_run_name("fr_1h") == ("fr", "1h") and split_run_name("en") == ("en", None)
    assert split_run_name("10min") == (None, "10min") and split_run_name("pt_BR_all") == ("pt_BR", "all")
    assert split_run_name("zh-CN_0.5h") == ("zh-CN", "0.5h") and split_run_name("fr_allh") == ("fr", "allh")


# ----------------------------------------------------------------------------- several runs, markers


def _edited(src: dict, **per_condition) -> dict:
    out = json.loads(json.dumps(src))
    for name, values in per_condition.items():
        out["finetune"][name].update(values)
    return out


def test_several_finetune_files_and_baseline_markers(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run", results=False)
    res = tmp_path / "other_results"
    res.mkdir()
    ft = results_of(run_dir, "finetune.json")
    runs = {
        "finetune_fr_1h.json": _edited(ft, frozen={"per_test": 0.40, "per_dev": 0.41}, mfcc={"per_test": 0.30}, scratch={"per_test": 0.5}),
        "finetune_fr_10min.json": _edited(ft, frozen={"per_test": 0.20}, unfrozen={"per_test": 0.15}, mfcc={"per_test": 0.30}, scratch={"per_test": 0.5}),
        "finetune_en.json": _edited(ft, frozen={"per_test": 0.10}, mfcc={"per_test": 0.30}),
    }
    for name, data in runs.items():
        (res / name).write_text(json.dumps(data))
    phone = results_of(run_dir, "phone_probe.json")
    phone["results"]["model"]["accuracy"] = 0.5
    phone["results"]["mfcc"]["accuracy"] = 0.75
    phone["results"]["random_init"]["accuracy"] = 0.25
    phone["majority"]["accuracy"] = 0.2
    (res / "phone_probe.json").write_text(json.dumps(phone))
    speaker = results_of(run_dir, "speaker_probe.json")
    for name, a in (("model", 0.9), ("mfcc", 0.8), ("random_init", 0.95)):
        speaker["results"][name]["accuracy"] = a
    (res / "speaker_probe.json").write_text(json.dumps(speaker))

    rep = write_report(run, plots=True, results=str(res), log=lambda m: None)
    assert "finetune" not in rep and list(rep["finetune_by_locale"]) == ["en", "fr_10min", "fr_1h"]
    assert rep["details"]["finetune_by_locale"]["fr_1h"]["locale"] == "fr"
    assert rep["details"]["finetune_by_locale"]["fr_1h"]["budget"] == "1h"
    assert rep["finetune_by_locale"]["fr_1h"]["frozen"]["per_test"] == 0.40
    assert rep["seeds"]["finetune_by_locale"] == {"en": 0, "fr_10min": 0, "fr_1h": 0}
    assert {f"finetune_curves_{n}" for n in ("en", "fr_10min", "fr_1h")} <= set(rep["plots"])
    assert "speaker_probe_window" in rep["missing"] and "finetune" not in rep["missing"]
    md = (run / "report.md").read_text()
    ck = Checker(md)
    (head,) = ck.find("Task")
    rows = {r[0]: r for r in ck.tables[head][1]}
    assert rows["Phone accuracy (%, frame, context)"][1:5] == ["50.0", "75.0", "25.0", "20.0"]
    assert rows["Phone accuracy (%, frame, context)"][-1] == "**below MFCC**"
    assert rows["Speaker accuracy (%, utterance, context)"][-1] == "**below random init**"
    # summary tables (test and dev PER by run) and one detailed table per run
    summaries = ck.find("Run")
    assert len(summaries) == 2
    for t, split in zip(summaries, ("test", "dev")):
        for name, conds in rep["finetune_by_locale"].items():
            for cond, col in (("frozen", "Model frozen"), ("unfrozen", "Model fine-tuned"), ("mfcc", "MFCC"), ("scratch", "Scratch")):
                ck.cell(t, f"`{name}`", col, p1(conds[cond][f"per_{split}"]))
            ck.cell(t, f"`{name}`", "Train hours", f"{conds['frozen']['train_hours']:.3f}")
    detail = ck.find("Condition")
    assert len(detail) == 3
    sections = md.split("### `")
    fr1h = next(s for s in sections if s.startswith("fr_1h`"))
    frozen_row = next(ln for ln in fr1h.splitlines() if ln.startswith("| Model frozen |"))
    assert "| 41.0 | 40.0 |" in frozen_row and "**worse than MFCC** (test)" in frozen_row and "scratch" not in frozen_row
    fr10 = next(s for s in sections if s.startswith("fr_10min`"))
    assert "worse than" not in fr10
    en = next(s for s in sections if s.startswith("en`"))
    assert "worse than MFCC" not in next(ln for ln in en.splitlines() if ln.startswith("| Model frozen |"))


def test_explicit_files_override_the_results_folder(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run", results=False)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(run_dir / "results", elsewhere, ignore=lambda d, names: [n for n in names if n.endswith(".cache")])
    assert main(["report", str(run), "--no-plots", "--phone-probe", str(elsewhere / "phone_probe.json"),
                 "--finetune", str(elsewhere / "finetune.json")]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["sources"]["phone_probe"] == str(elsewhere / "phone_probe.json")
    assert "finetune" in rep and "speaker_probe" in rep["missing"]
    # --results: the folder's files; one explicit --finetune named after its file still gives "finetune"
    shutil.copy(elsewhere / "finetune.json", tmp_path / "finetune_de.json")
    assert main(["report", str(run), "--no-plots", "--results", str(elsewhere), "--finetune", str(tmp_path / "finetune_de.json")]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert "speaker_probe_window" in rep and rep["details"]["finetune"]["locale"] == "de"
    # two explicit files: per-run tables
    assert main(["report", str(run), "--no-plots", "--finetune", str(elsewhere / "finetune.json"), str(tmp_path / "finetune_de.json")]) == 0
    rep = json.loads((run / "report.json").read_text())
    assert list(rep["finetune_by_locale"]) == ["de", "default"]


# ----------------------------------------------------------------------------- errors


def test_errors(run_dir, tmp_path, capsys):
    def fails(*argv):
        capsys.readouterr()
        assert main(["report", *map(str, argv)]) == 2
        return capsys.readouterr().err

    assert "run folder not found" in fails(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.yaml" in fails(empty)
    run = copy_run(run_dir, tmp_path / "run")
    bad = run / "results" / "speaker_probe.json"
    bad.write_text('{"task": "speaker", "results": {')  # truncated
    err = fails(run)
    assert str(bad) in err and "not valid JSON" in err
    bad.unlink()
    (run / "results" / "finetune_fr.json").write_text("[1, 2]")
    err = fails(run)
    assert "finetune_fr.json" in err and "expected a JSON object" in err
    (run / "results" / "finetune_fr.json").write_text('{"finetune": {"frozen": {"per_test": 0.3}}}')
    assert "finetune.frozen.per_dev" in fails(run)
    (run / "results" / "finetune_fr.json").unlink()
    err = fails(run, "--phone-probe", run / "results" / "speaker_probe_window.json")
    assert "is a speaker probe result, expected a phone probe result" in err
    assert "--phone-probe: file not found" in fails(run, "--phone-probe", tmp_path / "missing.json")
    assert "--results: folder not found" in fails(run, "--results", tmp_path / "no_results")
    with pytest.raises(ReportError, match="not a probe result file"):
        (run / "results" / "speaker_probe.json").write_text('{"task": "speaker"}')
        write_report(run, plots=False)
