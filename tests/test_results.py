"""Typed result records (cpc_speech.results): exact round trips and one-line errors."""

from __future__ import annotations

import json

import pytest

from cpc_speech.results import FinetuneResult, ProbeResult, ResultError

PHONE = {
    "task": "phone", "protocol": "frame", "layer": "context", "context_frames": 0,
    "results": {
        "mfcc": {"accuracy": 0.5, "train_utterances": 10, "train_frames": 900, "short_utterances": 1,
                 "feature_dim": 39, "best": {"weight_decay": 0.0, "epochs": 3}, "per_class_accuracy": {"SIL": 0.9, "AA": None},
                 "confusion": [[9, 1], [2, 3]], "seconds": 1.5},
        "model": {"accuracy": 0.625, "test_frames": 400, "feature_dim": 256, "best": {"epochs": 8},
                  "per_class_accuracy": {"SIL": 0.95, "AA": 0.3}, "dev_curve": [0.1, 0.2]},
    },
    "labels": ["SIL", "AA"], "majority": {"label": "SIL", "accuracy": 0.2}, "model_path": "/r/best.pt",
    "manifest": "train.tsv", "dev_ids": ["a", "b"], "seed": 0, "fit_config": {"lr": 0.01}, "seconds": 3.0,
}

FINETUNE = {
    "finetune": {
        "mfcc": {"per_dev": 0.2, "per_test": 0.25, "train_hours": 0.1, "train_utterances": 30, "best_epoch": 9,
                 "epochs_run": 12, "stopped_early": True, "initial_dev_per": 1.0, "seconds": 20.0,
                 "decoder": "beam", "test_errors": {"substitutions": 3, "deletions": 2, "insertions": 1},
                 "curve": [{"epoch": 1, "train_loss": 3.0, "dev_per": 0.9, "dev_loss": 2.0}], "dev_decoding": {"greedy": 0.3}},
        "frozen": {"per_dev": 0.15, "per_test": None, "curve": []},
    },
    "config": {"hours": 0.1, "head": "conv"}, "data": {"train": {"used": 30}}, "phones": ["AA", "AE"], "seconds": 40.0,
    "device": "cpu",
}


def test_probe_round_trip_is_exact():
    rec = ProbeResult.from_dict(json.loads(json.dumps(PHONE)), "p.json", task="phone")
    assert list(rec.results) == ["model", "mfcc"]  # preferred order
    assert rec.results["mfcc"].sizes == {"train_utterances": 10, "train_frames": 900, "short_utterances": 1}
    assert rec.results["mfcc"].extra == {"confusion": [[9, 1], [2, 3]], "seconds": 1.5}
    assert rec.extra["context_frames"] == 0 and rec.labels == ["SIL", "AA"]
    assert rec.to_dict() == PHONE


def test_finetune_round_trip_is_exact():
    rec = FinetuneResult.from_dict(json.loads(json.dumps(FINETUNE)), "f.json")
    assert list(rec.conditions) == ["frozen", "mfcc"]
    assert rec.conditions["mfcc"].test_errors["deletions"] == 2
    assert rec.conditions["frozen"].per_test is None and rec.conditions["frozen"].best_epoch is None
    assert rec.extra == {"device": "cpu"}
    assert rec.to_dict() == FINETUNE


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("results"), "p.json: not a probe result file"),
    (lambda d: d.update(task="speaker"), "p.json: is a speaker probe result, expected a phone probe result"),
    (lambda d: d["results"]["mfcc"].update(accuracy=1.5), r"p.json: results.mfcc.accuracy must be a number in \[0, 1\]"),
    (lambda d: d["results"]["model"].update(accuracy="high"), r"results.model.accuracy must be a number"),
])
def test_probe_errors_name_file_and_key(mutate, message):
    data = json.loads(json.dumps(PHONE))
    mutate(data)
    with pytest.raises(ResultError, match=message):
        ProbeResult.from_dict(data, "p.json", task="phone")


def test_finetune_errors_name_file_and_key(tmp_path):
    data = json.loads(json.dumps(FINETUNE))
    data["finetune"]["frozen"]["per_dev"] = float("nan")
    with pytest.raises(ResultError, match="f.json: finetune.frozen.per_dev must be a number"):
        FinetuneResult.from_dict(data, "f.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ResultError, match="bad.json: expected a JSON object, got list"):
        FinetuneResult.read(bad)
    bad.write_text("{")
    with pytest.raises(ResultError, match="bad.json: not valid JSON"):
        ProbeResult.read(bad)
