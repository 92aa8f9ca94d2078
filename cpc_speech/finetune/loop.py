"""CTC phone-recognition fine-tuning with limited labels, and its baselines.

Conditions (each trains the same CTC head, :class:`cpc_speech.finetune.head.CTCHead`):

* ``frozen``: on the features of the pretrained model, kept fixed (features computed once and
  cached in memory as float16: 51 kB per second of audio for 256 dimensions);
* ``unfrozen``: head and pretrained model trained together, the pretrained part at
  ``lr * backbone_lr_scale``;
* ``mfcc``: on MFCC + deltas (:func:`cpc_speech.mfcc.mfcc_features`), standardised with
  training-set statistics;
* ``scratch``: the pretrained model's architecture with random weights, trained end to end at
  ``lr * scratch_lr_scale``.

Training: Adam, CTC loss (blank = the last class), constant learning rate, one pass over the
(shuffled) training subset per epoch; after each epoch greedy decoding on the dev split gives the
dev PER and dev CTC loss; the best epoch (lowest dev PER) is kept, training stops after
``patience`` epochs with neither a better dev PER nor a lower dev loss, and only the best epoch
is decoded on the test split. Nothing is selected on the test split.

Every condition writes ``<output_dir>/<condition>/last.pt`` (training state after each epoch),
``best.pt`` (the best weights) and, once finished, ``result.json``; rerunning with ``resume``
skips finished conditions and continues an interrupted one from its last epoch. Shuffling and
dropout are seeded per epoch, so an interrupted and resumed run gives the same numbers as an
uninterrupted one. All checkpoint files are written atomically and load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from cpc_speech.atomic import atomic_write_text
from cpc_speech.config import save_config, to_dict
from cpc_speech.engine.checkpoint import FINETUNE_KIND, FORMAT_VERSION, read_checkpoint
from cpc_speech.engine.device import pick_device, set_threads
from cpc_speech.engine.run_dir import CheckpointSlots, RunDir, check_resumable
from cpc_speech.engine.schedule import lr_factor
from cpc_speech.engine.seeding import epoch_seed
from cpc_speech.finetune.batching import epoch_batches
from cpc_speech.finetune.conditions import ConditionSources, FeatureSource
from cpc_speech.finetune.config import (
    CONFIG_NAME,
    LEGACY_DEFAULTS,
    PRETRAINED,
    RESUMABLE,
    FinetuneConfig,
    FinetuneError,
    read_settings,
)
from cpc_speech.finetune.data import FinetuneData, all_utterances, prepare_data
from cpc_speech.finetune.evaluation import ctc_loss, decode_split, evaluate, feature_stats
from cpc_speech.finetune.head import CTCHead
from cpc_speech.finetune.specaugment import keep_mask
from cpc_speech.runlock import hold_output

EpochCallback = Callable[[str, int, Dict[str, Any]], None]  # (condition, epoch, curve record)


@dataclass
class ConditionResult:
    """One trained condition: its result record and (when trained in this process) the networks."""

    name: str
    record: Dict[str, Any]
    head: Optional[CTCHead] = None
    backbone: Optional[torch.nn.Module] = None


def _tqdm_log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _clone_state(module: Optional[torch.nn.Module]) -> Optional[Dict[str, torch.Tensor]]:
    if module is None:
        return None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ConditionTraining:
    """The head, feature source, optimizer and progress of one condition being trained, and its
    checkpoints (``slots``: ``<output_dir>/<condition>/{last,best}.pt``; None: in memory only)."""

    def __init__(self, tuner: "Finetuner", name: str, source: FeatureSource, slots: Optional[CheckpointSlots],
                 start_head: Optional[Dict[str, torch.Tensor]], resuming: bool, t_start: float):
        cfg, data = tuner.cfg, tuner.prepare()
        self.t_start = t_start  # seconds: this process's time on the condition counts from here
        self.tuner, self.cfg, self.data, self.name, self.source, self.slots = tuner, cfg, data, name, source, slots
        self.fingerprint = data.fingerprint()
        torch.manual_seed(cfg.seed)
        self.head = CTCHead(source.dim, data.inventory.num_classes, cfg.head_config())
        if start_head is not None:  # normalisation statistics included
            self.head.load_state_dict(start_head)
        elif cfg.normalize and not resuming:  # (resuming: the statistics come back with the head's buffers)
            self.head.set_normalization(*feature_stats(source, data.train.utterances, cfg.eval_batch_size))
        self.head.to(tuner.device)
        # a head that starts trained (from the frozen condition) is fine-tuned at the backbone's rate
        head_lr = cfg.lr * cfg.backbone_lr_scale if (name == "unfrozen" and cfg.unfrozen_init == "frozen") else cfg.lr
        groups = [{"params": list(self.head.parameters()), "lr": head_lr}]
        if source.backbone is not None:
            scale = cfg.backbone_lr_scale if name == "unfrozen" else cfg.scratch_lr_scale
            groups.append({"params": [p for p in source.backbone.parameters() if p.requires_grad], "lr": cfg.lr * scale})
        self.optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        self.base_lrs = [g["lr"] for g in groups]
        self.trainable = [p for g in groups for p in g["params"]]
        self.state: Dict[str, Any] = {"epoch": 0, "curve": [], "best_epoch": 0, "best_dev_per": math.inf, "best_dev_loss": math.inf,
                                      "bad_epochs": 0, "initial_dev_per": None, "seconds": 0.0}
        self.best_weights = None
        self.seconds_before = 0.0  # training seconds of earlier processes (resumed runs)

    def resume(self) -> None:
        """Continue from ``last.pt`` (and ``best.pt``), which must be of this run's data."""
        ck = self.slots.read_last(kind=FINETUNE_KIND)
        if ck.get("data_fingerprint") != self.fingerprint:
            raise FinetuneError(f"{self.slots.last}: was trained on different data; use a new --output-dir")
        self.head.load_state_dict(ck["head"])
        if self.source.backbone is not None:
            self.source.backbone.load_state_dict(ck["backbone"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.state.update(ck["state"])
        self.seconds_before = self.state["seconds"]
        best = self.slots.read_best(kind=FINETUNE_KIND)
        self.best_weights = (best["head"], best.get("backbone"))

    def save_best(self, epoch: int, dev_per: float) -> None:
        cfg, name = self.cfg, self.name
        self.best_weights = (_clone_state(self.head), _clone_state(self.source.backbone))
        if self.slots is not None:
            self.slots.save_best({
                "format_version": FORMAT_VERSION, "kind": FINETUNE_KIND, "condition": name, "epoch": epoch, "dev_per": dev_per,
                "head": self.best_weights[0], "backbone": self.best_weights[1], "head_config": asdict(cfg.head_config()),
                "in_dim": self.source.dim, "num_classes": self.data.inventory.num_classes, "phones": self.data.inventory.class_names,
                "features": "mfcc" if name == "mfcc" else cfg.features,
                "backbone_config": to_dict(self.tuner.sources.model_config()) if name != "mfcc" else None,
                "pretrained": cfg.model if name in PRETRAINED else None,
            })

    def save_last(self) -> None:
        if self.slots is not None:
            self.slots.save_last({
                "format_version": FORMAT_VERSION, "kind": FINETUNE_KIND, "condition": self.name, "config": to_dict(self.cfg),
                "data_fingerprint": self.fingerprint, "head": self.head.state_dict(),
                "backbone": self.source.backbone.state_dict() if self.source.backbone is not None else None,
                "optimizer": self.optimizer.state_dict(), "state": {**self.state, "curve": [dict(r) for r in self.state["curve"]]},
            })

    def start(self) -> None:
        """A fresh start: record the untrained head (epoch 0 competes too, so a fine-tuned run never
        reports worse than its start; it is the result when no epoch is trained)."""
        dev0, loss0 = evaluate(self.head, self.source, self.data.dev, self.data.inventory.blank, self.cfg.eval_batch_size)
        self.state.update(initial_dev_per=dev0.rate, initial_dev_loss=loss0, best_epoch=0, best_dev_per=dev0.rate)
        self.save_best(0, dev0.rate)
        self.save_last()

    def train_epoch(self, epoch: int, per_epoch: int, total_steps: int) -> float:
        """One shuffled pass over the training subset; returns the mean training loss."""
        cfg, train, head, source = self.cfg, self.data.train, self.head, self.source
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, "batches"))
        torch.manual_seed(epoch_seed(cfg.seed, epoch, "dropout"))
        mask_gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, "masks"))
        masking = cfg.masking(source.dim)
        batches = epoch_batches(train.utterances, cfg.batch_size, cfg.batching, gen, cfg.batch_frames)
        head.train()
        source.train(True)
        total, weight = 0.0, 0
        for b, idx in enumerate(self.tuner.bar(batches, desc=f"{self.name} epoch {epoch}", unit="batch", leave=False)):
            factor = lr_factor(cfg.lr_schedule, (epoch - 1) * per_epoch + b, total_steps, cfg.warmup_steps)
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * factor
            labels = [train.targets[i].labels for i in idx]
            x, lengths = source.batch([train.utterances[i] for i in idx])
            keep = keep_mask(lengths, x.shape[1], x.shape[2], masking, mask_gen) if masking.enabled else None
            loss = ctc_loss(head(x, lengths, keep).float(), head.output_lengths(lengths), labels, self.data.inventory.blank, "mean")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
            self.optimizer.step()
            total += float(loss.detach()) * len(idx)
            weight += len(idx)
        return total / max(1, weight)

    def end_epoch(self, epoch: int, train_loss: float) -> Dict[str, Any]:
        """Evaluate on dev, keep the best epoch, count epochs without progress; the curve record."""
        state = self.state
        dev_counts, dev_loss = evaluate(self.head, self.source, self.data.dev, self.data.inventory.blank, self.cfg.eval_batch_size)
        dev_per = dev_counts.rate
        record = {"epoch": epoch, "train_loss": train_loss, "dev_per": dev_per, "dev_loss": dev_loss}
        state["curve"].append(record)
        state["epoch"] = epoch
        # progress = a better dev PER, or (e.g. while the head still emits mostly blanks) a dev
        # loss at least 0.1 % below its best so far; the best epoch is chosen on dev PER only
        progress = False
        if dev_per < state["best_dev_per"]:
            state.update(best_dev_per=dev_per, best_epoch=epoch)
            self.save_best(epoch, dev_per)
            progress = True
        if dev_loss < state["best_dev_loss"] * (1 - 1e-3):
            state["best_dev_loss"] = dev_loss
            progress = True
        state["bad_epochs"] = 0 if progress else state["bad_epochs"] + 1
        return record

    def fit(self, on_epoch_end: Optional[EpochCallback]) -> None:
        """Train epochs until ``epochs_for(condition)`` or ``patience`` epochs without progress."""
        cfg, state, name = self.cfg, self.state, self.name
        per_epoch = len(epoch_batches(self.data.train.utterances, cfg.batch_size, cfg.batching, torch.Generator(), cfg.batch_frames))
        epochs_max = cfg.epochs_for(name)
        epochs = self.tuner.bar(range(state["epoch"] + 1, epochs_max + 1), desc=name, unit="epoch", initial=state["epoch"], total=epochs_max)
        for epoch in epochs:
            if state["bad_epochs"] >= cfg.patience:
                break
            record = self.end_epoch(epoch, self.train_epoch(epoch, per_epoch, per_epoch * epochs_max))
            state["seconds"] = self.seconds_before + (time.time() - self.t_start)
            self.save_last()
            epochs.set_postfix(loss=f"{record['train_loss']:.3f}", dev_per=f"{record['dev_per']:.3f}", best=state["best_epoch"])
            if on_epoch_end is not None:
                on_epoch_end(name, epoch, dict(record))
        epochs.close()

    def result(self) -> Dict[str, Any]:
        """The best epoch, decoded once on dev (already known) and test: the result record."""
        cfg, data, state, name = self.cfg, self.data, self.state, self.name
        self.head.load_state_dict(self.best_weights[0])
        if self.source.backbone is not None:
            self.source.backbone.load_state_dict(self.best_weights[1])
        dev = decode_split(self.head, self.source, data.dev, cfg, data)
        test = decode_split(self.head, self.source, data.test, cfg, data) if data.test else None
        state["seconds"] = self.seconds_before + (time.time() - self.t_start)
        return {
            "per_dev": dev["per"], "per_test": test["per"] if test else None, "decoder": cfg.decode,
            "train_hours": data.subset.hours, "train_utterances": len(data.train.utterances),
            "best_epoch": state["best_epoch"], "curve": state["curve"], "initial_dev_per": state["initial_dev_per"],
            "epochs_run": state["epoch"],
            "stopped_early": state["bad_epochs"] >= cfg.patience and state["epoch"] < cfg.epochs_for(name),
            "dev_errors": dev["errors"], "test_errors": test["errors"] if test else None,
            "dev_decoding": dev["decoding"], "test_decoding": test["decoding"] if test else None,
            "started_from": "frozen head" if name == "unfrozen" and cfg.unfrozen_init == "frozen" else "random head",
            "device": str(self.tuner.device),
            "precision": None if name == "mfcc" else self.tuner.sources.precision().name,
            "seconds": state["seconds"], "data_fingerprint": self.fingerprint,
        }


