"""The `cpc-speech` entry point: version, help, subcommands, one-line errors."""

import subprocess
import sys

import cpc_speech
from cpc_speech.cli import SUBCOMMANDS, main


def test_version_and_help(capsys):
    out = subprocess.run([sys.executable, "-m", "cpc_speech.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"cpc-speech {cpc_speech.__version__}"
    out = subprocess.run([sys.executable, "-m", "cpc_speech.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name in SUBCOMMANDS:  # module names; import_cmd registers "import"
        assert name.removesuffix("_cmd") in out.stdout, name


def test_info_prints_model_geometry(capsys):
    assert main(["info", "--preset", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "receptive field 465 samples" in out and "20480 samples -> 128 frames" in out


def test_errors_are_one_line_naming_the_file(tmp_path, capsys):
    code = main(["pretrain", "--train-manifest", str(tmp_path / "missing.tsv"), "--output-dir", str(tmp_path / "run"), "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "missing.tsv" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
