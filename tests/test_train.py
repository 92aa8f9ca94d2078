"""Pretraining: the loss falls, the run folder is complete, a SIGKILLed run resumes exactly, and
two gloo processes train in lock-step on disjoint data."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpc_speech.batching import WindowBatchSampler
from cpc_speech.config import DataConfig, PretrainConfig, config_from_dict
from cpc_speech.corpora.manifest import read_manifest
from cpc_speech.engine.checkpoint import load_model, read_checkpoint
from cpc_speech.train.trainer import pretrain

SMALL = [
    "model.preset=tiny", "model.predictor.steps=4", "loss.negatives=16",
    "data.window_samples=4800", "data.batch_size=4", "data.num_workers=0",
    "train.lr=2e-3", "train.warmup_steps=2", "train.log_every=2", "train.valid_every=1000",
    "train.threads=1",
]


def small_config(*extra):
    return config_from_dict(PretrainConfig, {}, SMALL + list(extra))


def cli(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "cpc_speech.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def train_losses(run):
    return [json.loads(ln)["loss"] for ln in (Path(run) / "log.jsonl").read_text().splitlines() if json.loads(ln)["split"] == "train"]


def test_pretrain_loss_falls_and_run_folder_is_complete(tone_corpus, tmp_path):
    cfg = small_config("train.max_steps=60", "train.checkpoint_every=20", "train.valid_every=30")
    summary = pretrain(cfg, str(tone_corpus), str(tmp_path / "run"), valid_manifest=str(tone_corpus), progress=False)
    run = tmp_path / "run"
    assert summary["finished"] and summary["step"] == 60
    losses = train_losses(run)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    assert (run / "config.yaml").is_file() and (run / "manifests.json").is_file()
    assert {p.name for p in (run / "checkpoints").iterdir()} >= {"last.pt", "best.pt", "step-0000060.pt"}
    assert len(list((run / "checkpoints").glob("step-*.pt"))) == 2  # keep_last=2
    valid = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if '"valid"' in ln]
    assert len(valid) == 2 and all(len(v["accuracy"]) == 4 for v in valid)
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    assert state["step"] == 60 and state["format_version"] == 1 and "optimizer" in state
    model = load_model(run)  # a run folder alone is enough
    assert model.cfg.encoder.channels == 64 and not model.training
    # re-running a finished run is a no-op
    again = pretrain(cfg, str(tone_corpus), str(run), progress=False)
    assert again["step"] == 60 and len(train_losses(run)) == len(losses)


def test_resume_rejects_a_different_config(tone_corpus, tmp_path):
    pretrain(small_config("train.max_steps=2"), str(tone_corpus), str(tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match="different config.*train.lr"):
        pretrain(small_config("train.max_steps=4", "train.lr=1e-2"), str(tone_corpus), str(tmp_path / "r"), progress=False)


def test_resume_accepts_a_run_saved_before_a_config_key_existed(tone_corpus, tmp_path):
    """A checkpoint whose config lacks a key added later (here train.compile) resumes with the
    key's default instead of being refused."""
    run = tmp_path / "old"
    pretrain(small_config("train.max_steps=2", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    last = run / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    del state["config"]["train"]["compile"]
    torch.save(state, last)
    again = pretrain(small_config("train.max_steps=4", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    assert again["finished"] and again["step"] == 4


def test_sigkill_then_resume_equals_uninterrupted_run(tone_corpus, tmp_path):
    common = ["pretrain", "--train-manifest", str(tone_corpus), "--no-progress", *SMALL,
              "train.max_steps=16", "train.checkpoint_every=4", "data.num_workers=1"]
    # uninterrupted reference
    ref = cli(*common, "--output-dir", str(tmp_path / "ref"))
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    # interrupted: kill -9 once the step-8 checkpoint exists, while later steps are running
    run = tmp_path / "killed"
    proc = cli(*common, "--output-dir", str(run))
    deadline = time.time() + 300
    while not (run / "checkpoints" / "step-0000008.pt").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    assert 8 <= state["step"] < 16  # killed mid-run; no partial files under final names
    assert not any(p.name.startswith(".") for p in (run / "checkpoints").iterdir() if p.suffix == ".pt" and p.stat().st_size == 0)
    resumed = cli(*common, "--output-dir", str(run), "--resume")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    a = read_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")
    b = read_checkpoint(run / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 16
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor, b["model"][name], atol=1e-6, rtol=0), name
    assert train_losses(tmp_path / "ref")[-1] == pytest.approx(train_losses(run)[-1], abs=1e-5)


# run by torchrun: pretrain() with an on_step callback recording each rank's windows per step and,
# after the last step, a checksum of its weights
DDP_SCRIPT = """
import json, sys
from pathlib import Path
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.train.trainer import pretrain

manifest, run, *overrides = sys.argv[1:]
cfg = config_from_dict(PretrainConfig, {}, overrides)
steps = []

def record(trainer, batch):
    if batch is not None:
        steps.append({"step": trainer.step - 1, "windows": batch.windows})
    if trainer.step == cfg.train.max_steps:
        checksum = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
        rank = trainer.dist.rank
        Path(run, f"batches-rank{rank}.jsonl").write_text("".join(json.dumps(s) + "\\n" for s in steps))
        Path(run, f"final-rank{rank}.json").write_text(json.dumps({"step": trainer.step, "param_checksum": checksum}))

pretrain(cfg, manifest, run, progress=False, on_step=record)
"""


def torchrun_two(script_text, tmp_path, port, *args, timeout=600):
    """Run ``script_text`` in two gloo processes with ``torch.distributed.run``; must exit 0."""
    script = tmp_path / f"ddp_{port}.py"
    script.write_text(script_text)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           str(script), *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_distributed_two_gloo_processes(tone_corpus, tmp_path):
    run = tmp_path / "ddp"
    torchrun_two(DDP_SCRIPT, tmp_path, 29517, tone_corpus, run, *SMALL, "data.batch_size=2", "train.max_steps=24",
                 "loss.gather_across_ranks=true", "train.lr=3e-3")
    seen = {}
    for rank in (0, 1):
        lines = [json.loads(ln) for ln in (run / f"batches-rank{rank}.jsonl").read_text().splitlines()]
        assert len(lines) == 24
        seen[rank] = [(ln["step"], tuple(map(tuple, ln["windows"]))) for ln in lines]
    for (s0, w0), (s1, w1) in zip(seen[0], seen[1]):  # same step, different windows
        assert s0 == s1 and not set(w0) & set(w1)
    sums = [json.loads((run / f"final-rank{r}.json").read_text())["param_checksum"] for r in (0, 1)]
    assert sums[0] == pytest.approx(sums[1], rel=0, abs=1e-9)  # weights identical across ranks
    losses = train_losses(run)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    info = json.loads((run / "log.jsonl").read_text().splitlines()[0])
    assert info["world_size"] == 2


def test_uneven_sampler_gives_ranks_unequal_shares_of_every_batch(tone_corpus):
    """Validation batches (``even=False``) are not cut to a multiple of the ranks: 3 global batches
    over 2 ranks are 2 + 1, and 1 batch over 2 ranks leaves rank 1 with none."""
    rows = read_manifest(tone_corpus)
    cfg = DataConfig(window_samples=4800, batch_size=4)
    full = WindowBatchSampler(rows[:3], cfg, shuffle=False).global_batches(0)  # 15 windows: 3 batches
    assert len(full) == 3
    shares = [list(WindowBatchSampler(rows[:3], cfg, rank=r, world_size=2, shuffle=False, even=False)) for r in (0, 1)]
    assert [len(s) for s in shares] == [2, 1] and shares[0] + shares[1] == [full[0], full[2], full[1]]
    assert len(WindowBatchSampler(rows[:3], cfg, rank=1, world_size=2, shuffle=False, even=False)) == 1
    assert len(WindowBatchSampler(rows[:3], cfg, rank=1, world_size=2, shuffle=False)) == 1  # training: even shares
    lone = [WindowBatchSampler(rows[:1], cfg, rank=r, world_size=2, shuffle=False, even=False) for r in (0, 1)]
    assert [len(s) for s in lone] == [1, 0] and list(lone[1]) == []
    with pytest.raises(ValueError, match="too small for one batch"):
        WindowBatchSampler(rows[:1], cfg, rank=1, world_size=2, shuffle=False)


def test_distributed_validation_when_one_rank_has_no_batch(tone_corpus, tmp_path):
    """A validation manifest of one batch: rank 1 holds none, yet both ranks validate together
    (this used to hang, or refuse the manifest)."""
    from cpc_speech.corpora.manifest import write_manifest

    valid = write_manifest(read_manifest(tone_corpus)[:1], tmp_path / "valid.tsv")  # 5 windows: one batch of 4
    run = tmp_path / "ddp"
    torchrun_two(
        "import sys\nfrom cpc_speech.config import PretrainConfig, config_from_dict\nfrom cpc_speech.train.trainer import pretrain\n"
        "train, valid, run, *overrides = sys.argv[1:]\n"
        "pretrain(config_from_dict(PretrainConfig, {}, overrides), train, run, valid_manifest=valid, progress=False)\n",
        tmp_path, 29519, tone_corpus, valid, run, *SMALL, "train.max_steps=4", "train.valid_every=2", timeout=300)
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    valid_records = [r for r in records if r.get("split") == "valid"]
    assert [r["step"] for r in valid_records] == [2, 4]
    for r in valid_records:
        assert math.isfinite(r["loss"]) and r["loss"] > 0 and len(r["accuracy"]) == 4
        assert r["accuracy_mean"] == pytest.approx(sum(r["accuracy"]) / 4, abs=1e-6)
    assert (run / "checkpoints" / "best.pt").exists()


def test_old_configs_with_log_batches_still_load_and_resume(tone_corpus, tmp_path):
    """train.log_batches (an audit switch of earlier versions) is accepted in saved configs and ignored."""
    run = tmp_path / "old"
    pretrain(small_config("train.max_steps=2", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    last = run / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    state["config"]["train"]["log_batches"] = True
    torch.save(state, last)
    assert load_model(last).cfg.encoder.channels == 64
    assert config_from_dict(PretrainConfig, {"train": {"log_batches": True}}).train.max_steps == 1000
    again = pretrain(small_config("train.max_steps=4", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    assert again["finished"] and again["step"] == 4
    assert not list(run.glob("batches-rank*.jsonl"))


def test_on_step_can_stop_a_run_that_then_resumes(tone_corpus, tmp_path):
    run = tmp_path / "cut"
    seen = []

    def stop_at_3(trainer, batch):
        seen.append((trainer.step, len(batch)))
        return trainer.step >= 3

    cfg = small_config("train.max_steps=5", "train.checkpoint_every=1")
    summary = pretrain(cfg, str(tone_corpus), str(run), progress=False, on_step=stop_at_3)
    assert seen == [(1, 4), (2, 4), (3, 4)] and summary == {"step": 3, "finished": False, "best_valid": math.inf, "rank": 0}
    assert read_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert pretrain(cfg, str(tone_corpus), str(run), progress=False)["step"] == 5


@pytest.mark.parametrize("sampler", ["uniform", "same_speaker", "same_utterance"])
def test_batch_samplers(tone_corpus, sampler):
    rows = read_manifest(tone_corpus)
    cfg = DataConfig(window_samples=4800, batch_size=4, sampler=sampler, windows_per_group=2)
    s = WindowBatchSampler(rows, cfg, seed=1)
    s.set_epoch(0)
    batches = list(s)
    assert len(batches) == len(s) > 0 and all(len(b) == 4 for b in batches)
    for b in batches:
        for row, offset in b:
            assert 0 <= offset and offset + 4800 <= rows[row].num_samples_16k
        if sampler == "same_speaker":
            spk = [rows[r].speaker for r, _ in b]
            assert spk[0] == spk[1] and spk[2] == spk[3]
        if sampler == "same_utterance":
            assert b[0][0] == b[1][0] and b[2][0] == b[3][0]
    s.set_epoch(1)
    assert list(s) != batches  # fresh offsets/shuffle each epoch
    s.set_epoch(0)
    assert list(s) == batches  # deterministic per (seed, epoch)
    ranks = [WindowBatchSampler(rows, cfg, seed=1, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(0)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) and not {w for x in a for w in x} & {w for x in b for w in x}


def test_bf16_autocast_and_tensorboard_logging(tone_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    cfg = small_config("train.max_steps=6", "train.amp=bf16", "train.checkpoint_every=6")
    summary = pretrain(cfg, str(tone_corpus), str(tmp_path / "bf16"), progress=False)
    assert summary["finished"]
    losses = train_losses(tmp_path / "bf16")
    assert len(losses) == 3 and all(math.isfinite(x) and 0 < x < 4 * math.log(17) + 1 for x in losses)
    events = list((tmp_path / "bf16" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    assert read_checkpoint(tmp_path / "bf16" / "checkpoints" / "last.pt")["model"]["encoder.layers.0.weight"].dtype == torch.float32


def test_unreadable_files_are_skipped_with_a_warning_and_counted(tmp_path, capsys):
    from conftest import write_tone_corpus

    manifest = write_tone_corpus(tmp_path / "c", speakers=2, utterances=3)
    victim = read_manifest(manifest)[0]
    Path(victim.path).write_bytes(b"this is not audio any more")  # header was read when the manifest was made
    with pytest.warns(UserWarning, match=r"skipping unreadable audio: .*spk0-000.flac"):
        summary = pretrain(small_config("train.max_steps=6", "data.batch_size=2"), str(manifest), str(tmp_path / "run"), progress=False)
    assert summary["finished"]
    events = [json.loads(ln) for ln in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    skipped = [e for e in events if "skipped_unreadable_windows" in e]
    assert skipped and skipped[-1]["skipped_unreadable_windows"] >= 1
    assert "unreadable audio" in capsys.readouterr().err


def test_compiled_training_matches_eager(tone_corpus, tmp_path):
    """train.compile=true runs the same arithmetic: the logged losses of 4 steps agree with eager mode."""
    runs = {}
    for name, extra in (("eager", ()), ("compiled", ("train.compile=true",))):
        cfg = small_config("train.max_steps=4", "train.log_every=1", "train.checkpoint_every=4", *extra)
        assert pretrain(cfg, str(tone_corpus), str(tmp_path / name), progress=False)["finished"]
        runs[name] = train_losses(tmp_path / name)
    assert len(runs["eager"]) == 4
    assert runs["compiled"] == pytest.approx(runs["eager"], rel=1e-3)


def test_best_follows_the_final_model_without_validation_also_when_extended(tone_corpus, tmp_path):
    run = tmp_path / "nv"
    pretrain(small_config("train.max_steps=4", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == 4
    pretrain(small_config("train.max_steps=6", "train.checkpoint_every=2"), str(tone_corpus), str(run), progress=False)
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == 6


# ------------------------------------------------------------------------------ time budget
def fake_clock(monkeypatch, *readings):
    """``budget.clock`` returning ``readings`` in turn; any further call fails the test."""
    from cpc_speech.train import budget

    it = iter(readings)

    def clock():
        try:
            return next(it)
        except StopIteration:
            raise AssertionError("the budget read the clock again after measuring the rate") from None

    monkeypatch.setattr(budget, "clock", clock)


def test_step_budget_buys_the_steps_its_minutes_pay_for(monkeypatch):
    from cpc_speech.train.budget import FIRST_STEP, LAST_STEP, StepBudget

    fake_clock(monkeypatch, 100.0, 115.0)  # 30 steps in 15 s: 0.5 s per step
    b = StepBudget(minutes=0.75)
    assert [b.after_step(s) for s in range(1, LAST_STEP)] == [None] * (LAST_STEP - 1)
    assert b.after_step(LAST_STEP) == 90 and b.seconds_per_step == pytest.approx(0.5)  # 45 s / 0.5 s
    assert b.after_step(LAST_STEP + 1) == 90
    assert StepBudget.resumed(0.75, b.state()).steps == 90  # the same budget: the recorded count
    assert StepBudget.resumed(1.5, b.state()).steps == 180  # a new budget, at the recorded rate
    assert StepBudget.resumed(0.01, b.state()).steps == LAST_STEP  # never before the rate is known
    assert StepBudget.resumed(0.75, None).steps is None  # nothing recorded: measured again
    fake_clock(monkeypatch, 0.0, 4.0, 9.0, 20.0)  # 5 s of validation inside the window are not a step's
    paused = StepBudget(minutes=0.75)
    with paused.paused():  # before the window: the clock is not read
        pass
    assert [paused.after_step(s) for s in range(1, 20)] == [None] * 19
    with paused.paused():
        pass
    assert [paused.after_step(s) for s in range(20, LAST_STEP)] == [None] * (LAST_STEP - 20)
    assert paused.after_step(LAST_STEP) == 90 and paused.seconds_per_step == pytest.approx(0.5)  # (20 - 5) s / 30
    with paused.paused():  # measured: the clock is not read again
        pass
    fake_clock(monkeypatch, 0.0, 3.0)  # resumed at step 25: measures steps 25..55
    late = StepBudget(minutes=0.05)
    assert [late.after_step(s) for s in (25, 40, 54)] == [None] * 3
    assert late.after_step(25 + LAST_STEP - FIRST_STEP) == 40 and late.seconds_per_step == pytest.approx(0.1)


def test_a_time_budget_sets_the_steps_once_and_resumes_exactly(tone_corpus, tmp_path, monkeypatch):
    """``train.max_minutes``: the measured rate (0.5 s per step, from the fake clock) makes
    0.375 minutes 45 steps, the 5 s of the step-20 checkpoint left out; the schedule ends there; a
    resumed run with a larger budget converts it at the recorded rate without timing again; a cap
    below the budget wins."""
    fake_clock(monkeypatch, 0.0, 6.0, 11.0, 20.0)  # steps 10..40 in 20 s, the checkpoint at step 20 in 5 of them
    cfg = small_config("train.max_minutes=0.375", "train.max_steps=1000", "train.log_every=5", "train.checkpoint_every=20")
    run = tmp_path / "budget"
    summary = pretrain(cfg, str(tone_corpus), str(run), progress=False)
    assert summary["step"] == 45 and summary["finished"]
    assert cfg.train.max_steps == 1000  # the caller's config is left as it was
    records = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines()]
    info = [r for r in records if "budget_steps" in r]
    assert len(info) == 1 and info[0]["step"] == 40 and info[0]["budget_steps"] == 45 and info[0]["max_steps"] == 45
    last_lr = [r["lr"] for r in records if r["split"] == "train"][-1]
    assert last_lr == pytest.approx(cfg.train.lr * cfg.train.min_lr_ratio)  # the cosine ended with the run
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    assert state["budget"] == {"max_minutes": 0.375, "seconds_per_step": 0.5, "steps": 45}
    # twice the budget: 90 steps at the recorded rate, no new measurement (the clock is exhausted)
    longer = small_config("train.max_minutes=0.75", "train.max_steps=1000", "train.log_every=5", "train.checkpoint_every=20")
    assert pretrain(longer, str(tone_corpus), str(run), progress=False)["step"] == 90
    from cpc_speech.report import write_report

    report = write_report(run, plots=False, log=lambda m: None)
    section = report["pretraining"]
    assert section["finished"] and section["max_steps"] == 90
    assert section["time_budget"] == {"minutes": 0.75, "seconds_per_step": 0.5, "steps": 90}
    assert "| Time budget (train.max_minutes) | 0.75 min: 90 steps at 0.500 s per step |" in (run / "report.md").read_text()
    # a cap below the budget wins
    fake_clock(monkeypatch, 0.0, 15.0)
    capped = small_config("train.max_minutes=10", "train.max_steps=42", "train.log_every=5")
    assert pretrain(capped, str(tone_corpus), str(tmp_path / "capped"), progress=False)["step"] == 42


BUDGET_DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.train import budget
from cpc_speech.train.trainer import pretrain

manifest, run, *overrides = sys.argv[1:]
rank = int(os.environ["RANK"])
readings = iter([0.0, 15.0 if rank == 0 else 7.5])  # rank 0: 0.5 s per step, rank 1: 0.25 s
budget.clock = lambda: next(readings)
summary = pretrain(config_from_dict(PretrainConfig, {}, overrides), manifest, run, progress=False)
Path(run, f"final-rank{rank}.json").write_text(json.dumps(summary))
"""


def test_distributed_ranks_share_rank_zeros_budget(tone_corpus, tmp_path):
    """Two gloo processes whose clocks disagree (rank 1 would buy 90 steps) both stop at rank 0's
    45 steps, and the run ends instead of hanging."""
    run = tmp_path / "ddp_budget"
    done = torchrun_two(BUDGET_DDP_SCRIPT, tmp_path, 29523, tone_corpus, run, *SMALL, "data.batch_size=2",
                        "train.max_minutes=0.375", "train.max_steps=1000", "train.log_every=5")
    assert [json.loads((run / f"final-rank{r}.json").read_text())["step"] for r in (0, 1)] == [45, 45]
    assert "time budget 0.375 min: 45 steps at 0.500 s per step" in done.stderr
