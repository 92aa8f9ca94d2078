"""The report reads result files in the layout today's producers write (fixtures written here
as those producers write them) and shows the short-utterance counts next to the numbers."""

from __future__ import annotations

import json

import pytest

from cpc_speech.report import ReportError, write_report

SIZES = {"train_utterances": 20, "train_frames": 1800, "fit_utterances": 18, "fit_frames": 1600,
         "dev_utterances": 2, "dev_frames": 200, "test_utterances": 6, "test_frames": 500}
PHONE_PROBE = {
    "task": "phone", "protocol": "frame", "layer": "context", "context_frames": 0,
    "results": {
        "model": {"accuracy": 0.625, **SIZES, "short_utterances": 3, "feature_dim": 256,
                  "best": {"weight_decay": 0.001, "epochs": 8, "dev_accuracy": 0.6, "dev_loss": 1.2, "optimizer": "adam"},
                  "per_class_accuracy": {"SIL": 0.9, "AA": 0.35}, "per_class_count": {"SIL": 300, "AA": 200},
                  "confusion": [[270, 30], [130, 70]], "dev_curve": [0.5, 0.6], "seconds": 1.25},
        "mfcc": {"accuracy": 0.5, **SIZES, "short_utterances": 1, "feature_dim": 39,
                 "best": {"weight_decay": 0.0, "epochs": 4, "dev_accuracy": 0.45, "dev_loss": 1.5, "optimizer": "adam"},
                 "per_class_accuracy": {"SIL": 0.8, "AA": None}, "per_class_count": {"SIL": 300, "AA": 0},
                 "confusion": [[240, 60], [0, 0]], "dev_curve": [0.4, 0.45], "seconds": 0.75},
    },
    "labels": ["SIL", "AA"], "majority": {"label": "SIL", "accuracy": 0.6}, "model_path": "/r/checkpoints/best.pt",
    "manifest": "train.tsv", "alignments": "ali.txt", "train_split": "train.txt", "test_split": "test.txt",
    "dev_fraction": 0.1, "dev_ids": ["a"], "seed": 0, "fit_config": {"lr": 0.01}, "cache_dir": "/c", "seconds": 3.5,
}


def split_summary(used, too_short, hours):
    return {"file": "s.txt", "listed": used + too_short + 1, "used": used,
            "skipped": {"missing from manifest": 1, "too short for CTC": too_short} if too_short else {"missing from manifest": 1},
            "hours": hours, "phones": 40 * used}


CONDITION = {
    "per_dev": 0.375, "per_test": 0.4375, "decoder": "greedy", "train_hours": 0.5, "train_utterances": 30, "best_epoch": 3,
    "curve": [{"epoch": 1, "train_loss": 3.5, "dev_per": 0.5, "dev_loss": 2.25}], "initial_dev_per": 1.0, "epochs_run": 4,
    "stopped_early": False, "dev_errors": {"substitutions": 3}, "test_errors": {"substitutions": 2, "deletions": 1, "insertions": 1},
    "dev_decoding": {}, "test_decoding": {}, "started_from": "random head", "device": "cpu", "precision": "fp32",
    "seconds": 12.5, "data_fingerprint": "abc",
}
FINETUNE = {
    "finetune": {"frozen": CONDITION, "mfcc": dict(CONDITION, per_dev=0.5, per_test=0.625, precision=None)},
    "phones": ["<blank>", "AA", "SIL"],
    "config": {"hours": 1.0, "head": "linear", "features": "context", "decode": "greedy", "seed": 0, "model": "/r"},
    "data": {"train": {**split_summary(30, 2, 0.5), "pool_utterances": 33, "speakers": 4},
             "dev": split_summary(8, 1, 0.125), "test": split_summary(10, 0, 0.25), "blank": 0},
    "seconds": 30.0,
}
ITEMS = {"items": 40, "used": 34, "no_features": 0, "too_short": 6, "files_without_features": 0, "short_utterances": 2}
ABX = {
    "format_version": 1, "within": 0.125, "across": 0.25,
    "results": {"model": {"within": 0.125, "across": 0.25, "layer": "context", "features": "/r", "items": ITEMS,
                          "details": {}, "seconds": 0.5}},
    "item_file": "dev.item", "layer": "context", "modes": ["within", "across"], "distance": "cosine",
    "max_size_group": 10, "max_x_across": 5, "seed": 0, "frame_rule": "libri-light", "kl_normalised": False,
    "frame_seconds": 0.01, "seconds": 0.5,
}
UNITS = {
    "format_version": 1, "units": 50, "dim": 256, "seed": 0, "name": "model", "layer": "context", "features": "f/",
    "fit_frames": 900, "inertia": 1.5, "assigned_utterances": 30, "short_utterances": 5, "unit_files": "u/units",
    "quality": None, "abx": None, "seconds": 1.0,
}


