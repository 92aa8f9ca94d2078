"""Typed result records (cpc_speech.results): exact round trips and one-line errors."""

from __future__ import annotations

import json

import pytest

from cpc_speech.results import AbxResult, FinetuneResult, ProbeResult, ResultError, UnitsResult

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


# ------------------------------------------------------------------ ABX and units, today's layout

ITEMS = {"items": 40, "used": 36, "no_features": 0, "too_short": 4, "files_without_features": 0, "short_utterances": 1}
ABX = {  # as cpc-speech abx writes it (evaluation/abx.py score_sources)
    "format_version": 1, "within": 0.125, "across": 0.25,
    "results": {
        "mfcc": {"within": 0.2, "across": 0.375, "layer": None, "features": "mfcc", "items": ITEMS,
                 "details": {"within": {"cells": 3, "pairs": 10, "seconds": 0.1}}, "seconds": 0.5},
        "model": {"within": 0.125, "across": 0.25, "layer": "context", "features": "/r/best.pt", "items": ITEMS,
                  "details": {"across": {"cells": 0, "reason": "no cell"}}, "seconds": 0.25},
    },
    "item_file": "dev.item", "layer": "context", "modes": ["within", "across"], "distance": "cosine",
    "max_size_group": 10, "max_x_across": 5, "seed": 0, "frame_rule": "libri-light", "kl_normalised": False,
    "frame_seconds": 0.01, "seconds": 1.0,
}
UNITS = {  # as cpc-speech quantize --results writes it (evaluation/units.py quantize)
    "format_version": 1, "units": 50, "dim": 256, "seed": 0, "name": "model", "layer": "context", "features": "feats/",
    "fit_frames": 9000, "inertia": 12.5, "assigned_utterances": 30, "short_utterances": 2, "unit_files": "u/units",
    "quality": {"frames": 9000, "utterances": 28, "pnmi": 0.31, "purity": 0.5, "unit_purity": 0.25, "entropy_bits": 5.25,
                "perplexity": 38.0, "used_units": 48, "max_unit_share": 0.0625, "unit_share": [0.5, 0.5]},
    "abx": {"within": 0.125, "across": None}, "seconds": 2.0,
}


def test_abx_and_units_round_trips_are_exact(tmp_path):
    rec = AbxResult.from_json(json.loads(json.dumps(ABX)), "a.json")
    assert list(rec.results) == ["model", "mfcc"] and rec.headline().layer == "context"
    assert rec.results["mfcc"].items["short_utterances"] == 1 and rec.distance == "cosine"
    assert rec.to_dict() == ABX
    units = UnitsResult.from_json(json.loads(json.dumps(UNITS)), "u.json")
    assert units.short_utterances == 2 and units.quality["used_units"] == 48 and units.extra == {"fit_frames": 9000, "inertia": 12.5}
    assert units.to_dict() == UNITS
    # write -> read through a file gives the same record and the same text
    for record, kind in ((rec, AbxResult), (units, UnitsResult)):
        path = record.write(tmp_path / f"{kind.__name__}.json")
        again = kind.from_json(path)
        assert again == record and path.read_text() == record.to_json() == again.to_json()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_abx_mode_subset_and_units_without_labels_round_trip():
    abx = json.loads(json.dumps(ABX))
    for d in [abx] + list(abx["results"].values()):
        d.pop("across")
    abx["modes"] = ["within"]
    assert AbxResult.from_json(abx, "a.json").to_dict() == abx
    units = dict(UNITS, quality=None, abx=None)
    rec = UnitsResult.from_json(units, "u.json")
    assert rec.quality is None and rec.to_dict() == units


