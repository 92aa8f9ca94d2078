"""The recipes' probe and fine-tuning settings, read by the commands from a section of a recipe YAML
file (``--config conf/probe.yaml:phone.demo``), are exactly the options that
``recipes/utils/yaml_to_args.py`` (removed) made of the same files before."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from cpc_speech.cli import build_parser, main, parse_command_line
from cpc_speech.cli.config_args import config_from_args
from cpc_speech.finetune.config import FinetuneConfig, read_settings
from cpc_speech.probes.config import PhoneProbeConfig, SpeakerProbeConfig
from cpc_speech.settings import to_dict

CONF = Path(__file__).resolve().parents[1] / "recipes" / "librispeech" / "conf"
# `yaml_to_args.py FILE GROUP CONF` of the recipes before the change, for every config name they accept
# (cpu1h, added later, has the options the old tool would have made of its section; the demo sections
# have since changed, session 11)
OLD_OPTIONS = {
    ("probe.yaml", "phone", "default"): "--epochs 30 --context-frames 0 --workers 2",
    ("probe.yaml", "phone", "fast"): "--epochs 5 --context-frames 0 --workers 2 --baselines mfcc,random_init",
    ("probe.yaml", "phone", "paper"): "--epochs 30 --context-frames 0 --workers 2",
    ("probe.yaml", "phone", "demo"): "--epochs 25 --context-frames 0 --workers 2 --weight-decays 0",
    ("probe.yaml", "phone", "demo_aug"): "--epochs 25 --context-frames 0 --workers 2 --weight-decays 0",
    ("probe.yaml", "phone", "cpu1h"): "--epochs 25 --context-frames 0 --workers 2 --weight-decays 0",
    ("probe.yaml", "speaker", "default"): "--epochs 100 --workers 2",
    ("probe.yaml", "speaker", "fast"): "--epochs 20 --workers 2",
    ("probe.yaml", "speaker", "paper"): "--epochs 100 --workers 2",
    ("probe.yaml", "speaker", "demo"): "--epochs 100 --workers 2",
    ("probe.yaml", "speaker", "demo_aug"): "--epochs 100 --workers 2",
    ("probe.yaml", "speaker", "cpu1h"): "--epochs 100 --workers 2",
    ("finetune.yaml", "finetune", "default"): "--epochs 30 --patience 8",
    ("finetune.yaml", "finetune", "fast"): "--epochs 2 --patience 2",
    ("finetune.yaml", "finetune", "paper"): "--epochs 30 --patience 8",
    ("finetune.yaml", "finetune", "demo"): "--epochs 20 --patience 8 --end-to-end-epochs 3 --scratch-epochs 10",
    ("finetune.yaml", "finetune", "demo_aug"): "--epochs 30 --patience 8 --end-to-end-epochs 5 --scratch-epochs 10",
    ("finetune.yaml", "finetune", "cpu1h"): "--epochs 30 --patience 8 --end-to-end-epochs 5 --scratch-epochs 10",
}
# what the recipes pass besides the settings of the file
COMMANDS = {
    "phone": (["probe", "phone", "--model", "run", "--manifest", "m.tsv", "--out", "r.json"], PhoneProbeConfig),
    "speaker": (["probe", "speaker", "--model", "run", "--manifest", "m.tsv", "--out", "r.json", "--protocol", "window"], SpeakerProbeConfig),
    "finetune": (["finetune", "--model", "run", "--manifest", "m.tsv", "--train-split", "t.txt", "--dev-split", "d.txt",
                  "--hours", "0.1", "--output-dir", "ft"], FinetuneConfig),
}


def resolved(group, argv):
    words, cls = COMMANDS[group]
    args = parse_command_line(build_parser(), [*words, *argv])
    if cls is FinetuneConfig:
        return to_dict(config_from_args(cls, args, read=read_settings, validate=False, skip=("conditions",)))
    return to_dict(config_from_args(cls, args))


def test_every_section_has_its_old_options():
    present = {(name, group, section) for name in ("probe.yaml", "finetune.yaml")
               for group, sections in yaml.safe_load((CONF / name).read_text()).items() for section in sections}
    assert present == set(OLD_OPTIONS)


@pytest.mark.parametrize("key", sorted(OLD_OPTIONS), ids="-".join)
def test_section_gives_the_options_of_yaml_to_args(key):
    name, group, section = key
    new = resolved(group, ["--config", f"{CONF / name}:{group}.{section}"])
    assert new == resolved(group, shlex.split(OLD_OPTIONS[key]))


def test_demo_sections_by_value():
    phone = resolved("phone", ["--config", f"{CONF / 'probe.yaml'}:phone.demo"])
    assert (phone["epochs"], phone["weight_decays"], phone["workers"], phone["baselines"]) == (25, [0.0], 2, ["mfcc", "random_init"])
    ft = resolved("finetune", ["--config", f"{CONF / 'finetune.yaml'}:finetune.demo"])
    assert (ft["epochs"], ft["patience"], ft["end_to_end_epochs"], ft["scratch_epochs"], ft["hours"]) == (20, 8, 3, 10, 0.1)
    assert ft["head_residual"] is True


def test_missing_section_is_one_line_naming_file_and_section(tmp_path, capsys):
    code = main(["probe", "phone", "--model", str(tmp_path), "--manifest", "m.tsv", "--out", str(tmp_path / "r.json"),
                 "--config", f"{CONF / 'probe.yaml'}:phone.nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "probe.yaml: no section 'phone.nope' (section 'phone' has: default, fast, paper, demo, demo_aug, cpu1h)" in err


def test_recipes_read_the_sections_themselves():
    root = CONF.parents[1]
    assert not (root / "utils" / "yaml_to_args.py").exists()
    for script in ("librispeech", "commonvoice"):
        text = (root / script / "run.sh").read_text()
        assert "yaml_to_args" not in text and "conf_args" not in text
        for group, name in (("phone", "probe"), ("speaker", "probe"), ("finetune", "finetune")):
            assert f'extra=(--config "$conf_dir/{name}.yaml:{group}.$conf")' in text, (script, group)


def test_every_pretraining_config_loads_and_cpu1h_is_demo_aug_for_longer():
    from cpc_speech.config import PretrainConfig, load_config

    names = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem not in ("probe", "finetune"))
    assert {"pretrain", "fast", "paper", "demo", "demo_aug", "cpu1h"} <= set(names)
    configs = {name: to_dict(load_config(PretrainConfig, CONF / f"{name}.yaml").validate()) for name in names}
    # every pretraining config name (except pretrain.yaml = 'default') has its probe and fine-tuning sections
    assert {section for (_, _, section) in OLD_OPTIONS} == (set(names) - {"pretrain"}) | {"default"}
    aug, hour = configs["demo_aug"], configs["cpu1h"]
    assert hour["train"]["max_minutes"] == 60 and aug["train"]["max_minutes"] is None and aug["train"]["max_steps"] == 1000
    periodic = ("max_steps", "max_minutes", "log_every", "valid_every", "checkpoint_every")
    assert {k: v for k, v in hour["train"].items() if k not in periodic} == {k: v for k, v in aug["train"].items() if k not in periodic}
    assert {k: v for k, v in hour.items() if k != "train"} == {k: v for k, v in aug.items() if k != "train"}
