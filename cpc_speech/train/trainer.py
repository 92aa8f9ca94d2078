"""The pretraining loop: Adam + warm-up/cosine schedule, gradient clipping, bf16/fp16 autocast
where the device computes it fast (:mod:`cpc_speech.precision`), validation, JSONL (+ TensorBoard) logs, atomic checkpoints, exact resume, DDP.

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

import contextlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional

import torch

from cpc_speech import __version__
from cpc_speech.batching import make_loader
from cpc_speech.atomic import atomic_write_text, remove_stale_temporaries
from cpc_speech.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, update_link, upgrade_saved_config
from cpc_speech.config import PretrainConfig, config_from_dict, save_config, to_dict
from cpc_speech.corpora.manifest import check_headers, read_manifest
from cpc_speech.loss import InfoNCELoss
from cpc_speech.model.cpc import CPCModel
from cpc_speech.precision import PRECISION_NAMES, Precision
from cpc_speech.precision import resolve as resolve_precision
from cpc_speech.runlock import hold_output
from cpc_speech.train.distributed import DistInfo, all_gather_windows, broadcast_choice, cleanup, init_distributed
from cpc_speech.train.schedule import lr_multiplier

# config fields that may change between a run and its resumption
RESUMABLE_CHANGES = {"train.max_steps", "train.log_batches", "train.log_every", "train.valid_every", "train.checkpoint_every",
                     "train.keep_last", "train.device", "train.threads", "data.num_workers", "train.valid_batches",
                     "train.compile", "train.amp"}


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but CUDA is not available on this machine")
    return torch.device(name)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def _flatten(d: Dict, prefix: str = "") -> Dict[str, object]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Trainer:
    """Owns the model, optimizer, data and run folder of one pretraining run."""

    def __init__(
        self,
        cfg: PretrainConfig,
        train_manifest: str,
        output_dir: str,
        valid_manifest: Optional[str] = None,
        progress: bool = True,
        stop_after: Optional[int] = None,
        trust_manifest: bool = False,
    ):
        self.cfg = cfg.validate()
        self.out = Path(output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.progress = progress
        self.stop_after = stop_after  # testing aid: stop (without finishing) after this many steps
        tc = cfg.train
        self.device = pick_device(tc.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        self.precision = resolve_precision(tc.amp, self.device)
        chosen = broadcast_choice(self.precision.name, PRECISION_NAMES, self.dist, self.device)
        if chosen != self.precision.name:  # every rank runs in rank 0's precision
            self.precision = Precision(chosen, f"rank 0's choice ({self.precision.reason} here)")
        self.train_rows = read_manifest(train_manifest)
        self.valid_rows = read_manifest(valid_manifest) if valid_manifest else None
        self.manifests = {"train": str(Path(train_manifest).resolve()), "valid": str(Path(valid_manifest).resolve()) if valid_manifest else None,
                          "train_sha256": file_sha256(train_manifest), "valid_sha256": file_sha256(valid_manifest) if valid_manifest else None}
        if not trust_manifest and self.dist.is_main:  # cheap: headers of a sample of rows
            check_headers(self.train_rows, train_manifest)
            if self.valid_rows:
                check_headers(self.valid_rows, valid_manifest)

        torch.manual_seed(tc.seed)
        self.model = CPCModel(cfg.model).to(self.device)
        self.loss_fn = InfoNCELoss(cfg.loss.negatives, cfg.loss.sampling, cfg.loss.temperature, cfg.loss.shared_negatives)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=tc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_multiplier(s, tc))
        self.ddp_model = self.model
        if self.dist.enabled:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if tc.compile:  # training steps only; checkpoints hold the plain model's weights
            self.ddp_model = torch.compile(self.ddp_model)
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
                                                   world_size=self.dist.world_size, shuffle=False, num_workers=0, augment=False)
            except ValueError as exc:
                raise ValueError(f"validation manifest {valid_manifest}: {exc}") from None
        self.step = 0
        self.skipped_windows = 0  # unreadable windows left out of batches (this run)
        self.lone_windows = 0  # same_speaker: windows left without a partner because the partner was unreadable
        self.skipped_batches = 0  # batches with no usable window (the step counts, nothing is learned)
        self._warned_rows: set = set()
        self.best_valid = math.inf
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.name == "fp16" else None
        self._tb = None

    # ------------------------------------------------------------------------------ run folder
    def prepare_run_dir(self) -> None:
        """Create the folder, or check that an existing run has a compatible config and resume."""
        last = self.ckpt_dir / "last.pt"
        if self.dist.is_main:  # we hold the folder's lock: temporary files are a killed writer's leftovers
            remove_stale_temporaries(self.ckpt_dir)
            remove_stale_temporaries(self.out)
        if last.is_file():
            state = read_checkpoint(last, map_location="cpu")
            # keys added to the config since the run started take their defaults
            where = f"{last} config"
            try:
                saved_cfg = config_from_dict(PretrainConfig, upgrade_saved_config(state.get("config") or {}), where=where)
            except ValueError as exc:
                raise CheckpointError(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
            self._check_same_manifests()
            saved = _flatten(to_dict(saved_cfg))
            now = _flatten(to_dict(self.cfg))
            changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
            if changed:
                raise ValueError(
                    f"{self.out} holds a run with a different config ({', '.join(changed)}); "
                    f"use another --output-dir or pass --restart to start over"
                )
            self._load_state(state)
            if self.dist.is_main:
                print(f"resuming {self.out} from step {self.step}", file=sys.stderr)
        if self.dist.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.out / "config.yaml")
            atomic_write_text(self.out / "manifests.json", json.dumps(self.manifests, indent=2))

    def _check_same_manifests(self) -> None:
        """A run resumes only on the manifests it started with (same content)."""
        path = self.out / "manifests.json"
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        for split in ("train", "valid"):
            before, now = old.get(f"{split}_sha256"), self.manifests.get(f"{split}_sha256")
            if before and now and before != now:
                raise ValueError(
                    f"{self.out} holds a run trained on another {split} manifest (recorded in {path}: "
                    f"{old.get(split)}, content changed since); use another --output-dir or pass --restart to start over"
                )

    def _load_state(self, state: Dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best_valid = float(state.get("best_valid", math.inf))
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def save(self, is_best: bool = False) -> None:
        if not self.dist.is_main:
            return
        path = self.ckpt_dir / f"step-{self.step:07d}.pt"
        save_checkpoint(
            path, self.model, self.cfg,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler else {},
            step=self.step, epoch=self.step // max(1, len(self.sampler)), best_valid=self.best_valid,
            rng={"torch": torch.get_rng_state()}, cpc_speech_version=__version__,
        )
        update_link(path, self.ckpt_dir / "last.pt")
        if is_best:
            update_link(path, self.ckpt_dir / "best.pt")
        steps = sorted(self.ckpt_dir.glob("step-*.pt"))
        keep = set(steps[-max(1, self.cfg.train.keep_last):])
        for p in steps:
            if p not in keep:
                p.unlink(missing_ok=True)

    def log_event(self, **fields) -> None:
        """Append one JSON line to log.jsonl: keys ``split`` (train|valid), ``step``, ``loss``,
        ``accuracy`` (per step k), ``accuracy_mean``, and for train ``lr``, ``audio_seconds_per_second``."""
        if not self.dist.is_main:
            return
        fields = {"time": round(time.time(), 3), **fields}
        log = self.out / "log.jsonl"
        try:
            with open(log, "a") as f:
                f.write(json.dumps(fields) + "\n")
        except OSError as exc:  # e.g. a full disk: name the file
            raise OSError(exc.errno, exc.strerror, str(log)) from None
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            except Exception:
                self._tb = False
        if self._tb:
            split = fields.get("split", "train")
            for key in ("loss", "accuracy_mean", "lr"):
                if key in fields:
                    self._tb.add_scalar(f"{split}/{key}", fields[key], fields["step"])

    # ------------------------------------------------------------------------------ steps
    def _autocast(self):
        return self.precision.autocast(self.device)

    def _loss(self, batch, generator):
        out = self.ddp_model(batch.wav, target_wav=batch.target_wav)
        z = CPCModel.targets(out)
        remote = None
        if self.dist.enabled and self.cfg.loss.gather_across_ranks:
            remote = all_gather_windows(z, batch.speaker, batch.utterance, self.dist)
        # bf16 under autocast: the loss gathers and multiplies in bf16, scores in float32
        return self.loss_fn(z, out.predictions, batch.speaker, batch.utterance, generator=generator, remote=remote)

    def train_step(self, batch) -> Dict[str, object]:
        tc = self.cfg.train
        seed = step_seed(tc.seed, self.step, self.dist.rank)
        torch.manual_seed(seed)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.model.train()
        with self._autocast():
            result = self._loss(batch, gen)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(result.loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            result.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip) if tc.grad_clip > 0 else torch.tensor(0.0)
        if not torch.isfinite(result.loss):
            raise FloatingPointError(f"loss is {result.loss.item()} at step {self.step}; lower train.lr or check the audio")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {"loss": result.loss.item(), "accuracy": result.accuracy.tolist(), "grad_norm": float(grad_norm)}

    @torch.no_grad()
    def validate(self) -> Optional[Dict[str, object]]:
        if self.valid_loader is None:
            return None
        cfg = self.cfg
        loader = self.valid_loader
        self.model.eval()
        losses, accs = [], []
        gen = torch.Generator(device=self.device).manual_seed(cfg.train.seed + 12345)
        for i, batch in enumerate(loader):
            if i >= cfg.train.valid_batches:
                break
            self._warn_unreadable(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            with self._autocast():
                out = self.model(batch.wav)
                r = self.loss_fn(out.z, out.predictions, batch.speaker, batch.utterance, generator=gen)
            losses.append(r.loss.item())
            accs.append(r.accuracy)
        if not losses:
            return None
        loss = sum(losses) / len(losses)
        acc = torch.stack(accs).mean(0)
        if self.dist.enabled:
            t = torch.tensor([loss] + acc.tolist(), device=self.device)
            torch.distributed.all_reduce(t)
            t /= self.dist.world_size
            loss, acc = t[0].item(), t[1:].cpu()
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
        window_seconds = self.cfg.data.window_samples / 16000
        t_last, audio_since, running = time.time(), 0.0, []
        skipped_since_log, in_a_row, trained = 0, 0, 0
        stopped_early = False
        if self.dist.is_main:
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
                        self.step += 1
                        self.scheduler.step()
                    else:
                        in_a_row = 0
                        if tc.log_batches:
                            with open(self.out / f"batches-rank{self.dist.rank}.jsonl", "a") as f:
                                f.write(json.dumps({"step": self.step, "windows": batch.windows}) + "\n")
                        batch = batch.to(self.device)
                        stats = self.train_step(batch)
                        trained += 1
                        running.append(stats)
                        audio_since += batch.wav.shape[0] * window_seconds * self.dist.world_size
                        if bar:
                            bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{sum(stats['accuracy']) / len(stats['accuracy']):.3f}")
                    if bar:
                        bar.update(1)
                    if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                        now = time.time()
                        if running:
                            k = len(running[0]["accuracy"])
                            acc = [sum(r["accuracy"][i] for r in running) / len(running) for i in range(k)]
                            self.log_event(split="train", step=self.step, epoch=epoch,
                                           loss=sum(r["loss"] for r in running) / len(running),
                                           accuracy=acc, accuracy_mean=sum(acc) / k,
                                           lr=self.scheduler.get_last_lr()[0],
                                           grad_norm=sum(r["grad_norm"] for r in running) / len(running),
                                           audio_seconds_per_second=audio_since / max(1e-9, now - t_last),
                                           trained_batches=len(running), skipped_batches=skipped_since_log)
                        elif skipped_since_log:
                            self.log_event(split="info", step=self.step, epoch=epoch, skipped_batches=skipped_since_log)
                        running, t_last, audio_since, skipped_since_log = [], now, 0.0, 0
                    is_best = False
                    if self.step % tc.valid_every == 0 or self.step == tc.max_steps:
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
                    if self.step % tc.checkpoint_every == 0 or self.step == tc.max_steps or is_best:
                        self.save(is_best=is_best)
                    if self.stop_after is not None and self.step >= self.stop_after:
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
        if self.dist.is_main and (self.skipped_windows or self.lone_windows or self.skipped_batches):
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
        if trained == 0 and self.skipped_batches:
            raise RuntimeError(f"none of the {self.skipped_batches} batch(es) of this run could be read: "
                               f"the audio of {self.manifests['train']} is unreadable (see the warnings above)")
        if tc.log_batches:
            (self.out / f"final-rank{self.dist.rank}.json").write_text(json.dumps({"step": self.step, "param_checksum": self.param_checksum()}))
        if self.dist.is_main and not stopped_early:
            best, last = self.ckpt_dir / "best.pt", self.ckpt_dir / "last.pt"
            if not best.exists() and last.exists():  # no validation data: the final model is the best we know
                update_link(last, best)
        return {"step": self.step, "finished": self.step >= tc.max_steps, "best_valid": self.best_valid}

    def param_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.model.parameters()))


def load_run_config(output_dir: str) -> PretrainConfig:
    from cpc_speech.config import load_config

    return load_config(PretrainConfig, Path(output_dir) / "config.yaml")


def pretrain(cfg: PretrainConfig, train_manifest: str, output_dir: str, valid_manifest: Optional[str] = None,
             progress: bool = True, stop_after: Optional[int] = None, trust_manifest: bool = False) -> Dict[str, object]:
    """Run (or resume) pretraining; returns a summary dict. The run folder is locked for the
    duration (:mod:`cpc_speech.runlock`); ``trust_manifest`` skips the check of a sample of manifest
    rows against their audio headers."""
    with hold_output(output_dir, "pretrain") if is_main_process() else contextlib.nullcontext():
        trainer = Trainer(cfg, train_manifest, output_dir, valid_manifest, progress=progress, stop_after=stop_after,
                          trust_manifest=trust_manifest)
        finished = False
        try:
            summary = trainer.fit()
            summary["param_checksum"] = trainer.param_checksum()
            summary["rank"] = trainer.dist.rank
            finished = True
            return summary
        finally:
            cleanup(finished)


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (or a single process): the one that owns the run folder."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def file_sha256(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