def test_records_built_by_producers_round_trip(tmp_path):
    """quantize() and score_sources() build records; their files read back into equal records."""
    import numpy as np

    from cpc_speech.evaluation.abx import AbxConfig, score_sources
    from cpc_speech.evaluation.items import ItemFile
    from cpc_speech.evaluation.sources import FeatureSource
    from cpc_speech.evaluation.units import quantize

    rng = np.random.default_rng(0)
    feats = {f"u{i}": rng.normal(size=(20, 4)).astype(np.float32) for i in range(4)}
    feats["short"] = np.zeros((0, 4), np.float32)
    summary = quantize(feats, 3, tmp_path / "units", seed=1, log=lambda m: None)
    text = (tmp_path / "units" / "quality.json").read_text()
    rec = UnitsResult.read(tmp_path / "units" / "quality.json")
    assert rec.to_dict() == summary == json.loads(text) and rec.short_utterances == 1 and rec.assigned_utterances == 5
    assert rec.to_json() == text

    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    for i, uid in enumerate(["u0", "u1", "u2", "u3", "short"]):
        for k, ph in enumerate("ab"):
            lines.append(f"{uid} {0.05 * k:.2f} {0.05 * k + 0.05:.2f} {ph} x y s{i % 2}")
    (tmp_path / "x.item").write_text("\n".join(lines) + "\n")
    from cpc_speech.evaluation.items import read_item_file

    items: ItemFile = read_item_file(tmp_path / "x.item")
    src = FeatureSource(name="model", features=feats, layer="context", where="mem")
    out = score_sources(items, [src], AbxConfig(modes=("within",)))
    rec = AbxResult.from_json(out, "abx")
    assert rec.to_dict() == out and "across" not in out and rec.headline().items["short_utterances"] == 1


@pytest.mark.parametrize("kind, base, mutate, message", [
    (AbxResult, ABX, lambda d: d.pop("results"), "a.json: not an ABX result file"),
    (AbxResult, ABX, lambda d: d.update(format_version=2), "a.json: format_version is 2; this version of cpc_speech reads 1"),
    (AbxResult, ABX, lambda d: d.update(seed="zero"), 'a.json: seed must be an integer or null, got "zero"'),
    (AbxResult, ABX, lambda d: d["results"]["mfcc"].update(within=None, across=None), "a.json: results.mfcc has neither"),
    (AbxResult, ABX, lambda d: d["results"]["model"]["items"].update(used=3.5), r"a.json: results.model.items.used must be an integer"),
    (UnitsResult, UNITS, lambda d: d.pop("units"), "u.json: not a unit quality file"),
    (UnitsResult, UNITS, lambda d: d.update(short_utterances="2"), 'u.json: short_utterances must be an integer or null, got "2"'),
    (UnitsResult, UNITS, lambda d: d["quality"].update(pnmi=[1]), r"u.json: quality.pnmi must be a number or null, got \[1\]"),
    (ProbeResult, PHONE, lambda d: d.update(labels="SIL AA"), 'p.json: labels must be a list or null, got "SIL AA"'),
    (ProbeResult, PHONE, lambda d: d["results"]["mfcc"].update(short_utterances=True), "p.json: results.mfcc.short_utterances must be an integer"),
    (FinetuneResult, FINETUNE, lambda d: d["finetune"]["mfcc"].update(stopped_early="yes"), "p.json: finetune.mfcc.stopped_early must be true or false"),
    (FinetuneResult, FINETUNE, lambda d: d["finetune"]["mfcc"]["curve"][0].update(epoch="1"), r"p.json: finetune.mfcc.curve\[0\].epoch must be an integer"),
    (FinetuneResult, FINETUNE, lambda d: d["data"]["train"].update(skipped=3), "p.json: data.train.skipped must be an object"),
])
def test_a_missing_or_mistyped_key_names_file_and_key(tmp_path, kind, base, mutate, message):
    data = json.loads(json.dumps(base))
    mutate(data)
    name = "p.json" if kind in (ProbeResult, FinetuneResult) else message.split(":")[0]
    path = tmp_path / name
    path.write_text(json.dumps(data))
    with pytest.raises(ResultError, match=message) as info:
        kind.from_json(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
