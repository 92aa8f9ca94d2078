"""Every command's settings are one config dataclass: a settings file and the equivalent flags give
the same config, unknown keys and bad values are refused naming them (cpc_speech.cli.config_args)."""

from __future__ import annotations

import pytest

from cpc_speech.cli import build_parser, main, parse_command_line
from cpc_speech.cli.config_args import config_from_args
from cpc_speech.cli.pretrain import settings_from_args
from cpc_speech.corpora.prepare_config import FolderPrepareConfig, HfPrepareConfig, LibriSpeechPrepareConfig
from cpc_speech.evaluation.config import AbxRunConfig, QuantizeConfig
from cpc_speech.features.config import ExtractConfig
from cpc_speech.settings import save_config, to_dict
from cpc_speech.synth.config import SynthConfig

# command words, flags, config class, settings that differ from the defaults (checked by value)
CASES = {
    "extract": (["extract"], ["--model", "mfcc", "--manifest", "m.tsv", "--out", "feats", "--layer", "encoder",
                              "--precision", "fp32", "--workers", "0", "--processes", "2", "--float16",
                              "--batch-seconds", "12.5", "--threads", "1"], ExtractConfig,
                {"model": "mfcc", "workers": 0, "processes": 2, "float16": True, "batch_seconds": 12.5, "precision": "fp32"}),
    "abx": (["abx"], ["--model", "run", "--manifest", "m.tsv", "--item", "a.item", "--out", "r.json", "--mode", "within",
                      "--distance", "kl", "--max-size-group", "none", "--max-x-across", "3", "--kl-normalised",
                      "--frame-rule", "centre", "--baselines", "none", "--frame-seconds", "0.02"], AbxRunConfig,
            {"model": "run", "max_size_group": None, "max_x_across": 3, "kl_normalised": True, "frame_seconds": 0.02, "baselines": "none"}),
    "quantize": (["quantize"], ["--features", "f", "--units", "7", "--out", "u", "--format", "text", "--run-length",
                                "--max-fit-frames", "1000", "--seed", "3", "--item", "a.item"], QuantizeConfig,
                 {"units": 7, "format": "text", "run_length": True, "max_fit_frames": 1000, "seed": 3}),
    "synth": (["synth"], ["corpus", "--speakers", "3", "--utterances", "4", "--languages", "fr", "--layout", "commonvoice",
                          "--test-fraction", "0.5", "--channel", "gsm", "--snr", "5:20", "--reverb", "0.25", "--overwrite"],
              SynthConfig, {"out_dir": "corpus", "speakers": 3, "channel": "gsm", "snr": "5:20", "reverb": 0.25, "overwrite": True}),
    "prepare folder": (["prepare", "folder"], ["wavs", "-o", "m.tsv", "--speaker-depth", "0", "--extensions", "wav",
                                               "--min-seconds", "0.5", "--no-progress", "--absolute-paths", "--workers", "3"],
                       FolderPrepareConfig, {"source": "wavs", "out": "m.tsv", "speaker_depth": 0, "progress": False, "workers": 3}),
    "prepare librispeech": (["prepare", "librispeech"], ["LS", "--out", "m.tsv", "--subsets", "dev-clean", "--transcripts", "t.txt"],
                            LibriSpeechPrepareConfig, {"source": "LS", "subsets": "dev-clean", "transcripts": "t.txt"}),
    "prepare hf": (["prepare", "hf"], ["ds", "--out", "m.tsv", "--speaker-column", "spk", "--overwrite", "--splits", "train"],
                   HfPrepareConfig, {"speaker_column": "spk", "overwrite": True, "splits": "train"}),
}


def count_key(cls):
    """A whole-number setting >= 0 of ``cls`` to try overrides and bad values on."""
    return next(k for k in ("threads", "workers", "seed") if k in to_dict(cls()))


