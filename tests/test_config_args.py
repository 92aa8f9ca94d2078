"""Command-line flags generated from a config dataclass (cpc_speech.cli.config_args)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from cpc_speech.cli.config_args import add_config_arguments, config_from_args
from cpc_speech.settings import setting


@dataclass
class Toy:
    lr: float = setting(1e-3, help="learning rate", group="train")
    epochs: int = setting(10, help="maximum epochs", group="train")
    head: str = setting("conv", help="head kind", choices=("linear", "conv"))
    norm: bool = setting(True, help="layer norm")
    manifest: Optional[str] = setting(None, help="manifest TSV", path=True)
    conditions: List[str] = setting(default_factory=lambda: ["a", "b"], help="conditions")

    def validate(self) -> "Toy":
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        return self


def parse(argv):
    p = argparse.ArgumentParser()
    add_config_arguments(p, Toy, groups={"train": "training"})
    return config_from_args(Toy, p.parse_args(argv))


def test_defaults_without_flags():
    assert parse([]) == Toy()


def test_flags_are_typed_and_override(tmp_path):
    cfg = parse(["--lr", "1e-2", "--epochs", "3", "--head", "linear", "--no-norm", "--conditions", "x,y,z",
                 "--manifest", "m.tsv"])
    assert cfg.lr == 0.01 and cfg.epochs == 3 and cfg.head == "linear" and cfg.norm is False
    assert cfg.conditions == ["x", "y", "z"]
    assert cfg.manifest == str(Path("m.tsv").resolve())


def test_file_then_overrides_then_flags(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("lr: 0.5\nepochs: 4\nhead: linear\n")
    cfg = parse(["--config", str(f), "epochs=7", "--lr", "0.25"])
    assert (cfg.lr, cfg.epochs, cfg.head) == (0.25, 7, "linear")  # flag > key=value > file > default
    cfg = parse(["--config", str(f)])
    assert (cfg.lr, cfg.epochs, cfg.head, cfg.norm) == (0.5, 4, "linear", True)


def test_bad_input_is_one_clear_error(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("lr: 0.5\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"s.yaml: unknown key\(s\) \['bogus'\]"):
        parse(["--config", str(f)])
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['nope'\]"):
        parse(["nope=3"])
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        parse(["--epochs", "0"])
    with pytest.raises(FileNotFoundError, match="config file not found: .*missing.yaml"):
        parse(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(SystemExit):  # argparse: invalid choice
        parse(["--head", "lstm"])


def test_help_lists_defaults_and_groups(capsys):
    p = argparse.ArgumentParser()
    add_config_arguments(p, Toy, groups={"train": "training"})
    text = p.format_help()
    assert "training:" in text
    assert "learning rate (default: 0.001)" in text
    assert "conditions (default: a,b)" in text
    assert "--norm, --no-norm" in text


def test_finetune_flags_come_from_its_config():
    import dataclasses

    from cpc_speech.cli import build_parser
    from cpc_speech.finetune.config import FinetuneConfig

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["finetune"]
    flags = {opt for a in sub._actions for opt in a.option_strings}
    for f in dataclasses.fields(FinetuneConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
        assert f.metadata.get("help"), f"FinetuneConfig.{f.name} has no help text"
    args = sub.parse_args(["--manifest", "m.tsv", "--hours", "all", "--no-head-norm", "lm_order=0"])
    cfg = config_from_args(FinetuneConfig, args, validate=False, skip=("conditions",))
    assert cfg.hours == 0.0 and cfg.head_norm is False and cfg.lm_order == 0
    assert cfg.manifest == str(Path("m.tsv").resolve()) and cfg.lr == FinetuneConfig().lr


@pytest.mark.parametrize("task", ["phone", "speaker"])
def test_probe_flags_come_from_its_config(task, tmp_path):
    import dataclasses

    from cpc_speech.cli import build_parser
    from cpc_speech.probes.config import PhoneProbeConfig, SpeakerProbeConfig

    cls = PhoneProbeConfig if task == "phone" else SpeakerProbeConfig
    probe = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["probe"]
    sub = next(a for a in probe._actions if isinstance(a, argparse._SubParsersAction)).choices[task]
    flags = {opt for a in sub._actions for opt in a.option_strings}
    for f in dataclasses.fields(cls):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    settings = tmp_path / "probe.yaml"
    settings.write_text("epochs: 7\nweight_decays: [0.0, 0.001]\nbaselines: [mfcc]\n")
    args = sub.parse_args(["--model", "m", "--manifest", "x.tsv", "--out", "o.json", "--config", str(settings), "seed=3"])
    cfg = config_from_args(cls, args)
    assert (cfg.epochs, cfg.weight_decays, cfg.baselines, cfg.seed) == (7, [0.0, 0.001], ["mfcc"], 3)
    args = sub.parse_args(["--model", "m", "--manifest", "x.tsv", "--out", "o.json", "--weight-decays", "0,1e-4", "--baselines", "none"])
    cfg = config_from_args(cls, args)
    assert cfg.weight_decays == [0.0, 1e-4] and cfg.baselines == []
    with pytest.raises(ValueError, match=r"--dev-fraction must be in \[0, 1\), got 1.5"):
        config_from_args(cls, sub.parse_args(["--model", "m", "--manifest", "x.tsv", "--out", "o.json", "--dev-fraction", "1.5"]))
    with pytest.raises(ValueError, match="--model is required"):
        config_from_args(cls, sub.parse_args(["--manifest", "x.tsv", "--out", "o.json"]))


def test_config_file_section(tmp_path):
    from cpc_speech.settings import read_settings_file

    f = tmp_path / "recipe.yaml"
    f.write_text("probe:\n  default: &d {lr: 0.5, epochs: 4}\n  fast:\n    <<: *d\n    epochs: 2\n")
    assert parse(["--config", f"{f}:probe.fast"]) == Toy(lr=0.5, epochs=2)  # merge key: default's lr, own epochs
    assert parse(["--config", f"{f}:probe.default", "epochs=9"]) == Toy(lr=0.5, epochs=9)
    with pytest.raises(ValueError, match=r"recipe.yaml: no section 'probe.slow' \(section 'probe' has: default, fast\)"):
        parse(["--config", f"{f}:probe.slow"])
    with pytest.raises(ValueError, match=r"recipe.yaml: section 'probe.fast.lr' is not a mapping"):
        read_settings_file(f"{f}:probe.fast.lr")
    with pytest.raises(FileNotFoundError, match="config file not found: .*missing.yaml"):
        read_settings_file(f"{tmp_path / 'missing.yaml'}:probe.fast")
    odd = tmp_path / "a:b.yaml"  # an existing file whose name has a colon is read whole
    odd.write_text("lr: 0.125\n")
    assert parse(["--config", str(odd)]) == Toy(lr=0.125)
