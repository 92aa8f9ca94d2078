"""Model bundles: config.json + model.safetensors + model card, loaded back exactly."""

import functools

import json

import numpy as np
import pytest
import torch

import cpc_speech
from cpc_speech.bundle import export_bundle
from cpc_speech.engine.checkpoint import CheckpointError, save_checkpoint
from cpc_speech.cli import main
from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig, PretrainConfig
from cpc_speech.settings import save_config
from cpc_speech.model.cpc import CPCModel

# float32 references: these tests check exactness against one float32 pass on any CPU
extract_fp32 = functools.partial(cpc_speech.extract_features, precision="fp32")


def make_run(root, norm="batch"):
    cfg = CPCConfig(encoder=EncoderConfig(channels=16, norm=norm), context=ContextConfig(kind="gru", hidden=12))
    model = CPCModel(cfg)
    if norm == "batch":  # non-trivial running statistics
        for layer in model.encoder.layers:
            if hasattr(layer, "running_mean"):
                layer.running_mean.normal_()
                layer.running_var.uniform_(0.5, 2.0)
                layer.num_batches_tracked.fill_(42)
    root.mkdir(parents=True)
    save_config(PretrainConfig(model=cfg), root / "config.yaml")
    save_checkpoint(root / "checkpoints" / "best.pt", model, PretrainConfig(model=cfg), step=300)
    report = {
        "pretraining": {"steps": 300},
        "data": {"train": {"manifest": "data/train.tsv", "utterances": 40, "hours": 0.25, "speakers": 4}},
        "phone_probe": {"model": {"accuracy": 0.613}, "mfcc": {"accuracy": 0.55}},
        "speaker_probe": {"model": {"accuracy": 0.97}},
    }
    (root / "report.json").write_text(json.dumps(report))
    return model


def test_bundle_round_trip_and_model_card(tmp_path, capsys):
    model = make_run(tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "bundle", "--out", str(tmp_path / "bundle")]) == 0
    files = sorted(p.name for p in (tmp_path / "bundle").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    info = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert info["format"] == "cpc_speech-bundle" and info["format_version"] == 1 and info["model"]["encoder"]["channels"] == 16
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "| phone probe | model | 61.3 % |" in card and "| speaker probe | model | 97.0 % |" in card
    assert "steps: 300" in card and "data/train.tsv (utterances 40, hours 0.25, speakers 4)" in card
    loaded = cpc_speech.load_model(tmp_path / "bundle")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    wav = np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    np.testing.assert_array_equal(
        extract_fp32(wav, sample_rate=16000, model=loaded),
        extract_fp32(wav, sample_rate=16000, model=model.eval()),
    )
    # a second export refuses to overwrite, and nothing half-written is left behind
    assert main(["export", str(tmp_path / "run"), "--format", "bundle", "--out", str(tmp_path / "bundle")]) == 2
    assert "exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "run"]


def test_bundle_refuses_bad_contents(tmp_path):
    make_run(tmp_path / "run", norm="channel")
    out = export_bundle(tmp_path / "run", tmp_path / "b")
    cfg_path = out / "config.json"
    info = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(info, format_version=2)))
    with pytest.raises(CheckpointError, match="bundle format 2 is newer"):
        cpc_speech.load_model(out)
    wrong = json.loads(json.dumps(info))
    wrong["model"]["context"]["hidden"] = 13
    cfg_path.write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match="model.safetensors: context.rnn.weight_ih_l0 has shape"):
        cpc_speech.load_model(out)
    wrong["model"]["context"]["kind"] = "lstm"
    wrong["model"]["context"]["hidden"] = 12
    cfg_path.write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match="shape"):
        cpc_speech.load_model(out)
    wrong["model"]["encoder"]["norm"] = "batch"
    cfg_path.write_text(json.dumps(wrong))
    with pytest.raises(CheckpointError, match="missing tensor 'encoder.layers.1.num_batches_tracked'"):
        cpc_speech.load_model(out)
    cfg_path.write_text(json.dumps(dict(info, format="something-else")))
    with pytest.raises(CheckpointError, match="not a cpc_speech model bundle"):
        cpc_speech.load_model(out)
