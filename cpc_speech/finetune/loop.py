"""The epochs of one fine-tuning condition: a CTC head (and, end to end, its network) trained
with Adam on CTC loss, a learning rate with a linear warm-up then constant or cosine
(:func:`cpc_speech.engine.schedule.lr_factor`), one shuffled pass over the training subset per
epoch, SpecAugment-style masks on the head input.

After each epoch greedy decoding on the dev split gives the dev PER and dev CTC loss; the best
epoch (lowest dev PER) is kept, training stops after ``patience`` epochs with neither a better dev
PER nor a lower dev loss, and only the best epoch is decoded on the test split (nothing is
selected on it). ``last.pt`` holds the state after each epoch and ``best.pt`` the best weights
(:class:`cpc_speech.engine.run_dir.CheckpointSlots`, kind ``cpc_speech.finetune``); shuffling,
dropout and masks are seeded per epoch (:func:`cpc_speech.engine.seeding.epoch_seed`), so a
resumed condition gives the numbers of an uninterrupted one.

Each epoch appends one record to the run folder's ``log.jsonl`` (:meth:`ConditionTraining.log_epoch`),
before ``last.pt`` is written; a condition that (re)starts first drops its records of epochs after
its checkpoint, which it is about to repeat, so the log holds each epoch once.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any, Callable, Dict, Optional

import torch

from cpc_speech.settings import to_dict
from cpc_speech.engine.checkpoint import FINETUNE_KIND, FORMAT_VERSION
from cpc_speech.engine.run_dir import CheckpointSlots, RunDir
from cpc_speech.engine.schedule import lr_factor
from cpc_speech.engine.seeding import epoch_seed
from cpc_speech.finetune.batching import epoch_batches
from cpc_speech.finetune.conditions import ConditionSources, FeatureSource
from cpc_speech.finetune.config import PRETRAINED, FinetuneConfig, FinetuneError
from cpc_speech.finetune.data import FinetuneData
from cpc_speech.finetune.evaluation import ctc_loss, decode_split, evaluate, feature_stats
from cpc_speech.finetune.head import CTCHead
from cpc_speech.finetune.specaugment import keep_mask

EpochCallback = Callable[[str, int, Dict[str, Any]], None]  # (condition, epoch, curve record)


def clone_state(module: Optional[torch.nn.Module]) -> Optional[Dict[str, torch.Tensor]]:
    if module is None:
        return None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ConditionTraining:
    """The head, feature source, optimizer and progress of one condition being trained, and its
    checkpoints (``slots``: ``<output_dir>/<condition>/{last,best}.pt``; None: in memory only).

    ``sources``: the run's inputs (architecture and precision of the CPC networks); ``start_head``:
    initial head weights (the frozen condition's best head for ``unfrozen``); ``resuming``: the
    state comes from :meth:`resume` (no normalisation statistics are computed); ``t_start``: this
    process's time on the condition counts from here; ``progress``: tqdm bars; ``run_dir``: the
    run folder whose ``log.jsonl`` gets one record per epoch (None: no log)."""

    def __init__(self, cfg: FinetuneConfig, data: FinetuneData, name: str, source: FeatureSource, sources: ConditionSources,
                 slots: Optional[CheckpointSlots], start_head: Optional[Dict[str, torch.Tensor]], resuming: bool,
                 t_start: float, progress: bool, run_dir: Optional[RunDir] = None):
        self.t_start, self.sources, self.progress, self.run_dir = t_start, sources, progress, run_dir
        self.cfg, self.data, self.name, self.source, self.slots = cfg, data, name, source, slots
        self.fingerprint = data.fingerprint()
        torch.manual_seed(cfg.seed)
        self.head = CTCHead(source.dim, data.inventory.num_classes, cfg.head_config())
        if start_head is not None:  # normalisation statistics included
            self.head.load_state_dict(start_head)
        elif cfg.normalize and not resuming:  # (resuming: the statistics come back with the head's buffers)
            self.head.set_normalization(*feature_stats(source, data.train.utterances, cfg.eval_batch_size))
        self.head.to(sources.device)
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

    def _bar(self, iterable, **kwargs):
        from tqdm import tqdm

        return tqdm(iterable, disable=not self.progress, **kwargs)

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
        self.best_weights = (clone_state(self.head), clone_state(self.source.backbone))
        if self.slots is not None:
            self.slots.save_best({
                "format_version": FORMAT_VERSION, "kind": FINETUNE_KIND, "condition": name, "epoch": epoch, "dev_per": dev_per,
                "head": self.best_weights[0], "backbone": self.best_weights[1], "head_config": asdict(cfg.head_config()),
                "in_dim": self.source.dim, "num_classes": self.data.inventory.num_classes, "phones": self.data.inventory.class_names,
                "features": "mfcc" if name == "mfcc" else cfg.features,
                "backbone_config": to_dict(self.sources.model_config()) if name != "mfcc" else None,
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
        for b, idx in enumerate(self._bar(batches, desc=f"{self.name} epoch {epoch}", unit="batch", leave=False)):
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

    def log_epoch(self, record: Dict[str, Any], seconds: float) -> None:
        """Append the epoch's record to ``log.jsonl``: condition, epoch, train and dev CTC loss, dev
        PER, the head's learning rate at the epoch's last step, the epoch's seconds (training and
        dev evaluation) and the CPC networks' precision (None for ``mfcc``); ``step`` = epoch."""
        if self.run_dir is None:
            return
        precision = None if self.name == "mfcc" else self.sources.precision().name
        self.run_dir.log(split=f"finetune/{self.name}", step=record["epoch"], condition=self.name, epoch=record["epoch"],
                         train_loss=record["train_loss"], dev_loss=record["dev_loss"], dev_per=record["dev_per"],
                         lr=self.optimizer.param_groups[0]["lr"], seconds=round(seconds, 3), precision=precision)

    def fit(self, on_epoch_end: Optional[EpochCallback]) -> None:
        """Train epochs until ``epochs_for(condition)`` or ``patience`` epochs without progress."""
        cfg, state, name = self.cfg, self.state, self.name
        if self.run_dir is not None:  # epochs after the checkpoint were logged by a killed process: they are redone
            done = state["epoch"]
            self.run_dir.drop_log_records(lambda r: r.get("condition") == name and isinstance(r.get("epoch"), int) and r["epoch"] > done)
        per_epoch = len(epoch_batches(self.data.train.utterances, cfg.batch_size, cfg.batching, torch.Generator(), cfg.batch_frames))
        epochs_max = cfg.epochs_for(name)
        epochs = self._bar(range(state["epoch"] + 1, epochs_max + 1), desc=name, unit="epoch", initial=state["epoch"], total=epochs_max)
        for epoch in epochs:
            if state["bad_epochs"] >= cfg.patience:
                break
            t_epoch = time.time()
            record = self.end_epoch(epoch, self.train_epoch(epoch, per_epoch, per_epoch * epochs_max))
            state["seconds"] = self.seconds_before + (time.time() - self.t_start)
            self.log_epoch(record, time.time() - t_epoch)
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
            "device": str(self.sources.device),
            "precision": None if name == "mfcc" else self.sources.precision().name,
            "seconds": state["seconds"], "data_fingerprint": self.fingerprint,
        }