@pytest.fixture()
def run(tmp_path):
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  max_steps: 2\n  seed: 0\n")
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in (
        {"split": "train", "step": 1, "loss": 2.0, "accuracy": [0.5], "time": 0.0},
        {"split": "train", "step": 2, "loss": 1.5, "accuracy": [0.75], "time": 1.0},
    )))
    for name, data in (("phone_probe", PHONE_PROBE), ("finetune", FINETUNE), ("abx", ABX), ("units_model", UNITS)):
        (run / "results" / f"{name}.json").write_text(json.dumps(data, indent=2))  # as the producers write them
    return run


def test_todays_files_load_and_short_utterances_are_shown(run):
    rep = write_report(run, plots=False)
    assert rep["phone_probe"]["model"]["accuracy"] == 0.625 and rep["phone_probe"]["model"]["short_utterances"] == 3
    assert rep["phone_probe"]["mfcc"]["short_utterances"] == 1
    assert [rep["details"]["finetune"]["data"][s]["too_short_for_ctc"] for s in ("train", "dev", "test")] == [2, 1, 0]
    assert rep["finetune"]["frozen"]["per_test"] == 0.4375 and rep["finetune"]["mfcc"]["per_dev"] == 0.5
    assert rep["abx"] == {"model": {"within": 0.125, "across": 0.25}} and rep["details"]["abx"]["short_utterances"] == 2
    assert rep["details"]["units"]["model"]["short_utterances"] == 5 and rep["units"]["model"]["pnmi"] is None
    md = (run / "report.md").read_text()
    probe = md.split("## Phone probe", 1)[1].split("| Features", 1)[1].split("\n\n", 1)[0]
    probe = "| Features" + probe
    header = next(line for line in probe.splitlines() if line.startswith("| Features"))
    col = [c.strip() for c in header.strip("|").split("|")].index("Short utterances left out")
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in probe.splitlines() if line.startswith(("| model", "| MFCC")))}
    assert rows["model"][col] == "3" and rows["MFCC"][col] == "1"
    assert "utterances too short for CTC left out: train 2, dev 1, test 0" in md
    assert "Utterances with no feature frame (shorter than the receptive field): 2." in md
    units_row = next(line for line in md.splitlines() if line.startswith("| model | 50 |"))
    assert units_row.rstrip().endswith("| 5 |")


def test_a_mistyped_key_in_a_result_file_is_a_report_error_naming_file_and_key(run):
    bad = run / "results" / "units_model.json"
    bad.write_text(json.dumps(dict(UNITS, short_utterances="5")))
    with pytest.raises(ReportError, match=f"{bad}: short_utterances must be an integer or null"):
        write_report(run, plots=False)
    bad.unlink()
    bad = run / "results" / "finetune.json"
    data = json.loads(json.dumps(FINETUNE))
    data["data"]["dev"]["skipped"] = ["too short for CTC"]
    bad.write_text(json.dumps(data))
    with pytest.raises(ReportError, match=f"{bad}: data.dev.skipped must be an object or null"):
        write_report(run, plots=False)


@pytest.mark.parametrize("residual, words", [(True, "3-layer residual conv CTC head"), (False, "3-layer conv CTC head"),
                                             (None, "3-layer conv CTC head")])
def test_the_fine_tuning_section_names_the_head(run, residual, words):
    config = dict(FINETUNE["config"], head="conv", head_layers=3)
    if residual is not None:  # None: a result written before the setting existed
        config["head_residual"] = residual
    (run / "results" / "finetune.json").write_text(json.dumps(dict(FINETUNE, config=config)))
    write_report(run, plots=False)
    section = (run / "report.md").read_text().split("## Phone recognition", 1)[1]
    assert f"; {words} on context features;" in section
