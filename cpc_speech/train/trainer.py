"""The pretraining loop around :class:`~cpc_speech.train.step.PretrainStep` (Adam + warm-up/cosine
schedule, gradient clipping, bf16/fp16 autocast where the device computes it fast): epochs of
window batches, validation, JSONL (+ TensorBoard) logs, checkpoints, exact resume, DDP, on the run
machinery of :mod:`cpc_speech.engine`.

Run folder layout (everything needed to resume or extract features)::

    DIR/config.yaml            resolved PretrainConfig
    DIR/manifests.json         the train/valid manifests used
    DIR/log.jsonl              one JSON object per log event (see ``log_event``)
    DIR/checkpoints/step-000200.pt, last.pt, best.pt
    DIR/tensorboard/           when the tensorboard package is installed

Exact resume: the batches of an epoch are a function of (seed, epoch), negatives and dropout are
seeded from (seed, step, rank), and the optimizer/scheduler states are in the checkpoint, so a run
killed at any point and resumed from its last checkpoint reaches the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from contextlib import nullcontext
from typing import Callable, Dict, Optional

import torch

from cpc_speech import __version__
from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.batching import make_loader
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.settings import to_dict
from cpc_speech.corpora.manifest import open_training_manifest
from cpc_speech.engine.checkpoint import CheckpointError, checkpoint_state, read_checkpoint, upgrade_saved_config
from cpc_speech.engine.device import pick_device, set_threads
from cpc_speech.engine.distributed import DistInfo, broadcast_int, cleanup, init_distributed, is_main_process
from cpc_speech.engine.run_dir import RunDir, check_resumable
from cpc_speech.train.budget import StepBudget
from cpc_speech.train.step import PretrainStep

# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"train.max_steps", "train.max_minutes", "train.log_every", "train.valid_every", "train.checkpoint_every",
                     "train.keep_last", "train.device", "train.threads", "data.num_workers", "train.valid_batches",
                     "train.compile", "train.amp"}

# called after every step with the trainer and the step's batch (None: no usable window); a true
# result stops the run there (like an interruption: resuming continues it)
StepCallback = Callable[["Trainer", Optional[object]], Optional[bool]]


class Trainer:
    """Owns the data, the :class:`~cpc_speech.train.step.PretrainStep` and the run folder of one
    pretraining run. ``on_step``: see :data:`StepCallback`."""

    def __init__(
        self,
        cfg: PretrainConfig,
        train_manifest: str,
        output_dir: str,
        valid_manifest: Optional[str] = None,
        progress: bool = True,
        trust_manifest: bool = False,
        on_step: Optional[StepCallback] = None,
    ):
        # a copy: a time budget sets the copy's train.max_steps, which the schedule reads
        self.cfg = cfg = copy.deepcopy(cfg).validate()
        self.step_cap = cfg.train.max_steps
        self.budget: Optional[StepBudget] = StepBudget(cfg.train.max_minutes) if cfg.train.max_minutes else None
        self.budget_applied = False  # max_steps already set from the budget (measured, or resumed)
        self.progress = progress
        self.on_step = on_step
        tc = cfg.train
        self.device = pick_device(tc.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        set_threads(tc.threads)
        self.run_dir = RunDir(output_dir, is_main=self.dist.is_main)
        self.out = self.run_dir.path
        self.checkpoints = self.run_dir.slots("checkpoints")
        self.ckpt_dir = self.checkpoints.folder
        check = not trust_manifest and self.dist.is_main  # cheap: headers of a sample of rows
        train = open_training_manifest(train_manifest, check)
        valid = open_training_manifest(valid_manifest, check) if valid_manifest else None
        self.train_rows, self.valid_rows = train.rows, valid.rows if valid else None
        self.manifests = {"train": train.path, "valid": valid.path if valid else None,
                          "train_sha256": train.sha256, "valid_sha256": valid.sha256 if valid else None}

        self.pretrain_step = PretrainStep(cfg, self.device, self.dist)
        self.precision = self.pretrain_step.precision
        try:
            self.loader, self.sampler = make_loader(
                self.train_rows, cfg.data, seed=tc.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                pin_memory=self.device.type == "cuda",
            )
        except ValueError as exc:
            raise ValueError(f"training manifest {train_manifest}: {exc}") from None
        self.valid_loader = None
        if self.valid_rows:  # checked now, not at the first validation hours later
            try:
                self.valid_loader, _ = make_loader(self.valid_rows, cfg.data, seed=tc.seed + 1, rank=self.dist.rank,
                                                   world_size=self.dist.world_size, shuffle=False, num_workers=0, augment=False,
                                                   even=False)
            except ValueError as exc:
                raise ValueError(f"validation manifest {valid_manifest}: {exc}") from None
        self.skipped_windows = 0  # unreadable windows left out of batches (this run)
        self.lone_windows = 0  # same_speaker: windows left without a partner because the partner was unreadable
        self.skipped_batches = 0  # batches with no usable window (the step counts, nothing is learned)
        self._warned_rows: set = set()
        self.best_valid = math.inf

    @property
    def model(self):
        return self.pretrain_step.model

    @property
    def step(self) -> int:
        return self.pretrain_step.step

    # ------------------------------------------------------------------------------ run folder
    def prepare_run_dir(self) -> None:
        """Create the folder, or check that an existing run has a compatible config and resume."""
        last = self.checkpoints.last
        self.run_dir.remove_temporaries("checkpoints")  # we hold the folder's lock: a killed writer's leftovers
        if last.is_file():
            state = read_checkpoint(last, map_location="cpu")
            # keys added to the config since the run started take their defaults
            where = f"{last} config"
            try:
                saved_cfg = config_from_dict(PretrainConfig, upgrade_saved_config(state.get("config") or {}), where=where)
            except ValueError as exc:
                raise CheckpointError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
            self._check_same_manifests()
            check_resumable(to_dict(saved_cfg), to_dict(self.cfg), RESUMABLE_CHANGES, self.out,
                            "use another --output-dir or pass --restart to start over")
            self.pretrain_step.load_state_dict(state)
            self.best_valid = float(state.get("best_valid", math.inf))
            if self.budget is not None:
                self.budget = StepBudget.resumed(self.budget.minutes, state.get("budget"))
                if self.budget.steps is not None:
                    self.cfg.train.max_steps = min(self.step_cap, self.budget.steps)
                    self.budget_applied = True
            if self.dist.is_main:
                print(f"resuming {self.out} from step {self.step}", file=sys.stderr)
        if self.dist.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.write_config(self.cfg, "config.yaml")
        self.run_dir.write_json("manifests.json", self.manifests)

    def _check_same_manifests(self) -> None:
        """A run resumes only on the manifests it started with (same content)."""
        old = self.run_dir.read_json("manifests.json")
        if not isinstance(old, dict):
            return
        for split in ("train", "valid"):
            before, now = old.get(f"{split}_sha256"), self.manifests.get(f"{split}_sha256")
            if before and now and before != now:
                raise ValueError(
                    f"{self.out} holds a run trained on another {split} manifest (recorded in {self.out / 'manifests.json'}: "
                    f"{old.get(split)}, content changed since); use another --output-dir or pass --restart to start over"
                )

    def save(self, is_best: bool = False) -> None:
        if not self.dist.is_main:
            return
        state = checkpoint_state(
            self.model, self.cfg, **self.pretrain_step.state_dict(),
            epoch=self.step // max(1, len(self.sampler)), best_valid=self.best_valid,
            budget=self.budget.state() if self.budget else None,
            rng={"torch": torch.get_rng_state()}, cpc_speech_version=__version__,
        )
        self.checkpoints.save_step(self.step, state, self.cfg.train.keep_last, is_best=is_best)

    def log_event(self, **fields) -> None:
        """Append one JSON line to log.jsonl: keys ``split`` (train|valid), ``step``, ``loss``,
        ``accuracy`` (per step k), ``accuracy_mean``, and for train ``lr``, ``audio_seconds_per_second``."""
        self.run_dir.log(**fields)

    # ------------------------------------------------------------------------------ steps
    def train_step(self, batch) -> Dict[str, object]:
        """One optimisation step (:meth:`PretrainStep.run`)."""
        return self.pretrain_step.run(batch)

    @torch.no_grad()
    def validate(self) -> Optional[Dict[str, object]]:
        """Loss and accuracy per step k, averaged over the validation batches of every rank (None
        when no batch had a readable window). Ranks may hold different numbers of batches, even
        none: each sums its own, then all meet in one ``all_reduce`` of (sums, count)."""
        if self.valid_loader is None:
            return None
        cfg = self.cfg
        loader = self.valid_loader
        model, loss_fn = self.pretrain_step.model, self.pretrain_step.loss_fn
        model.eval()
        steps = self.cfg.model.predictor.steps
        totals = torch.zeros(2 + steps, dtype=torch.float64)  # batches, loss sum, accuracy sums per step
        gen = torch.Generator(device=self.device).manual_seed(cfg.train.seed + 12345)
        for i, batch in enumerate(loader):
            if i >= cfg.train.valid_batches:
                break
            self._warn_unreadable(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            with self.pretrain_step.autocast():
                out = model(batch.wav)
                r = loss_fn(out.z, out.predictions, batch.speaker, batch.utterance, generator=gen)
            totals[0] += 1
            totals[1] += r.loss.item()
            totals[2:] += r.accuracy.detach().double().cpu()
        if self.dist.enabled:  # every rank, also one without a batch
            summed = totals.to(self.device)
            torch.distributed.all_reduce(summed)
            totals = summed.cpu()
        if totals[0] == 0:
            return None
        loss, acc = float(totals[1] / totals[0]), (totals[2:] / totals[0]).float()
        return {"loss": loss, "accuracy": acc.tolist(), "accuracy_mean": float(acc.mean())}

    # ------------------------------------------------------------------------------ loop
    def _warn_unreadable(self, batch) -> None:
        """One warning per unreadable file for the whole run (DataLoader workers do not warn)."""
        for row, problem in batch.unreadable:
            if row not in self._warned_rows:
                self._warned_rows.add(row)
                warnings.warn(f"skipping unreadable audio: {problem}")

    def _count_dropped(self, batch) -> None:
        self._warn_unreadable(batch)
        self.skipped_windows += len(batch.unreadable)
        self.lone_windows += batch.lone

    def _log_start(self, per_epoch: int) -> None:
        """The run's (or resumption's) first ``info`` event: data, device and precision."""
        if not self.dist.is_main:
            return
        print(f"precision: {self.precision.describe()}", file=sys.stderr)
        if self.step == 0:
            self.log_event(split="info", step=0, train_utterances=len(self.train_rows),
                           skipped_short=self.sampler.skipped_short, batches_per_epoch=per_epoch,
                           world_size=self.dist.world_size, device=str(self.device),
                           precision=self.precision.name, precision_reason=self.precision.reason,
                           parameters=sum(p.numel() for p in self.model.parameters()))
        else:  # a resumption may run in another precision (another machine, or train.amp changed)
            self.log_event(split="info", step=self.step, resumed=True, device=str(self.device),
                           precision=self.precision.name, precision_reason=self.precision.reason)
        if self.budget_applied:  # a resumed budget, perhaps converted to a new max_minutes
            self._log_budget()

    def _validate_and_save(self) -> None:
        """After a step: validate every ``valid_every`` steps (a better loss makes ``best.pt``) and
        checkpoint every ``checkpoint_every`` steps, both also at ``max_steps``."""
        tc = self.cfg.train
        validate = self.step % tc.valid_every == 0 or self.step == tc.max_steps
        checkpoint = self.step % tc.checkpoint_every == 0 or self.step == tc.max_steps
        if not (validate or checkpoint):
            return
        # a time budget still measuring the step rate leaves this block's time out of it
        with self.budget.paused() if self.budget is not None and not self.budget_applied else nullcontext():
            self._validate_and_save_now(validate, checkpoint)

    def _validate_and_save_now(self, validate: bool, checkpoint: bool) -> None:
        tc = self.cfg.train
        is_best = False
        if validate:
            v = self.validate()
            if v is not None:
                self.log_event(split="valid", step=self.step, **v)
                if v["loss"] < self.best_valid:
                    self.best_valid, is_best = v["loss"], True
            elif self.valid_loader is not None:
                warnings.warn(f"step {self.step}: no validation window could be read; best.pt is left as it was")
                self.log_event(split="info", step=self.step, valid_failed="no validation window could be read")
            elif self.step == tc.max_steps:
                is_best = True  # no validation data: the final model is the best we know (also when extended)
        if checkpoint or is_best:
            self.save(is_best=is_best)

    def _apply_budget(self, bar) -> None:
        """After a step: once the time budget has measured the step rate, the run's
        ``max_steps`` becomes the steps it buys (rank 0's count on every rank), said once."""
        budget, tc = self.budget, self.cfg.train
        if budget is None or self.budget_applied:
            return
        steps = budget.after_step(self.step)
        if steps is None:
            return
        budget.steps = steps = broadcast_int(steps, self.dist, self.device)
        tc.max_steps = max(self.step, min(self.step_cap, steps))
        self.budget_applied = True
        if bar:
            bar.total = tc.max_steps
            bar.refresh()
        self._log_budget()

    def _log_budget(self) -> None:
        """Say (stderr, ``log.jsonl``) the steps the time budget buys; the report reads the last one."""
        budget, max_steps = self.budget, self.cfg.train.max_steps
        if not self.dist.is_main:
            return
        capped = f", capped at train.max_steps={self.step_cap}" if budget.steps > self.step_cap else ""
        print(f"time budget {budget.minutes:g} min: {budget.steps} steps at {budget.seconds_per_step:.3f} s per step{capped}",
              file=sys.stderr)
        self.log_event(split="info", step=self.step, budget_minutes=budget.minutes,
                       seconds_per_step=budget.seconds_per_step, budget_steps=budget.steps, max_steps=max_steps)

    def _report_skipped(self) -> None:
        """Say (stderr and ``log.jsonl``) what this run left out: unreadable or partnerless windows."""
        if not (self.dist.is_main and (self.skipped_windows or self.lone_windows or self.skipped_batches)):
            return
        parts = []
        if self.skipped_windows:
            parts.append(f"{self.skipped_windows} window(s) of unreadable audio (one warning per file above)")
        if self.lone_windows:
            parts.append(f"{self.lone_windows} window(s) left without a same-speaker partner in their batch "
                         f"(the partner's audio was unreadable)")
        print(f"skipped {' and '.join(parts) or 'nothing'} during this run; {self.skipped_batches} of the steps "
              f"had no usable window and trained nothing", file=sys.stderr)
        self.log_event(split="info", step=self.step, skipped_unreadable_windows=self.skipped_windows,
                       skipped_lone_windows=self.lone_windows, skipped_batches=self.skipped_batches)

    def fit(self) -> Dict[str, object]:
        """Train until ``train.max_steps``; returns a summary. Idempotent: a finished run returns at once.

        A batch whose windows are all unreadable still counts as a step (so resumption and the
        schedule stay aligned with the batch order): checkpoints, validation and ``max_steps`` are
        handled for it like for any step, and ``log.jsonl`` counts it (``skipped_batches``). A whole
        epoch of such batches, or a run in which no batch could be read, is an error."""
        self.prepare_run_dir()
        tc = self.cfg.train
        if self.step >= tc.max_steps:
            if self.dist.is_main:
                print(f"{self.out}: already trained for {self.step} steps (max_steps={tc.max_steps})", file=sys.stderr)
            return {"step": self.step, "finished": True, "best_valid": self.best_valid}
        per_epoch = len(self.sampler)
        bar = None
        if self.progress and self.dist.is_main:
            from tqdm import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, desc="pretrain", unit="step", dynamic_ncols=True)
        window_seconds = self.cfg.data.window_samples / SAMPLE_RATE
        t_last, audio_since, running = time.time(), 0.0, []
        skipped_since_log, in_a_row, trained = 0, 0, 0
        stopped_early = False
        self._log_start(per_epoch)
        try:
            while self.step < tc.max_steps:
                epoch, start = divmod(self.step, per_epoch)
                self.sampler.set_epoch(epoch)
                self.sampler.start_batch = start
                for batch in self.loader:
                    self._count_dropped(batch)
                    if len(batch) == 0:
                        self.skipped_batches += 1
                        skipped_since_log += 1
                        in_a_row += 1
                        if in_a_row >= per_epoch:
                            raise RuntimeError(
                                f"no window of {per_epoch} batch(es) in a row could be read (a whole epoch): "
                                f"the audio of {self.manifests['train']} is unreadable (see the warnings above)"
                            )
                        self.pretrain_step.skip()
                    else:
                        in_a_row = 0
                        batch = batch.to(self.device)
                        stats = self.train_step(batch)
                        trained += 1
                        running.append(stats)
                        audio_since += batch.wav.shape[0] * window_seconds * self.dist.world_size
                        if bar:
                            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{sum(stats['accuracy']) / len(stats['accuracy']):.3f}")
                    if bar:
                        bar.update(1)
                    self._apply_budget(bar)
                    if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                        now = time.time()
                        if running:
                            k = len(running[0]["accuracy"])
                            acc = [sum(r["accuracy"][i] for r in running) / len(running) for i in range(k)]
                            self.log_event(split="train", step=self.step, epoch=epoch,
                                           loss=sum(r["loss"] for r in running) / len(running),
                                           accuracy=acc, accuracy_mean=sum(acc) / k,
                                           lr=self.pretrain_step.scheduler.get_last_lr()[0],
                                           grad_norm=sum(r["grad_norm"] for r in running) / len(running),
                                           audio_seconds_per_second=audio_since / max(1e-9, now - t_last),
                                           trained_batches=len(running), skipped_batches=skipped_since_log)
                        elif skipped_since_log:
                            self.log_event(split="info", step=self.step, epoch=epoch, skipped_batches=skipped_since_log)
                        running, t_last, audio_since, skipped_since_log = [], now, 0.0, 0
                    self._validate_and_save()
                    if self.on_step is not None and self.on_step(self, batch if len(batch) else None):
                        stopped_early = True
                        break
                    if self.step >= tc.max_steps:
                        break
                if stopped_early:
                    break
        except KeyboardInterrupt:
            self.save()
            raise
        finally:
            if bar:
                bar.close()
        self._report_skipped()
        if trained == 0 and self.skipped_batches:
            raise RuntimeError(f"none of the {self.skipped_batches} batch(es) of this run could be read: "
                               f"the audio of {self.manifests['train']} is unreadable (see the warnings above)")
        if self.dist.is_main and not stopped_early:
            self.checkpoints.best_from_last()  # no validation data: the final model is the best we know
        return {"step": self.step, "finished": self.step >= tc.max_steps, "best_valid": self.best_valid}


def pretrain(cfg: PretrainConfig, train_manifest: str, output_dir: str, valid_manifest: Optional[str] = None,
             progress: bool = True, trust_manifest: bool = False, on_step: Optional[StepCallback] = None) -> Dict[str, object]:
    """Run (or resume) pretraining; returns a summary dict. The run folder is locked for the
    duration (:mod:`cpc_speech.runlock`); ``trust_manifest`` skips the check of a sample of manifest
    rows against their audio headers; ``on_step``: see :data:`StepCallback`."""
    with RunDir(output_dir, is_main=is_main_process()).lock("pretrain"):
        trainer = Trainer(cfg, train_manifest, output_dir, valid_manifest, progress=progress,
                          trust_manifest=trust_manifest, on_step=on_step)
        finished = False
        try:
            summary = trainer.fit()
            summary["rank"] = trainer.dist.rank
            finished = True
            return summary
        finally:
            cleanup(finished)

