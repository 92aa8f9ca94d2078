"""Config dataclasses: YAML/JSON round trips, presets, overrides, clear errors."""

import json

import pytest

from cpc_speech.config import CPCConfig, PretrainConfig, config_from_dict, load_config, preset
from cpc_speech.settings import from_dict, save_config, to_dict


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_pretrain_config_round_trip(tmp_path, suffix):
    cfg = config_from_dict(PretrainConfig, {"model": {"preset": "paper"}}, ["train.lr=5e-4", "loss.sampling=same_utterance:0.5,cross_batch:0.5"])
    path = tmp_path / f"c{suffix}"
    save_config(cfg, path)
    back = load_config(PretrainConfig, path)
    assert back == cfg
    assert back.model.encoder.kernels == (10, 8, 4, 4, 4)  # tuples survive
    assert back.train.lr == 5e-4 and back.model.encoder.channels == 512


def test_model_config_round_trip_json():
    cfg = preset("tiny")
    assert from_dict(CPCConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg


def test_preset_with_overrides_merges():
    cfg = config_from_dict(PretrainConfig, {"model": {"preset": "tiny", "context": {"kind": "lstm"}}})
    assert cfg.model.encoder.channels == 64 and cfg.model.context.kind == "lstm" and cfg.model.context.hidden == 64


def test_unknown_keys_and_bad_values_are_named():
    with pytest.raises(ValueError, match="unknown key"):
        config_from_dict(PretrainConfig, {"train": {"learning_rate": 1}})
    with pytest.raises(ValueError, match="train.lr"):
        config_from_dict(PretrainConfig, {"train": {"lr": "fast"}})
    with pytest.raises(ValueError, match="same_speaker"):
        config_from_dict(PretrainConfig, {"loss": {"sampling": "same_speaker"}})
    with pytest.raises(ValueError, match="unknown negative sampling mode"):
        config_from_dict(PretrainConfig, {"loss": {"sampling": "same_room"}})
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