class Finetuner:
    """Runs the configured conditions; see the module docstring.

    ``progress``: tqdm bars; ``log``: a callable for one-line messages (default: silent unless
    ``progress``, then stderr). ``resume``: continue/skip what ``output_dir`` already holds
    (otherwise an output folder with checkpoints of a condition to run is an error).
    """

    def __init__(self, cfg: FinetuneConfig, progress: bool = True, resume: bool = False, log: Optional[Callable[[str], None]] = None):
        self.cfg = cfg.validate()
        self.progress = progress
        self.resume = resume
        self.log = log or (_tqdm_log if progress else (lambda m: None))
        self.data: Optional[FinetuneData] = None
        self.device = pick_device(cfg.device, key="device")
        self.sources = ConditionSources(self.cfg, self.device, lambda: all_utterances(self.prepare()), progress)
        self.run_dir = RunDir(cfg.output_dir) if cfg.output_dir else None
        self._frozen_head: Optional[Dict[str, torch.Tensor]] = None  # the frozen condition's best head
        self._done: Dict[str, ConditionResult] = {}  # conditions finished (or found finished) in this run

    def bar(self, iterable, **kwargs):
        """``iterable`` with a tqdm progress bar (hidden without ``progress``)."""
        from tqdm import tqdm

        return tqdm(iterable, disable=not self.progress, **kwargs)

    def pretrained(self):
        """The pretrained model (loaded once, eval mode, never modified)."""
        return self.sources.pretrained()

    def frozen_features(self) -> Dict[str, torch.Tensor]:
        """The cached features of the pretrained model for every utterance (id -> (frames, dim))."""
        return self.sources.frozen_features()

    def prepare(self) -> FinetuneData:
        """Read targets, manifest and splits; filter; choose the training subset (once)."""
        if self.data is None:
            self.data = prepare_data(self.cfg, self.sources.encoder(), self.log)
        return self.data

    def _condition_dir(self, name: str) -> Optional[Path]:
        return self.run_dir.path / name if self.run_dir else None

    def _check_output_dir(self) -> None:
        """Write (or, resuming, compare) the config next to the checkpoints."""
        if self.run_dir is None:
            return
        out = self.run_dir.path
        out.mkdir(parents=True, exist_ok=True)
        path = out / CONFIG_NAME
        if path.is_file() and self.resume:
            check_resumable({**LEGACY_DEFAULTS, **read_settings(path)}, to_dict(self.cfg), RESUMABLE, out,
                            "use a new --output-dir", error=FinetuneError)
        if not self.resume:
            busy = [c for c in self.cfg.conditions if (out / c / "last.pt").exists() or (out / c / "result.json").exists()]
            if busy:
                raise FinetuneError(
                    f"{out} already holds checkpoints of {', '.join(busy)}; pass --resume to continue, or use a new --output-dir"
                )
        save_config(self.cfg, path)

    def run(self, on_epoch_end: Optional[EpochCallback] = None) -> Dict[str, Any]:
        """Train every configured condition; returns the result dict (see :func:`run_finetune`)."""
        t0 = time.time()
        set_threads(self.cfg.threads)
        self._check_output_dir()
        data = self.prepare()
        results = {}
        in_conditions = 0.0
        for name in self.cfg.conditions:
            t1 = time.time()
            results[name] = self.train_condition(name, on_epoch_end).record
            in_conditions += time.time() - t1
        # this run's own overhead + every condition's training time (cumulative over resumptions)
        seconds = (time.time() - t0 - in_conditions) + sum(r["seconds"] for r in results.values())
        return {
            "finetune": results,
            "phones": data.inventory.class_names,
            "config": to_dict(self.cfg),
            "data": {
                "train": {**data.train.summary(), "pool_utterances": data.train_pool, "speakers": data.subset.speakers},
                "dev": data.dev.summary(),
                "test": data.test.summary() if data.test else None,
                "blank": data.inventory.blank,
            },
            "seconds": seconds,
        }

    def _finished(self, name: str) -> Optional[ConditionResult]:
        """The result of condition ``name`` that an earlier run of this folder finished, if any."""
        cdir = self._condition_dir(name)
        if cdir is None or not (cdir / "result.json").is_file():
            return None
        if not self.resume:
            raise FinetuneError(f"{cdir} already holds a finished result; pass --resume to reuse it")
        record = json.loads((cdir / "result.json").read_text())
        if record.get("data_fingerprint") != self.prepare().fingerprint():
            raise FinetuneError(f"{cdir / 'result.json'}: was computed on different data; use a new --output-dir")
        self.log(f"{name}: finished earlier (dev PER {record['per_dev']:.4f}), skipping")
        return ConditionResult(name, record)

    def train_condition(self, name: str, on_epoch_end: Optional[EpochCallback] = None) -> ConditionResult:
        """Train (or resume, or load the finished result of) one condition."""
        if name in self._done:
            return self._done[name]
        cfg = self.cfg
        finished = self._finished(name)
        if finished is not None:
            self._done[name] = finished
            return finished
        slots = self.run_dir.slots(name) if self.run_dir else None
        resuming = slots is not None and slots.last.is_file()
        start_head = None
        if name == "unfrozen" and cfg.unfrozen_init == "frozen" and not resuming:
            start_head = self.frozen_head()
        t_start = time.time()
        run = ConditionTraining(self, name, self.sources.source(name), slots, start_head, resuming, t_start)
        if resuming:
            if not self.resume:
                raise FinetuneError(f"{slots.last} exists; pass --resume to continue it")
            run.resume()
            state = run.state
            self.log(f"{name}: resuming after epoch {state['epoch']} (best dev PER {state['best_dev_per']:.4f} at epoch {state['best_epoch']})")
        if run.state["initial_dev_per"] is None:
            run.start()
        run.fit(on_epoch_end)
        record = run.result()
        if self.run_dir is not None:
            self.run_dir.write_json(Path(name) / "result.json", record)
        if name == "frozen":
            self._frozen_head = _clone_state(run.head)
        self.log(
            f"{name}: dev PER {record['per_dev']:.4f}"
            + (f", test PER {record['per_test']:.4f}" if record["per_test"] is not None else "")
            + f" (best epoch {record['best_epoch']} of {record['epochs_run']}, {record['seconds']:.1f} s)"
        )
        result = ConditionResult(name, record, run.head, run.source.backbone if name != "frozen" else self.sources.pretrained())
        self._done[name] = result
        return result

    def frozen_head(self) -> Dict[str, torch.Tensor]:
        """The frozen condition's best head (its weights and normalisation buffers): trained in
        this run, read from ``output_dir/frozen/best.pt`` when that condition finished earlier, or
        trained now."""
        if self._frozen_head is None:
            cdir = self._condition_dir("frozen")
            if cdir is not None and (cdir / "result.json").is_file() and self.resume:
                self.train_condition("frozen")  # checks that it was computed on this data
                self._frozen_head = read_checkpoint(cdir / "best.pt", kind=FINETUNE_KIND)["head"]
            else:
                self.log("unfrozen: starts from the frozen condition's best head; training that first")
                self.train_condition("frozen")
        return self._frozen_head


