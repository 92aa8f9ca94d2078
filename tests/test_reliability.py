"""Hostile-but-realistic use through the real entry points (``cpc_speech.cli.main`` and the API):
one owner per run folder, every bad value refused up front naming the key or file, one-line
file-system errors with nothing half-written, and true bookkeeping when audio is unreadable."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_speech.atomic import atomic_write_text
from cpc_speech.cli import main
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.corpora.manifest import read_manifest, write_manifest
from cpc_speech.engine.checkpoint import CheckpointError, load_model, read_checkpoint
from cpc_speech.runlock import LOCK_NAME, FolderBusyError, hold_output, read_owner
from cpc_speech.train.trainer import pretrain

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = [
    "model.preset=tiny", "model.predictor.steps=4", "loss.negatives=8", "loss.sampling=same_utterance",
    "data.window_samples=4800", "data.batch_size=2", "data.num_workers=0",
    "train.warmup_steps=1", "train.log_every=1", "train.valid_every=1000", "train.threads=1",
]


def small(*extra):
    return config_from_dict(PretrainConfig, {}, SMALL + list(extra))


def pretrain_cli(manifest, run, *extra):
    return main(["pretrain", "--train-manifest", str(manifest), "--output-dir", str(run), "--no-progress", *SMALL, *extra])


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err and "weights_only" not in err, err
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def holder(target, kind="folder"):
    """A separate process holding the lock of ``target`` until killed."""
    code = ("import sys, time; from cpc_speech.runlock import hold_output\n"
            "with hold_output(sys.argv[1], 'pretrain', kind=sys.argv[2]):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), kind], env=env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.fixture
def corpus(tmp_path):
    from conftest import write_tone_corpus

    return write_tone_corpus(tmp_path / "corpus", speakers=2, utterances=3)


# ------------------------------------------------------------------------ 1. one owner per folder


def test_second_pretrain_process_is_refused_and_a_dead_owner_is_taken_over(corpus, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "cpc_speech.cli", "pretrain", "--train-manifest", str(corpus), "--output-dir", str(run),
           "--no-progress", *SMALL, "train.checkpoint_every=2"]
    first = subprocess.Popen(cmd + ["train.max_steps=100000"], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.time() < deadline
            time.sleep(0.05)
        owner = read_owner(run / LOCK_NAME)
        assert owner["pid"] == first.pid and owner["command"] == "pretrain"
        second = subprocess.run(cmd + ["train.max_steps=100000", "train.lr=1e-3"], env=env(), capture_output=True, text=True, timeout=120)
        err = second.stderr.strip()
        assert second.returncode == 2 and len(err.splitlines()) == 1, err
        assert f"{run} is in use by cpc-speech pretrain, pid {first.pid} on host" in err
        log_lines = (run / "log.jsonl").read_text().splitlines()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed owner's lock is stale: the next run takes over (and finds the run trained far enough)
    third = subprocess.run(cmd + ["train.max_steps=2"], env=env(), capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert "already trained" in third.stderr
    assert not (run / LOCK_NAME).exists()  # released on exit
    assert all(json.loads(ln)["step"] >= 0 for ln in log_lines)  # one writer: no interleaved partial lines


@pytest.mark.parametrize("command", ["pretrain", "extract", "probe", "finetune", "report", "prepare", "synth", "abx",
                                     "export", "import"])
def test_every_writing_command_refuses_a_folder_in_use(command, corpus, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    (run / "log.jsonl").write_text("")
    item = tmp_path / "x.item"
    item.write_text("#file onset offset #phone prev-phone next-phone speaker\nu 0.0 0.1 a b c s\n")
    (tmp_path / "ckpt.pt").write_bytes(b"not reached: the lock is refused first")
    out = {
        "pretrain": (run, ["pretrain", "--train-manifest", str(corpus), "--output-dir", str(run), *SMALL]),
        "extract": (run, ["extract", "--model", "mfcc", "--manifest", str(corpus), "--out", str(run), "--no-progress"]),
        "probe": (run / "p.json", ["probe", "speaker", "--model", str(run), "--manifest", str(corpus), "--out", str(run / "p.json")]),
        "finetune": (run, ["finetune", "--manifest", str(corpus), "--alignments", "a.txt", "--train-split", "t.txt",
                           "--dev-split", "d.txt", "--conditions", "mfcc", "--output-dir", str(run), "--no-progress"]),
        "report": (run, ["report", str(run), "--no-plots"]),
        "prepare": (run / "m.tsv", ["prepare", "folder", str(corpus.parent), "--out", str(run / "m.tsv")]),
        "synth": (run / "gen", ["synth", str(run / "gen"), "--speakers", "1", "--utterances", "1", "--no-progress"]),
        "abx": (run / "abx.json", ["abx", "--features", str(tmp_path), "--item", str(item), "--out", str(run / "abx.json")]),
        "export": (run / "m.bundle", ["export", str(tmp_path / "ckpt.pt"), "--format", "bundle", "--out", str(run / "m.bundle")]),
        "import": (run, ["import", "cpc_audio", str(tmp_path / "ckpt.pt"), "--out", str(run)]),
    }[command]
    target, argv = out
    proc = holder(target, "file" if target.suffix else "folder")
    try:
        assert main(argv) == 2
        one_line_error(capsys, f"{target} is in use by", f"pid {proc.pid} on host")
    finally:
        proc.kill()
        proc.wait()
    assert set(p.name for p in run.iterdir()) <= {"config.yaml", "log.jsonl", LOCK_NAME, f".{target.name}.lock", "gen"}


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with hold_output(tmp_path / "a", "test"):
        with hold_output(tmp_path / "a", "test"):  # same process: nested use is fine
            pass
        assert (tmp_path / "a" / LOCK_NAME).exists()
        code = "import sys; from cpc_speech.runlock import hold_output\nwith hold_output(sys.argv[1], 'x'): pass"
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], env=env(), capture_output=True, text=True)
        assert other.returncode != 0 and "FolderBusyError" in other.stderr and f"pid {os.getpid()}" in other.stderr
    assert not (tmp_path / "a" / LOCK_NAME).exists()
    proc = holder(tmp_path / "b.json", "file")
    try:
        with pytest.raises(FolderBusyError, match=rf"b.json is in use by cpc-speech pretrain, pid {proc.pid}"):
            with hold_output(tmp_path / "b.json", "probe", kind="file"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with hold_output(tmp_path / "b.json", "probe", kind="file"):  # the dead holder's lock is taken over
        assert (tmp_path / ".b.json.lock").exists()


# ------------------------------------------------------------------------ 3/4. values refused up front

BAD_OVERRIDES = [
    ("train.max_steps=-5", "train.max_steps must be >= 1, got -5"),
    ("loss.temperature=0", "loss.temperature must be null (default) or > 0, got 0.0"),
    ("loss.temperature=-1", "loss.temperature must be null (default) or > 0, got -1.0"),
    ("model.context.dropout=2", "model.context.dropout must be in [0, 1), got 2.0"),
    ("data.window_samples=0", "data.window_samples must be >= 1, got 0"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("train.checkpoint_every=0", "train.checkpoint_every must be >= 1, got 0"),
    ("train.log_every=0", "train.log_every must be >= 1, got 0"),
    ("train.valid_every=0", "train.valid_every must be >= 1, got 0"),
    ("model.encoder.strides=[5,4,2,2,0]", "model.encoder.strides values must be >= 1, got 0"),
    ("data.windows_per_group=0", "data.windows_per_group must be >= 1, got 0"),
    ("train.lr=-1e-3", "train.lr must be > 0, got -0.001"),
    ("train.lr=.nan", "train.lr must be > 0, got nan"),
    ("train.seed=-1", "train.seed must be >= 0, got -1"),
    ("train.device=gpu", "train.device must be auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("data.window_samples=640", "data.window_samples=640 gives 4 encoder frames, but model.predictor.steps=4"),
    ("train.max_steps=true", "train.max_steps: expected int, got True"),
]


@pytest.mark.parametrize("override,message", BAD_OVERRIDES)
def test_bad_config_values_are_refused_naming_the_key(override, message, corpus, tmp_path, capsys):
    assert pretrain_cli(corpus, tmp_path / "run", override) == 2
    one_line_error(capsys, message)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    with pytest.raises(ValueError, match=message.split(" must")[0].split(":")[0].replace("[", r"\[").replace(".", r"\.")):
        small(override)


def test_temperature_null_is_the_default_and_old_zero_checkpoints_still_load(corpus, tmp_path):
    assert small().loss.temperature is None and small("loss.temperature=null").loss.temperature is None
    run = tmp_path / "run"
    pretrain(small("train.max_steps=1"), str(corpus), str(run), progress=False)
    last = run / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    state["config"]["loss"]["temperature"] = 0.0  # what "default" looked like in old configs
    torch.save(state, last)
    assert load_model(last).cfg.encoder.channels == 64
    state["config"]["model"]["context"]["dropout"] = 3.0  # an invalid saved config names the file
    torch.save(state, last)
    with pytest.raises(CheckpointError, match=f"{last} config: model.context.dropout must be in"):
        load_model(last)


def test_finetune_values_are_refused_naming_the_key(corpus, tmp_path, capsys):
    base = ["finetune", "--manifest", str(corpus), "--alignments", "a", "--train-split", "t", "--dev-split", "d", "--conditions", "mfcc"]
    for flag, value, message in (("--lr", "-1", "lr must be > 0, got -1.0"), ("--epochs", "-2", "epochs must be >= 0, got -2"),
                                 ("--head-dropout", "1.5", "head_dropout must be in [0, 1), got 1.5"), ("--seed", "-3", "seed must be >= 0")):
        assert main(base + [flag, value]) == 2
        one_line_error(capsys, message)


def _edit_row(manifest, column, value, row=1):
    lines = Path(manifest).read_text().splitlines()
    parts = lines[row].split("\t")
    parts[column] = str(value)
    lines[row] = "\t".join(parts)
    Path(manifest).write_text("\n".join(lines) + "\n")
    return parts[0]


@pytest.mark.parametrize("column,value,message", [
    (3, 48000, "the manifest says 48000 samples at 16000 Hz but"),  # larger than the file
    (3, 12000, "the manifest says 12000 samples at 16000 Hz but"),  # smaller: would train on a prefix
    (3, -5, "line 2: num_samples must be >= 0, got -5"),
    (4, 0, "line 2: sample_rate must be >= 1 Hz, got 0"),
    (4, 8000, "the manifest says 24000 samples at 8000 Hz but"),
])
def test_manifest_rows_are_checked_against_the_audio_header(column, value, message, corpus, tmp_path, capsys):
    uid = _edit_row(corpus, column, value)
    assert pretrain_cli(corpus, tmp_path / "run", "train.max_steps=2") == 2
    line = one_line_error(capsys, str(corpus), message)
    assert uid in line or "line 2" in line


def test_trust_manifest_skips_the_check_and_never_zero_pads(corpus, tmp_path, capsys):
    uid = _edit_row(corpus, 3, 48000)
    with pytest.warns(UserWarning, match=rf"{uid}.flac: the manifest says 48000 samples at 16000 Hz but the audio ends (at|before) sample"):
        assert pretrain_cli(corpus, tmp_path / "run", "train.max_steps=12", "--trust-manifest") == 0
    assert "window(s) of unreadable audio" in capsys.readouterr().err


def test_prepare_rows_come_from_the_audio_headers(corpus, tmp_path):
    assert main(["prepare", "folder", str(corpus.parent), "--out", str(tmp_path / "m.tsv")]) == 0
    import soundfile as sf

    for u in read_manifest(tmp_path / "m.tsv"):
        info = sf.info(u.path)
        assert (u.num_samples, u.sample_rate) == (info.frames, info.samplerate)


# ------------------------------------------------------------------------ 5. file-system errors


def test_full_disk_while_saving_a_checkpoint_is_one_line_and_leaves_no_temporary(corpus, tmp_path, capsys, monkeypatch):
    import cpc_speech.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", full)  # only checkpoints are fsynced
    run = tmp_path / "run"
    assert pretrain_cli(corpus, run, "train.max_steps=2") == 2
    one_line_error(capsys, f"{run / 'checkpoints' / 'step-0000002.pt'}: No space left on device")
    assert [p.name for p in (run / "checkpoints").iterdir()] == []  # no .tmp keeps the disk full
    assert not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_unwritable_output_folders_are_one_line_naming_the_path(err, corpus, tmp_path, capsys, monkeypatch):
    import cpc_speech.atomic as atomic

    def refuse(*a, **k):
        raise OSError(err, os.strerror(err), k.get("dir") or a[0])

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)
    out = tmp_path / "feats"
    assert main(["extract", "--model", "mfcc", "--manifest", str(corpus), "--out", str(out), "--no-progress"]) == 2
    one_line_error(capsys, f"{out / 'meta.json'}: {os.strerror(err)}")
    assert [p.name for p in out.iterdir()] == []
    assert main(["prepare", "folder", str(corpus.parent), "--out", str(tmp_path / "m.tsv")]) == 2
    one_line_error(capsys, f"{tmp_path / 'm.tsv'}: {os.strerror(err)}")
    assert not (tmp_path / "m.tsv").exists()


def test_a_folder_where_a_file_is_expected_and_the_reverse(corpus, tmp_path, capsys):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    assert main(["prepare", "folder", str(corpus.parent), "--out", str(tmp_path / "adir")]) == 2
    one_line_error(capsys, f"{tmp_path / 'adir'}: is a folder")
    assert pretrain_cli(corpus, tmp_path / "afile", "train.max_steps=1") == 2
    one_line_error(capsys, f"{tmp_path / 'afile'}: is a file")
    assert main(["pretrain", "--train-manifest", str(tmp_path / "adir"), "--output-dir", str(tmp_path / "r"), *SMALL]) == 2
    one_line_error(capsys, f"{tmp_path / 'adir'} is a folder, not a manifest file")
    from cpc_speech.audio import AudioError, read_audio

    with pytest.raises(AudioError, match="is a folder, not an audio file"):
        read_audio(tmp_path / "adir")
    from cpc_speech.corpora.labels import read_id_list

    with pytest.raises(ValueError, match=f"split file is a folder, not a file: {tmp_path / 'adir'}"):
        read_id_list(tmp_path / "adir")
    with pytest.raises(ValueError, match="train split file is a folder, not a file"):
        read_id_list(tmp_path / "adir", "train split")
    assert main(["pretrain", "--config", str(tmp_path / "adir"), "--train-manifest", str(corpus), "--output-dir", str(tmp_path / "r")]) == 2
    one_line_error(capsys, f"config file not found: {tmp_path / 'adir'} (it is a folder)")


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("kind,message", [
    ("empty", "checkpoint file is empty (0 bytes)"),
    ("truncated", "not a PyTorch file, or truncated or corrupt (PytorchStreamReader failed reading zip archive"),
    ("junk", "not a PyTorch file, or truncated or corrupt"),
    ("pickle", "refused: the file holds Python objects that are not plain tensors or values (print"),
    ("folder", "run folder has no checkpoints/best.pt or checkpoints/last.pt"),
])
def test_bad_checkpoints_are_one_clear_line(kind, message, corpus, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    if kind == "empty":
        ckpt.write_bytes(b"")
    elif kind == "truncated":
        run = tmp_path / "run"
        pretrain(small("train.max_steps=1"), str(corpus), str(run), progress=False)
        data = (run / "checkpoints" / "last.pt").read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif kind == "junk":
        ckpt.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    elif kind == "pickle":
        torch.save({"format_version": 1, "model": {}, "x": Payload()}, ckpt)
    else:
        ckpt.mkdir()
    assert main(["extract", "--model", str(ckpt), "--manifest", str(corpus), "--out", str(tmp_path / "f"), "--no-progress"]) == 2
    one_line_error(capsys, str(ckpt), message)


# ------------------------------------------------------------------------ 6. skipped work stays counted


def _break(manifest, *indices):
    rows = read_manifest(manifest)
    for i in indices:
        Path(rows[i].path).write_bytes(b"not audio any more")
    return [rows[i] for i in indices]


def test_unreadable_batches_keep_max_steps_checkpoints_and_log_counts_true(corpus, tmp_path, recwarn):
    bad = _break(corpus, 1, 4)
    run = tmp_path / "run"
    cfg = small("data.batch_size=1", "train.max_steps=35", "train.checkpoint_every=5", "train.log_every=5", "train.keep_last=100",
                "data.num_workers=1")
    summary = pretrain(cfg, str(corpus), str(run), progress=False)
    assert summary["finished"] and summary["step"] == 35
    steps = sorted(int(p.stem.split("-")[1]) for p in (run / "checkpoints").glob("step-*.pt"))
    assert steps == [5, 10, 15, 20, 25, 30, 35]
    assert read_checkpoint(run / "checkpoints" / "last.pt")["step"] == 35
    events = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    trained = sum(e.get("trained_batches", 0) for e in events if e["split"] == "train")
    skipped = sum(e.get("skipped_batches", 0) for e in events if e["split"] in ("train", "info") and "skipped_lone_windows" not in e)
    final = [e for e in events if "skipped_lone_windows" in e][-1]
    assert trained + skipped == 35 and final["skipped_batches"] == skipped and 5 <= skipped <= 20
    assert final["skipped_unreadable_windows"] == skipped  # batch_size=1: one window per skipped batch
    # one warning per bad file for the whole run (2 epochs, a DataLoader worker per epoch)
    for row in bad:
        assert sum(f"{row.id}.flac" in str(w.message) for w in recwarn.list) == 1, row.id


def test_an_all_unreadable_corpus_is_a_clear_error(corpus, tmp_path, capsys):
    _break(corpus, *range(6))
    assert pretrain_cli(corpus, tmp_path / "run", "train.max_steps=5") == 2
    one_line_error(capsys, str(corpus), "none of the 6 audio file(s) checked is readable")
    assert pretrain_cli(corpus, tmp_path / "run2", "train.max_steps=50", "--trust-manifest") == 2
    one_line_error(capsys, "batch(es) in a row could be read", str(corpus))
    assert not (tmp_path / "run2" / "checkpoints" / "last.pt").exists()


def test_lone_same_speaker_windows_are_reported_as_such(tmp_path, capsys):
    from conftest import write_tone_corpus

    manifest = write_tone_corpus(tmp_path / "c", speakers=2, utterances=2)
    _break(manifest, 0)
    cfg = small("data.sampler=same_speaker", "data.windows_per_group=2", "data.batch_size=4",
                "loss.sampling=same_speaker", "train.max_steps=4")
    with pytest.warns(UserWarning, match="skipping unreadable audio"):
        pretrain(cfg, str(manifest), str(tmp_path / "run"), progress=False)
    err = capsys.readouterr().err
    assert "without a same-speaker partner" in err
    final = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1]
    assert final["skipped_lone_windows"] >= 1
    assert final["skipped_unreadable_windows"] >= 1


def test_an_unusable_validation_manifest_fails_before_training(corpus, tmp_path, capsys):
    from cpc_speech.audio import write_audio
    from cpc_speech.corpora.manifest import utterance_from_file

    rows = []
    for i in range(2):  # headers agree with the manifest: really short files
        write_audio(tmp_path / f"short{i}.flac", np.full(3000, 0.01, dtype=np.float32))
        rows.append(utterance_from_file(f"short{i}", tmp_path / f"short{i}.flac", "s"))
    short = write_manifest(rows, tmp_path / "v.tsv")
    run = tmp_path / "run"
    assert main(["pretrain", "--train-manifest", str(corpus), "--valid-manifest", str(short), "--output-dir", str(run),
                 *SMALL, "train.max_steps=5"]) == 2
    one_line_error(capsys, f"validation manifest {short}", "no utterance is at least one window long")
    assert not (run / "log.jsonl").exists() and not (run / "checkpoints").exists()


def test_a_failed_validation_leaves_best_pt_alone(tmp_path, recwarn):
    from conftest import write_tone_corpus

    train = write_tone_corpus(tmp_path / "t", speakers=2, utterances=2)
    valid = write_tone_corpus(tmp_path / "v", speakers=2, utterances=1, seed=1)
    run = tmp_path / "run"
    cfg = small("train.max_steps=4", "train.valid_every=2", "train.checkpoint_every=2")
    pretrain(cfg, str(train), str(run), str(valid), progress=False, on_step=lambda tr, batch: tr.step >= 2)
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == 2
    _break(valid, 0, 1)
    summary = pretrain(cfg, str(train), str(run), str(valid), progress=False, trust_manifest=True)
    assert summary["step"] == 4
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == 2  # not overwritten by an unvalidated model
    assert read_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    events = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    assert any(e.get("valid_failed") and e["step"] == 4 for e in events)


def test_resume_refuses_a_changed_manifest(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain_cli(corpus, run, "train.max_steps=1") == 0
    rows = read_manifest(corpus)
    write_manifest(rows[:-1], corpus)
    assert pretrain_cli(corpus, run, "train.max_steps=2") == 2
    one_line_error(capsys, "holds a run trained on another train manifest", "--restart")


def test_extract_never_adopts_a_foreign_npy(corpus, tmp_path, capsys):
    out = tmp_path / "feats"
    out.mkdir()
    uid = read_manifest(corpus)[0].id
    np.save(out / f"{uid}.npy", np.ones((3, 3), dtype=np.float32))
    argv = ["extract", "--model", "mfcc", "--manifest", str(corpus), "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    one_line_error(capsys, f"{out} already holds {uid}.npy", "not written by cpc-speech extract")
    assert np.load(out / f"{uid}.npy").shape == (3, 3)  # left untouched
    (out / f"{uid}.npy").unlink()
    assert main(argv) == 0
    good = np.load(out / f"{uid}.npy")
    # a listed file replaced by a foreign one (other shape) or whose audio changed is recomputed
    np.save(out / f"{uid}.npy", np.ones((3, 3), dtype=np.float32))
    other = read_manifest(corpus)[1]
    os.utime(other.path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert main(argv) == 0
    assert "2 computed" in capsys.readouterr().out
    assert np.array_equal(np.load(out / f"{uid}.npy"), good)


# ------------------------------------------------------------------------ 7. minor items


def test_a_killed_writers_temporaries_are_removed_on_resume(corpus, tmp_path):
    run = tmp_path / "run"
    pretrain(small("train.max_steps=1"), str(corpus), str(run), progress=False)
    leftover = run / "checkpoints" / ".step-0000002.pt.x1y2.tmp"
    leftover.write_bytes(b"")
    (run / "checkpoints" / ".last.pt.tmp-12345").write_bytes(b"")
    pretrain(small("train.max_steps=2"), str(corpus), str(run), progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt", "step-0000001.pt", "step-0000002.pt"]


def test_report_trusts_the_checkpoint_over_an_edited_config_yaml(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    pretrain(small("train.max_steps=2"), str(corpus), str(run), progress=False)
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("lr: 0.0002", "lr: 0.5"))
    assert "lr: 0.5" in (run / "config.yaml").read_text()
    assert main(["report", str(run), "--no-plots"]) == 0
    assert "differs from the config saved in" in capsys.readouterr().err
    report = json.loads((run / "report.json").read_text())
    assert report["config"]["train"]["lr"] == 0.0002 and report["sources"]["config"].endswith("last.pt")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "x.json"
    atomic_write_text(target, "old")

    class Boom(Exception):
        pass

    from cpc_speech.atomic import atomic_open

    with pytest.raises(Boom):
        with atomic_open(target) as f:
            f.write("half")
            raise Boom()
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


# ------------------------------------------------------------------------ 2. recipes' provenance

ROOT = Path(__file__).resolve().parents[1]


def recipe(cwd, *args):
    environ = dict(env(), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(["bash", str(ROOT / "recipes" / "librispeech" / "run.sh"), *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=300)


def manifest_ids(path):
    return sorted(u.id for u in read_manifest(path))


def test_recipe_data_records_provenance_and_is_rebuilt_when_its_source_changes(tmp_path):
    import shutil

    from test_corpora import make_librispeech

    a = make_librispeech(tmp_path / "a")
    b = make_librispeech(tmp_path / "b")
    shutil.rmtree(b / "train-clean-100" / "26")  # another corpus: speaker 26 missing
    split = tmp_path / "train_split.txt"
    split.write_text("19-198-0000\n19-198-0001\n19-198-0002\n19-227-0000\n")
    common = ["--exp-dir", "exp", "--stop-stage", "0", "--train-split", str(split)]
    first = recipe(tmp_path, "--librispeech-root", str(a), *common)
    assert first.returncode == 0, first.stderr
    data = tmp_path / "exp" / "data"  # per-run data folder by default
    assert len(manifest_ids(data / "train.tsv")) == 6 and len(manifest_ids(data / "valid.tsv")) == 3
    record = json.loads((data / "provenance.json").read_text())
    assert record["train.tsv"]["inputs"] == {"root": str(a.resolve()), "subsets": "train-clean-100"}
    again = recipe(tmp_path, "--librispeech-root", str(a), *common)
    assert again.returncode == 0 and f"{data / 'train.tsv'} is up to date" in again.stderr.replace("exp/data", str(data))
    other = recipe(tmp_path, "--librispeech-root", str(b), *common)
    assert other.returncode == 0, other.stderr
    assert "was made from other inputs (root: " in other.stderr
    rows = read_manifest(data / "train.tsv")
    assert len(rows) == 4 and all(str(b.resolve()) in str(Path(r.path).resolve()) for r in rows)
    split.write_text("19-198-0000\n19-198-0001\n")  # a split file edited in place is a change too
    edited = recipe(tmp_path, "--librispeech-root", str(b), *common)
    assert edited.returncode == 0 and "finetune_dev.txt was made from other inputs (train_split" in edited.stderr
    assert len((data / "finetune_train.txt").read_text().split()) + len((data / "finetune_dev.txt").read_text().split()) == 2


def test_recipe_refuses_a_generated_corpus_made_with_other_settings(tmp_path):
    from test_corpora import make_librispeech

    data = tmp_path / "d"
    corpus = make_librispeech(data).rename(data / "corpus")
    assert main(["prepare", "librispeech", str(corpus), "--out", str(corpus / "manifest.tsv")]) == 0  # 5 speakers
    args = ["--demo", "--data-dir", str(data), "--exp-dir", str(tmp_path / "e"), "--stop-stage", "0", "--demo-utterances", "2"]
    refused = recipe(tmp_path, *args, "--demo-speakers", "3")
    assert refused.returncode != 0 and f"{corpus} was generated with other settings" in refused.stderr
    assert not (data / "provenance.json").exists()


def test_a_manifest_that_is_not_utf8_is_named(corpus, tmp_path, capsys):
    data = Path(corpus).read_bytes()
    Path(corpus).write_bytes(data.replace(b"spk0-001\t", b"spk0-\xff01\t", 1))
    assert pretrain_cli(corpus, tmp_path / "run", "train.max_steps=1") == 2
    one_line_error(capsys, f"{corpus}: not UTF-8 text")


@pytest.mark.parametrize("override,message", [
    ("train.lr=[", "override 'train.lr=[': the value is not valid YAML"),
    ("train.lr.x=1", "config.train.lr: expected float, got {'x': 1}"),
    ("train", "override 'train' is not of the form key.path=value"),
])
def test_malformed_overrides_are_one_line(override, message, corpus, tmp_path, capsys):
    assert pretrain_cli(corpus, tmp_path / "run", override) == 2
    one_line_error(capsys, message)