def config_of(words, argv, cls):
    return config_from_args(cls, parse_command_line(build_parser(), [*words, *argv]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_settings_file_equals_flags(name, tmp_path):
    words, argv, cls, expected = CASES[name]
    from_flags = config_of(words, argv, cls)
    assert {k: to_dict(from_flags)[k] for k in expected} == expected
    assert from_flags != cls()
    settings = tmp_path / "settings.yaml"
    save_config(from_flags, settings)
    assert config_of(words, ["--config", str(settings)], cls) == from_flags
    # a section of a bigger file, and key=value overrides over it
    (tmp_path / "all.yaml").write_text(f"recipe:\n  mine:\n{''.join('    ' + line + chr(10) for line in settings.read_text().splitlines())}")
    changed = count_key(cls)
    again = config_of(words, ["--config", f"{tmp_path / 'all.yaml'}:recipe.mine", f"{changed}=5"], cls)
    assert getattr(again, changed) == 5 and to_dict(again) == {**to_dict(from_flags), changed: 5}


@pytest.mark.parametrize("name", sorted(CASES))
def test_unknown_keys_and_bad_values_are_named(name, tmp_path):
    words, argv, cls, _ = CASES[name]
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_key: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key\(s\) \['bogus_key'\]"):
        config_of(words, [*argv, "--config", str(bad)], cls)
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['nope'\]"):
        config_of(words, [*argv, "nope=3"], cls)
    key = count_key(cls)
    for value, message in ((-1, f"--{key} must be >= [01], got -1"), ("many", f"bad.yaml.{key}: expected int, got 'many'")):
        save_config(config_of(words, argv, cls), bad)
        bad.write_text(bad.read_text().replace(f"{key}: ", f"{key}: {value} #"))
        with pytest.raises(ValueError, match=message):
            config_of(words, ["--config", str(bad)], cls)


def test_required_and_exclusive_settings_are_one_line_errors(tmp_path, capsys):
    cases = [
        (["abx", "--item", "a.item", "--out", "r.json"], "give exactly one of --features and --model"),
        (["abx", "--features", "f", "--model", "m", "--item", "a.item", "--out", "r.json"], "(both given)"),
        (["abx", "--model", "m", "--item", "a.item", "--out", "r.json"], "--model needs --manifest"),
        (["abx", "--features", "f", "--out", "r.json"], "--item is required"),
        (["extract", "--model", "mfcc", "--manifest", "m.tsv"], "--out is required"),
        (["extract", "--model", "mfcc", "--manifest", "m.tsv", "--out", "o", "--processes", "0"], "--processes must be >= 1, got 0"),
        (["quantize", "--features", "f", "--out", "u"], "--units is required"),
        (["synth", "--speakers", "2"], "OUT_DIR is required"),
        (["synth", "a", "b"], "unexpected argument 'b'"),
        (["prepare", "folder", "--out", str(tmp_path / "m.tsv")], "SOURCE is required"),
        (["prepare", "folder", "src"], "--out is required"),
        (["prepare", "folder", "src", "-o", str(tmp_path / "m.tsv"), "--workers", "0"], "--workers must be >= 1, got 0"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and err.startswith(f"cpc-speech {argv[0]}: error:"), (argv, err)


def test_key_value_after_flags_and_positional_anywhere():
    cfg = config_of(["prepare", "folder"], ["-o", "m.tsv", "workers=3", "src"], FolderPrepareConfig)
    assert (cfg.source, cfg.out, cfg.workers) == ("src", "m.tsv", 3)
    cfg = config_of(["synth"], ["seed=4", "out"], SynthConfig)  # an override never becomes OUT_DIR
    assert (cfg.out_dir, cfg.seed) == ("out", 4)
    assert main(["prepare", "folder", "src", "-o", "/nonexistent-dir/m.tsv", "--speaker-depth", "0", "bogus=1"]) == 2


PRETRAIN = ["pretrain", "--train-manifest", "m.tsv", "--output-dir", "run"]


def pretrain_config(*argv):
    return settings_from_args(parse_command_line(build_parser(), [*PRETRAIN, *argv]))


def test_pretrain_dotted_flags_equal_the_settings_file(tmp_path):
    cfg = pretrain_config("--preset", "tiny", "--train.lr", "1e-3", "--data.batch-size", "4", "--model.encoder.channels", "32",
                          "--no-loss.shared-negatives", "--train.device", "cpu", "--train.compile", "--data.augment.apply-to", "both",
                          "--model.predictor.steps", "3", "--loss.temperature", "0.1")
    assert (cfg.train.lr, cfg.data.batch_size, cfg.model.encoder.channels, cfg.loss.shared_negatives) == (1e-3, 4, 32, False)
    assert (cfg.train.device, cfg.train.compile, cfg.data.augment.apply_to, cfg.model.predictor.steps) == ("cpu", True, "both", 3)
    assert cfg.model.context.hidden == 64 and cfg.model.encoder.norm == "batch"  # the rest of the tiny preset
    assert cfg.loss.temperature == 0.1
    save_config(cfg, tmp_path / "config.yaml")
    assert pretrain_config("--config", str(tmp_path / "config.yaml")) == cfg


def test_pretrain_precedence_and_errors(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("model: {preset: tiny}\ntrain: {lr: 0.5, max_steps: 7}\n")
    assert pretrain_config("--config", str(f)).train.lr == 0.5
    assert pretrain_config("--config", str(f), "train.lr=0.25").train.lr == 0.25
    cfg = pretrain_config("--config", str(f), "train.lr=0.25", "--train.lr", "0.125")
    assert (cfg.train.lr, cfg.train.max_steps) == (0.125, 7)  # flag > key=value > file; the rest stays
    with pytest.raises(ValueError, match="train.max_steps must be >= 1, got -5"):
        pretrain_config("--train.max-steps", "-5")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\]"):
        pretrain_config("train.bogus=1")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        pretrain_config("--train.amp", "fp64")


def test_pretrain_help_groups_flags_by_section(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["pretrain", "--help"])
    out = capsys.readouterr().out
    for text in ("train: optimisation, logging and checkpoints", "--train.lr X", "peak learning rate (Adam) (default: 0.0002)",
                 "--data.batch-size N", "model.encoder: the strided CNN", "--model.encoder.norm {channel,batch,instance,none}"):
        assert text in out, text
    assert "--model.encoder.kernels" not in out  # lists stay key=value / file settings


# the commands without a numeric count setting: report, export, import, info
SMALL_CASES = {
    "report": (["report"], ["run", "--results", "res", "--phone-probe", "p.json", "--no-plots", "--print",
                            "--finetune", "a.json", "b.json"], "ReportConfig",
               {"run_dir": "run", "results": "res", "plots": False, "print_headline": True, "finetune": ["a.json", "b.json"]}),
    "export": (["export"], ["run", "--format", "onnx", "-o", "m.onnx", "--layer", "encoder", "--streaming", "--opset", "17"],
               "ExportConfig", {"run": "run", "format": "onnx", "out": "m.onnx", "layer": "encoder", "streaming": True, "opset": 17}),
    "import": (["import"], ["cpc_audio", "ckpt.pt", "--out", "r", "--state", "best", "--context-layers", "2", "--overwrite"],
               "ImportConfig", {"format": "cpc_audio", "checkpoint": "ckpt.pt", "state": "best", "context_layers": 2, "overwrite": True}),
    "info": (["info"], ["--preset", "tiny"], "InfoConfig", {"preset": "tiny"}),
}


def small_class(name):
    import importlib

    module = {"ReportConfig": "cpc_speech.report.config", "ExportConfig": "cpc_speech.interop_config",
              "ImportConfig": "cpc_speech.interop_config", "InfoConfig": "cpc_speech.cli.info"}[name]
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("name", sorted(SMALL_CASES))
def test_small_commands_settings_file_equals_flags(name, tmp_path):
    words, argv, cls_name, expected = SMALL_CASES[name]
    cls = small_class(cls_name)
    from_flags = config_of(words, argv, cls)
    assert {k: to_dict(from_flags)[k] for k in expected} == expected
    settings = tmp_path / "settings.yaml"
    save_config(from_flags, settings)
    positional = [a for a in argv[:2] if not a.startswith("-")] if name in ("report", "export", "import") else []
    assert config_of(words, ["--config", str(settings)], cls) == from_flags
    # the file with the positional arguments given again on the command line
    assert config_of(words, [*positional, "--config", str(settings)], cls) == from_flags
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus_key: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown key\(s\) \['bogus_key'\]"):
        config_of(words, [*argv, "--config", str(bad)], cls)


@pytest.mark.parametrize("argv, message", [
    (["export", "run", "--out", "x"], "--format is required"),
    (["export", "--format", "bundle", "--out", "x"], "RUN is required"),
    (["export", "run", "--format", "bundle", "--out", "x", "--opset", "0"], "--opset must be >= 1, got 0"),
    (["import", "--out", "x"], "FORMAT and CKPT are required"),
    (["import", "tf", "c.pt", "--out", "x"], "FORMAT must be one of cpc_audio, got 'tf'"),
    (["import", "cpc_audio", "c.pt", "--out", "x", "state=worst"], "--state must be one of last, best, got 'worst'"),
    (["report"], "RUN_DIR is required"),
    (["info", "preset=huge"], "--preset must be one of paper, default, tiny, got 'huge'"),
])
def test_small_commands_refuse_bad_settings_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_check_choices_covers_values_that_bypass_argparse():
    """Choices from a config file or ``key=value`` never pass through argparse: the settings check
    them, naming the field as the message's reader would type it."""
    from cpc_speech.finetune.config import FinetuneConfig, FinetuneError
    from cpc_speech.interop_config import ExportConfig
    from cpc_speech.settings import check_choices

    check_choices(ExportConfig(run="r", format="onnx", out="o"), flags=True)  # valid: no error
    with pytest.raises(ValueError, match=r"^--layer must be one of context, encoder, got 'middle'$"):
        ExportConfig(run="r", format="onnx", out="o", layer="middle").validate()
    with pytest.raises(ValueError, match=r"^format must be one of bundle, onnx, got 'zip'$"):
        check_choices(ExportConfig(run="r", format="zip", out="o"))
    cfg = FinetuneConfig(model="m", manifest="m.tsv", alignments="a.txt", train_split="t", dev_split="d", decode="viterbi")
    with pytest.raises(FinetuneError, match=r"^decode must be one of greedy, beam, got 'viterbi'$"):
        cfg.validate()


@pytest.mark.parametrize("argv, message", [
    (["quantize", "--features", "f", "--units", "5", "--out", "u", "format=csv"],
     "--format must be one of npy, text, got 'csv'"),
    (["extract", "--model", "m", "--manifest", "m.tsv", "--out", "o", "precision=fast"], "--precision must be one of"),
    (["synth", "out", "layout=kaldi"], "--layout must be one of librispeech, commonvoice, got 'kaldi'"),
    (["probe", "phone", "--model", "m", "--manifest", "m.tsv", "--out", "o", "optimizer=sgd"],
     "--optimizer must be one of lbfgs, adam, got 'sgd'"),
    (["probe", "speaker", "--model", "m", "--manifest", "m.tsv", "--out", "o", "protocol=frame"],
     "--protocol must be one of"),
    (["abx", "--features", "f", "--item", "a.item", "--out", "r.json", "distance=euclid"], "--distance must be one of"),
])
def test_a_choice_given_as_key_value_is_refused_before_any_work(argv, message, capsys):
    """``key=value`` bypasses argparse's choices: ``validate()`` refuses the value in one line naming
    the flag, before any file is read (the inputs named here do not exist)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_choice_in_a_pretraining_file_is_refused_naming_file_and_key(tmp_path):
    from cpc_speech.config import PretrainConfig, load_config

    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("model:\n  encoder: {norm: group}\n", r"^encoder\.norm must be one of channel, batch, instance, none, got 'group'"),
        ("data:\n  augment:\n    transforms:\n      - {kind: speed}\n      - {kind: noise, color: purple}\n",
         r"^data\.augment\.transforms\[1\]\.color must be one of white, pink, brown, random, got 'purple'"),
        ("train: {schedule: linear}\n", r"^train\.schedule must be one of cosine, step, constant, got 'linear'"),
        ("model:\n  encoder: {kernels: [10, 8, four, 4, 4]}\n", r"bad\.yaml\.model\.encoder\.kernels\[2\]: expected int, got 'four'"),
        ("data:\n  augment: {transforms: speed}\n", r"bad\.yaml\.data\.augment\.transforms: expected a list, got 'speed'"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message + "$"):
            load_config(PretrainConfig, bad)
    # the same checks for a config built in Python, with the dotted key
    cfg = PretrainConfig()
    cfg.model.context.kind = "rnn"
    with pytest.raises(ValueError, match=r"^context\.kind must be one of gru, lstm, transformer, got 'rnn'$"):
        cfg.validate()