def run_finetune(
    cfg: FinetuneConfig,
    progress: bool = True,
    resume: bool = False,
    out: Optional[str] = None,
    on_epoch_end: Optional[EpochCallback] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run fine-tuning and its baselines; write the result JSON to ``out`` (atomically) if given.

    Result::

        {"finetune": {<condition>: {"per_dev", "per_test", "train_hours", "train_utterances",
                                    "best_epoch", "curve": [{"epoch", "train_loss", "dev_per"}, ...],
                                    "initial_dev_per", "epochs_run", "stopped_early", "dev_errors",
                                    "test_errors", "seconds", ...}, ...},
         "phones": [class names], "config": {...}, "data": {...}, "seconds": s}

    ``cfg.output_dir`` and ``out`` are locked for the whole run (:mod:`cpc_speech.runlock`), which
    also checks before training that they can be written.
    """
    with contextlib.ExitStack() as stack:
        run_dir = None
        if cfg.output_dir:
            if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
                raise FinetuneError(f"--output-dir {cfg.output_dir} is a file, not a folder")
            run_dir = RunDir(cfg.output_dir)
            stack.enter_context(run_dir.lock("finetune"))
            run_dir.remove_temporaries(*(p.name for p in run_dir.path.iterdir() if p.is_dir()))
        if out:
            if Path(out).is_dir():
                raise FinetuneError(f"--out {out} is a folder; give the result file's name")
            stack.enter_context(hold_output(out, "finetune", kind="file"))
        result = Finetuner(cfg, progress=progress, resume=resume, log=log).run(on_epoch_end)
        if out:
            atomic_write_text(out, json.dumps(result, indent=2))
        if run_dir is not None:
            run_dir.write_json("result.json", result)
    return result
