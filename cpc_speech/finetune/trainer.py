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
import copy
import hashlib
import json
import math
import re
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from cpc_speech.atomic import atomic_write_text, remove_stale_temporaries
from cpc_speech.checkpoint import atomic_save
from cpc_speech.config import check_limits, from_dict, preset, save_config, to_dict
from cpc_speech.corpora.labels import read_id_list
from cpc_speech.corpora.manifest import Utterance, read_manifest
from cpc_speech.finetune.batching import BATCHING, SCHEDULES, epoch_batches, length_order, lr_factor
from cpc_speech.finetune.decode import PhoneLM, prefix_beam_search
from cpc_speech.finetune.head import HEAD_KINDS, CTCHead, HeadConfig
from cpc_speech.finetune.per import EditCounts, ctc_min_frames, error_counts, greedy_decode
from cpc_speech.finetune.specaugment import MaskingConfig, keep_mask
from cpc_speech.finetune.subset import Subset, select_hours
from cpc_speech.finetune.targets import CTCClasses, Transcript, load_targets
from cpc_speech.model.layers import check_layer, layer_dim
from cpc_speech.runlock import hold_output

CONDITIONS = ("frozen", "unfrozen", "mfcc", "scratch")
PRETRAINED = ("frozen", "unfrozen")
END_TO_END = ("unfrozen", "scratch")
CONFIG_NAME = "finetune_config.yaml"
CKPT_KIND = "cpc_speech.finetune"
FORMAT_VERSION = 1
MAX_LISTED_WARNINGS = 5  # per split and reason; the rest only counted
# config fields that may change between a run and its resumption
_RESUME_FREE = ("conditions", "threads", "output_dir", "eval_batch_size", "device")
# settings of runs saved before the field existed (a resumed run must keep them)
_LEGACY_DEFAULTS = {
    "batching": "random", "head_layers": 1, "head_stride": 1, "head_norm": False, "end_to_end_epochs": 0, "batch_frames": 0,
    "lr_schedule": "constant", "warmup_steps": 0, "time_masks_per_second": 0.0, "time_mask_frames": 10,
    "channel_masks": 0, "channel_mask_fraction": 0.1, "unfrozen_init": "random", "decode": "greedy", "beam_size": 8,
    "lm_order": 0, "lm_weight": 0.5, "insertion_bonus": 0.0, "precision": "fp32", "device": "auto",
}


class FinetuneError(ValueError):
    """A problem with the fine-tuning inputs or output folder; the message names the file."""


class FinetuneWarning(UserWarning):
    """Skipped utterances and other recoverable data problems."""


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (saved as ``finetune_config.yaml``)."""

    model: Optional[str] = None  # pretrained checkpoint file or run folder (frozen / unfrozen / scratch architecture)
    preset: str = "default"  # scratch architecture when no model is given
    manifest: str = ""
    phones: Optional[str] = None  # inventory '<id> <name>' (id 0 = silence)
    transcripts: Optional[str] = None  # '<utt-id> <phone> ...'
    alignments: Optional[str] = None  # '<utt-id>' + one phone id per 10 ms frame
    train_split: str = ""
    dev_split: str = ""
    test_split: Optional[str] = None
    conditions: List[str] = field(default_factory=lambda: list(CONDITIONS))
    hours: Optional[float] = 1.0  # training label budget; None or <= 0: the whole train split
    features: str = "context"  # the layer to read: context (c_t), encoder (z_t), context.N, encoder+context
    head: str = "conv"  # linear | conv | conv-lstm | conv-gru
    head_hidden: int = 256
    head_kernel: int = 5
    head_layers: int = 3  # conv layers of the conv heads
    head_norm: bool = True  # layer norm after each conv layer of the head
    head_stride: int = 2  # conv heads: one output frame per this many feature frames (CTC time reduction)
    head_dropout: float = 0.1
    bidirectional: bool = False
    epochs: int = 30
    end_to_end_epochs: int = 0  # maximum epochs of the unfrozen and scratch conditions (0 = epochs)
    patience: int = 8
    batch_size: int = 8  # utterances per step (when batch_frames is 0)
    batch_frames: int = 1500  # > 0: batches of at most this many padded 10 ms frames instead
    batching: str = "length"  # length: batches of similar-length utterances, in random order | random
    lr: float = 3e-3  # head learning rate
    lr_schedule: str = "cosine"  # constant | cosine (to 1 % of lr at the last epoch)
    warmup_steps: int = 50  # linear warm-up of every learning rate over this many steps
    backbone_lr_scale: float = 0.1  # unfrozen: pretrained part at lr * this
    scratch_lr_scale: float = 1.0  # scratch: the random-init network at lr * this
    weight_decay: float = 0.0
    grad_clip: float = 5.0  # max gradient norm; 0 = off
    normalize: bool = True  # standardise head inputs with train-set statistics of the initial features
    time_masks_per_second: float = 2.0  # SpecAugment time masks on the head input (training only)
    time_mask_frames: int = 10  # widest time mask, frames
    channel_masks: int = 2  # SpecAugment channel masks per utterance
    channel_mask_fraction: float = 0.1  # widest channel mask, as a fraction of the feature dimensions
    unfrozen_init: str = "frozen"  # unfrozen condition starts from: frozen (the frozen condition's best head) | random
    decode: str = "beam"  # test decoding of the best epoch: greedy | beam (CTC prefix beam search)
    beam_size: int = 8
    lm_order: int = 3  # beam: phone n-gram language model from the training transcripts (0 = none)
    lm_weight: float = 0.5  # beam: weight of the LM log-probability
    insertion_bonus: float = 0.0  # beam: added per emitted phone (counters the LM's bias to short outputs)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    precision: str = "auto"  # auto | fp32 | bf16 (see cpc_speech.precision); heads train in fp32
    seed: int = 0
    eval_batch_size: int = 16
    threads: int = 0  # torch CPU threads; 0 = torch default
    output_dir: Optional[str] = None  # checkpoints / resumption; None = in memory only

    def head_config(self) -> HeadConfig:
        return HeadConfig(kind=self.head, hidden=self.head_hidden, kernel=self.head_kernel, layers=self.head_layers, norm=self.head_norm, stride=self.head_stride,
                          dropout=self.head_dropout, bidirectional=self.bidirectional)

    def epochs_for(self, condition: str) -> int:
        """Maximum epochs of ``condition``."""
        return self.end_to_end_epochs if condition in END_TO_END and self.end_to_end_epochs > 0 else self.epochs

    def masking(self, dim: int) -> MaskingConfig:
        """The masks for features of ``dim`` dimensions."""
        widest = int(round(self.channel_mask_fraction * dim)) if self.channel_masks else 0
        return MaskingConfig(self.time_masks_per_second, self.time_mask_frames, self.channel_masks, widest)

    def validate(self) -> "FinetuneConfig":
        try:
            check_limits(self, FINETUNE_LIMITS)
        except ValueError as exc:
            raise FinetuneError(str(exc)) from None
        unknown = [c for c in self.conditions if c not in CONDITIONS]
        if unknown or not self.conditions:
            raise FinetuneError(f"conditions must be a non-empty subset of {', '.join(CONDITIONS)}, got {self.conditions}")
        if len(set(self.conditions)) != len(self.conditions):
            raise FinetuneError(f"conditions repeated: {self.conditions}")
        if any(c in PRETRAINED for c in self.conditions) and not self.model:
            raise FinetuneError("the frozen and unfrozen conditions need a pretrained model (--model)")
        if (self.transcripts is None) == (self.alignments is None):
            raise FinetuneError("give exactly one of transcripts (--transcripts) or alignments (--alignments)")
        for name in ("manifest", "train_split", "dev_split"):
            if not getattr(self, name):
                raise FinetuneError(f"{name.replace('_', '-')} is required")
        try:
            check_layer(self.features)
        except ValueError as exc:
            raise FinetuneError(f"features: {exc}") from None
        choices = {"batching": BATCHING, "lr_schedule": SCHEDULES, "unfrozen_init": ("frozen", "random"),
                   "decode": ("greedy", "beam"), "precision": ("auto", "fp32", "bf16")}
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise FinetuneError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise FinetuneError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if self.head not in HEAD_KINDS:
            raise FinetuneError(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        self.head_config().validate()
        return self


# ranges of every numeric field (see cpc_speech.config.check_limits); hours: null or <= 0 = all
FINETUNE_LIMITS = {
    "hours": "null or finite", "head_hidden": ">= 1", "head_kernel": ">= 1", "head_layers": ">= 1", "head_stride": ">= 1", "head_dropout": "[0, 1)",
    "epochs": ">= 0", "end_to_end_epochs": ">= 0", "patience": ">= 1", "batch_size": ">= 1", "lr": "> 0", "backbone_lr_scale": ">= 0",
    "scratch_lr_scale": "> 0", "weight_decay": ">= 0", "grad_clip": ">= 0", "seed": ">= 0",
    "eval_batch_size": ">= 1", "threads": ">= 0", "batch_frames": ">= 0", "warmup_steps": ">= 0",
    "time_masks_per_second": ">= 0", "time_mask_frames": ">= 0", "channel_masks": ">= 0", "channel_mask_fraction": "[0, 1]",
    "beam_size": ">= 1", "lm_order": ">= 0", "lm_weight": ">= 0", "insertion_bonus": "finite",
}


# ------------------------------------------------------------------------------------------ data


@dataclass
class Split:
    """Usable utterances of one split with their targets, and what was skipped."""

    name: str
    path: str
    utterances: List[Utterance]
    targets: List[Transcript]
    listed: int
    skipped: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        return {
            "file": self.path,
            "listed": self.listed,
            "used": len(self.utterances),
            "skipped": dict(self.skipped),
            "hours": sum(u.duration for u in self.utterances) / 3600.0,
            "phones": sum(len(t.labels) for t in self.targets),
        }


@dataclass
class FinetuneData:
    inventory: CTCClasses
    train: Split  # after the hours subset
    dev: Split
    test: Optional[Split]
    subset: Subset
    train_pool: int  # usable train utterances before the subset

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for split in (self.train, self.dev, self.test):
            if split is None:
                continue
            h.update(split.name.encode())
            for u, t in zip(split.utterances, split.targets):
                h.update(f"{u.id}:{u.num_samples}:{','.join(map(str, t.labels))};".encode())
        return h.hexdigest()


class _Skips:
    """Collects skipped utterances: the first few of each reason become warnings, all are counted."""

    def __init__(self, split: str):
        self.split = split
        self.counts: Dict[str, int] = defaultdict(int)

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_LISTED_WARNINGS:
            warnings.warn(f"{self.split} split: skipping {message}", FinetuneWarning, stacklevel=4)

    def finish(self, listed: int) -> None:
        for reason, n in self.counts.items():
            if n > MAX_LISTED_WARNINGS:
                warnings.warn(
                    f"{self.split} split: skipped {n} of {listed} utterances ({reason}); the first {MAX_LISTED_WARNINGS} are listed above",
                    FinetuneWarning,
                    stacklevel=3,
                )


def build_split(
    name: str,
    path: str,
    manifest: Dict[str, Utterance],
    manifest_path: str,
    targets: Dict[str, Transcript],
    targets_path: str,
    min_frames: Callable[[int], int],
) -> Split:
    """Resolve a split file against the manifest and targets; skip (with warnings) utterances
    missing from either, and those with too few frames for their labels under CTC."""
    entries = read_id_list(path, f"{name} split").entries()
    skips = _Skips(name)
    utts: List[Utterance] = []
    tgts: List[Transcript] = []
    seen = set()
    for uid, lineno in entries:
        where = f"{uid!r} ({path}: line {lineno})"
        if uid in seen:
            skips.add("duplicate in split", f"{where}: listed twice")
            continue
        seen.add(uid)
        u = manifest.get(uid)
        if u is None:
            skips.add("missing from manifest", f"{where}: not in the manifest {manifest_path}")
            continue
        t = targets.get(uid)
        if t is None:
            skips.add("missing from transcripts", f"{where}: not in {targets_path}")
            continue
        frames = min_frames(u.num_samples_16k)
        need = ctc_min_frames(t.labels)
        if frames < max(1, need):
            repeats = need - len(t.labels)
            skips.add(
                "too short for CTC",
                f"{where}: {frames} frames ({u.duration:.3f} s) but its {len(t.labels)} phones need at least "
                f"{need} frames under CTC ({len(t.labels)} labels + {repeats} repeated adjacent labels; transcript {t.where})",
            )
            continue
        utts.append(u)
        tgts.append(t)
    skips.finish(len(entries))
    if utts and not any(t.labels for t in tgts):
        raise FinetuneError(f"{name} split {path}: its usable utterances hold no phones (only silence?), so PER is undefined")
    if not utts:
        reasons = ", ".join(f"{n} {r}" for r, n in skips.counts.items())
        raise FinetuneError(f"{name} split {path}: none of its {len(entries)} utterances is usable ({reasons})")
    return Split(name, path, utts, tgts, len(entries), dict(skips.counts))


# -------------------------------------------------------------------------------- feature sources


class FeatureSource:
    """Turns a batch of utterances into padded features (batch, frames, dim) on the training
    device, and their valid lengths (batch,) on the CPU."""

    dim: int
    backbone: Optional[torch.nn.Module] = None  # trainable network, if any

    def batch(self, utts: Sequence[Utterance]) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def train(self, mode: bool = True) -> None:
        if self.backbone is not None:
            self.backbone.train(mode)


class CachedFeatures(FeatureSource):
    """Precomputed per-utterance features (id -> (frames, dim) tensor, any float dtype)."""

    def __init__(self, cache: Dict[str, torch.Tensor], device: torch.device):
        self.cache = cache
        self.device = device
        self.dim = next(iter(cache.values())).shape[1]

    def batch(self, utts):
        feats = [self.cache[u.id].float() for u in utts]
        lengths = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        return torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device), lengths


class BackboneFeatures(FeatureSource):
    """A CPC model run on zero-padded waveforms, read at ``layer`` (:mod:`cpc_speech.model.layers`),
    in ``precision`` (the features come out as float32)."""

    def __init__(self, model: torch.nn.Module, wav_fn: Callable[[Utterance], np.ndarray], layer: str,
                 device: torch.device, precision, freeze_norm_statistics: bool = False):
        self.backbone = model.to(device)
        self.freeze_norm_statistics = freeze_norm_statistics
        self.wav_fn = wav_fn
        self.layer = layer
        self.device = device
        self.precision = precision
        self.dim = layer_dim(model.cfg, layer)

    def train(self, mode: bool = True) -> None:
        """Training mode; with ``freeze_norm_statistics`` batch norms keep their running statistics
        (a pretrained network's statistics, not those of padded fine-tuning batches)."""
        self.backbone.train(mode)
        if mode and self.freeze_norm_statistics:
            for m in self.backbone.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def batch(self, utts):
        from cpc_speech.features import from_encoder

        wavs = [torch.from_numpy(self.wav_fn(u)) for u in utts]
        lengths = torch.tensor([self.backbone.encoder.num_frames(w.shape[0]) for w in wavs], dtype=torch.long)
        x = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(self.device)
        with self.precision.autocast(self.device):
            feats = from_encoder(self.backbone, self.backbone.encoder(x), self.layer)[0]
        return feats.float(), lengths.clamp_max(feats.shape[1])


# ---------------------------------------------------------------------------------------- trainer


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


def _ctc(logits: torch.Tensor, lengths: torch.Tensor, labels: Sequence[Sequence[int]], blank: int, reduction: str) -> torch.Tensor:
    """CTC loss of (batch, frames, classes) logits; ``mean``: per-utterance loss / its length,
    averaged (training); ``sum``: summed negative log-likelihood (evaluation)."""
    logp = logits.log_softmax(-1).transpose(0, 1)
    dev = logits.device
    target_lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long, device=dev)
    flat = torch.tensor([c for lab in labels for c in lab], dtype=torch.long, device=dev)
    return F.ctc_loss(logp, flat, lengths.to(dev), target_lengths, blank=blank, reduction=reduction, zero_infinity=True)


def _load(path: Path) -> Dict[str, Any]:
    from cpc_speech.checkpoint import load_failure

    if path.is_file() and path.stat().st_size == 0:
        raise FinetuneError(f"{path}: fine-tuning checkpoint is empty (0 bytes): it was not written completely")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FinetuneError(f"{path}: cannot read fine-tuning checkpoint: {load_failure(exc)}") from None
    if not isinstance(state, dict) or state.get("kind") != CKPT_KIND:
        raise FinetuneError(f"{path}: not a cpc_speech fine-tuning checkpoint")
    return state


def _clone_state(module: Optional[torch.nn.Module]) -> Optional[Dict[str, torch.Tensor]]:
    if module is None:
        return None
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


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
        self._pretrained = None  # the loaded (eval-mode) pretrained model
        self._model_cfg = None
        self._wavs: Dict[str, np.ndarray] = {}
        self._frozen_cache: Optional[Dict[str, torch.Tensor]] = None
        self._mfcc_cache: Optional[Dict[str, torch.Tensor]] = None
        self._frozen_head: Optional[Dict[str, torch.Tensor]] = None  # the frozen condition's best head
        self._done: Dict[str, ConditionResult] = {}  # conditions finished (or found finished) in this run
        self.out_dir = Path(cfg.output_dir) if cfg.output_dir else None
        from cpc_speech.train.trainer import pick_device

        self.device = pick_device(cfg.device)
        self._precision = None

    def precision(self):
        """The precision the CPC networks run in on this device (heads and CTC stay float32)."""
        if self._precision is None:
            from cpc_speech.precision import resolve

            self._precision = resolve(self.cfg.precision, self.device, key="precision")
        return self._precision

    # ----------------------------------------------------------------------------- preparation

    def pretrained(self):
        """The pretrained model (loaded once, eval mode, never modified)."""
        if self._pretrained is None:
            from cpc_speech.checkpoint import load_model

            self._pretrained = load_model(self.cfg.model, device=self.device)
            for p in self._pretrained.parameters():
                p.requires_grad_(False)
        return self._pretrained

    def model_config(self):
        if self._model_cfg is None:
            self._model_cfg = self.pretrained().cfg if self.cfg.model else preset(self.cfg.preset)
        return self._model_cfg

    def prepare(self) -> FinetuneData:
        """Read targets, manifest and splits; filter; choose the training subset."""
        if self.data is not None:
            return self.data
        cfg = self.cfg
        targets, inventory = load_targets(cfg.phones, cfg.transcripts, cfg.alignments)
        targets_path = cfg.transcripts or cfg.alignments
        manifest = {u.id: u for u in read_manifest(cfg.manifest)}
        # frames an utterance gets: the fewer of the CPC encoder's and the MFCC's (n // 160), whatever
        # conditions run, so that every condition sees the same utterances
        from cpc_speech.model.encoder import Encoder

        encoder = self.pretrained().encoder if cfg.model else Encoder(self.model_config().encoder)

        stride = cfg.head_stride

        def min_frames(n: int) -> int:  # CTC frames: after the head's time reduction
            return 0 if n < encoder.min_samples else -(-min(encoder.num_frames(n), int(n) // 160) // stride)

        def split(name, path):
            return build_split(name, path, manifest, cfg.manifest, targets, targets_path, min_frames)

        train_all = split("train", cfg.train_split)
        dev = split("dev", cfg.dev_split)
        test = split("test", cfg.test_split) if cfg.test_split else None
        train_ids = {u.id for u in train_all.utterances}
        for other in (dev, test):
            if other is not None:
                overlap = train_ids & {u.id for u in other.utterances}
                if overlap:
                    warnings.warn(
                        f"{len(overlap)} utterance(s) of the {other.name} split ({other.path}) are also in the train split, e.g. {sorted(overlap)[0]!r}",
                        FinetuneWarning,
                        stacklevel=2,
                    )
        subset = select_hours(train_all.utterances, cfg.hours, cfg.seed)
        by_id = {t.id: t for t in train_all.targets}
        train = Split(
            "train", train_all.path, subset.utterances, [by_id[u.id] for u in subset.utterances], train_all.listed, train_all.skipped
        )
        self.data = FinetuneData(inventory, train, dev, test, subset, len(train_all.utterances))
        self.log(
            f"train: {len(train.utterances)} utterances, {subset.hours:.3f} h from {subset.speakers} speakers "
            f"(budget {cfg.hours} h, pool {len(train_all.utterances)}); dev {len(dev.utterances)}; "
            f"test {len(test.utterances) if test else 0}; {len(inventory.class_names)} phone classes + blank"
        )
        return self.data

    def _all_utterances(self) -> List[Utterance]:
        d = self.prepare()
        return [u for s in (d.train, d.dev, d.test) if s is not None for u in s.utterances]

    def wav(self, u: Utterance) -> np.ndarray:
        w = self._wavs.get(u.id)
        if w is None:
            from cpc_speech.audio import read_audio

            w = read_audio(u.path)
            if any(c in END_TO_END for c in self.cfg.conditions):
                self._wavs[u.id] = w  # read every epoch: keep in memory
        return w

    def _compute_cache(self, desc: str, featurizer) -> Dict[str, torch.Tensor]:
        """Features of every utterance through :class:`cpc_speech.features.Featurizer` (the
        extraction code the probes use), in blocks of about a minute of audio, kept as float16."""
        from tqdm import tqdm

        utts = self._all_utterances()
        cache: Dict[str, torch.Tensor] = {}
        block: List[Utterance] = []
        bar = tqdm(total=len(utts), desc=desc, unit="utt", disable=not self.progress, leave=False)

        def flush():
            for u, f in zip(block, featurizer.features([self.wav(u) for u in block])):
                cache[u.id] = torch.from_numpy(f).to(torch.float16)  # half the memory
            bar.update(len(block))
            block.clear()

        seconds = 0.0
        for u in utts:
            block.append(u)
            seconds += u.duration
            if seconds >= 60.0:
                flush()
                seconds = 0.0
        if block:
            flush()
        bar.close()
        return cache

    def frozen_features(self) -> Dict[str, torch.Tensor]:
        if self._frozen_cache is None:
            from cpc_speech.features import make_featurizer

            feat = make_featurizer(self.pretrained(), self.cfg.features, precision=self.cfg.precision)
            self._frozen_cache = self._compute_cache("pretrained features", feat)
        return self._frozen_cache

    def mfcc_features(self) -> Dict[str, torch.Tensor]:
        if self._mfcc_cache is None:
            from cpc_speech.features import make_featurizer

            self._mfcc_cache = self._compute_cache("mfcc features", make_featurizer("mfcc"))
        return self._mfcc_cache

    def _source(self, name: str) -> FeatureSource:
        cfg = self.cfg
        if name == "frozen":
            return CachedFeatures(self.frozen_features(), self.device)
        if name == "mfcc":
            return CachedFeatures(self.mfcc_features(), self.device)
        if name == "unfrozen":
            from cpc_speech.checkpoint import load_model

            model = load_model(cfg.model)  # a fresh copy: the shared pretrained model stays untouched
        else:
            from cpc_speech.model.cpc import CPCModel

            torch.manual_seed(cfg.seed + 7919)
            model = CPCModel(copy.deepcopy(self.model_config()))
        for p in model.parameters():
            p.requires_grad_(True)
        return BackboneFeatures(model, self.wav, cfg.features, self.device, self.precision(), freeze_norm_statistics=name == "unfrozen")

    # -------------------------------------------------------------------------------- training

    def feature_stats(self, source: FeatureSource, utts: Sequence[Utterance]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and standard deviation of ``source``'s features over the valid frames
        of ``utts`` (computed in eval mode; float64 sums)."""
        source.train(False)
        total = torch.zeros(source.dim, dtype=torch.float64)
        total_sq = torch.zeros(source.dim, dtype=torch.float64)
        count = 0
        bs = self.cfg.eval_batch_size
        with torch.no_grad():
            for start in range(0, len(utts), bs):
                x, lengths = source.batch(utts[start : start + bs])
                mask = (torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
                x = x.cpu().double() * mask
                total += x.sum((0, 1))
                total_sq += (x * x).sum((0, 1))
                count += int(lengths.sum())
        mean = total / max(1, count)
        var = (total_sq / max(1, count) - mean * mean).clamp_min(0.0)
        return mean.float(), var.sqrt().float()

    def evaluate(self, head: CTCHead, source: FeatureSource, split: Split,
                 keep: Optional[List[np.ndarray]] = None) -> Tuple[EditCounts, float]:
        """Greedy-decode ``split``: edit error counts against its targets, and the CTC loss per
        reference phone (summed negative log-likelihood / total phones). ``keep``: a list that
        receives each utterance's (frames, classes) log-probabilities, in split order."""
        head.eval()
        source.train(False)
        blank = self.prepare().inventory.blank
        order = length_order(split.utterances)
        refs, hyps = [], []
        nll = 0.0
        bs = self.cfg.eval_batch_size
        kept: Dict[int, np.ndarray] = {}
        with torch.no_grad():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                x, lengths = source.batch([split.utterances[i] for i in idx])
                logits = head(x, lengths).float().cpu()
                lengths = head.output_lengths(lengths)
                labels = [split.targets[i].labels for i in idx]
                nll += float(_ctc(logits, lengths, labels, blank, "sum"))
                hyps += greedy_decode(logits, lengths.tolist(), blank)
                refs += labels
                if keep is not None:
                    logp = logits.log_softmax(-1).numpy()
                    for row, i in enumerate(idx):
                        kept[i] = logp[row, : int(lengths[row])]
        if keep is not None:
            keep.extend(kept[i] for i in range(len(split.utterances)))
        counts = error_counts(refs, hyps)
        return counts, nll / max(1, counts.ref_length)

    def phone_lm(self) -> Optional[PhoneLM]:
        """The phone n-gram model of the training transcripts (``lm_order`` > 0), else None."""
        if self.cfg.lm_order <= 0:
            return None
        data = self.prepare()
        return PhoneLM([t.labels for t in data.train.targets], data.inventory.blank, self.cfg.lm_order)

    def decode_split(self, head: CTCHead, source: FeatureSource, split: Split) -> Dict[str, Any]:
        """The best epoch on ``split``: greedy and (``decode: beam``) prefix-beam-search PER with
        their error counts; ``per`` is the configured decoder's."""
        cfg = self.cfg
        logps: List[np.ndarray] = []
        greedy, _ = self.evaluate(head, source, split, keep=logps)
        out: Dict[str, Any] = {"greedy": {"per": greedy.rate, "errors": asdict(greedy)}}
        if cfg.decode == "beam":
            lm = self.phone_lm()
            blank = self.prepare().inventory.blank
            hyps = [prefix_beam_search(lp, blank, cfg.beam_size, lm, cfg.lm_weight, cfg.insertion_bonus) for lp in logps]
            beam = error_counts([t.labels for t in split.targets], hyps)
            out["beam"] = {"per": beam.rate, "errors": asdict(beam), "beam_size": cfg.beam_size, "lm_order": cfg.lm_order,
                           "lm_weight": cfg.lm_weight if lm else None, "insertion_bonus": cfg.insertion_bonus}
            if lm is not None:
                out["beam"]["lm_perplexity"] = lm.perplexity([t.labels for t in split.targets])
        chosen = out[cfg.decode]
        return {"per": chosen["per"], "errors": chosen["errors"], "decoding": out}

    def _condition_dir(self, name: str) -> Optional[Path]:
        return self.out_dir / name if self.out_dir else None

    def _check_output_dir(self) -> None:
        """Write (or, resuming, compare) the config next to the checkpoints."""
        if self.out_dir is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CONFIG_NAME
        if path.is_file() and self.resume:
            old = read_settings(path)
            new = to_dict(self.cfg)
            old = {**_LEGACY_DEFAULTS, **old}
            changed = sorted(k for k in set(old) | set(new) if k not in _RESUME_FREE and old.get(k) != new.get(k))
            if changed:
                detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
                raise FinetuneError(f"{path}: cannot resume, the settings changed ({detail}); use a new --output-dir")
        if not self.resume:
            busy = [c for c in self.cfg.conditions if (self.out_dir / c / "last.pt").exists() or (self.out_dir / c / "result.json").exists()]
            if busy:
                raise FinetuneError(
                    f"{self.out_dir} already holds checkpoints of {', '.join(busy)}; pass --resume to continue, or use a new --output-dir"
                )
        save_config(self.cfg, path)

    def run(self, on_epoch_end: Optional[Callable[[str, int, Dict[str, Any]], None]] = None) -> Dict[str, Any]:
        """Train every configured condition; returns the result dict (see :func:`run_finetune`)."""
        t0 = time.time()
        if self.cfg.threads > 0:
            torch.set_num_threads(self.cfg.threads)
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

    def train_condition(self, name: str, on_epoch_end: Optional[Callable[[str, int, Dict[str, Any]], None]] = None) -> ConditionResult:
        """Train (or resume, or load the finished result of) one condition."""
        from tqdm import tqdm

        if name in self._done:
            return self._done[name]
        cfg = self.cfg
        data = self.prepare()
        cdir = self._condition_dir(name)
        fingerprint = data.fingerprint()
        if cdir is not None and (cdir / "result.json").is_file():
            if not self.resume:
                raise FinetuneError(f"{cdir} already holds a finished result; pass --resume to reuse it")
            record = json.loads((cdir / "result.json").read_text())
            if record.get("data_fingerprint") != fingerprint:
                raise FinetuneError(f"{cdir / 'result.json'}: was computed on different data; use a new --output-dir")
            self.log(f"{name}: finished earlier (dev PER {record['per_dev']:.4f}), skipping")
            self._done[name] = ConditionResult(name, record)
            return self._done[name]

        last_path = cdir / "last.pt" if cdir else None
        best_path = cdir / "best.pt" if cdir else None
        resuming = last_path is not None and last_path.is_file()
        start_head = None
        if name == "unfrozen" and cfg.unfrozen_init == "frozen" and not resuming:
            start_head = self.frozen_head()
        t_start = time.time()
        inventory = data.inventory
        source = self._source(name)
        torch.manual_seed(cfg.seed)
        head = CTCHead(source.dim, inventory.num_classes, cfg.head_config())
        if start_head is not None:  # normalisation statistics included
            head.load_state_dict(start_head)
        elif cfg.normalize and not resuming:  # (resuming: the statistics come back with the head's buffers)
            head.set_normalization(*self.feature_stats(source, data.train.utterances))
        head.to(self.device)
        # a head that starts trained (from the frozen condition) is fine-tuned at the backbone's rate
        head_lr = cfg.lr * cfg.backbone_lr_scale if (name == "unfrozen" and cfg.unfrozen_init == "frozen") else cfg.lr
        groups = [{"params": list(head.parameters()), "lr": head_lr}]
        if source.backbone is not None:
            scale = cfg.backbone_lr_scale if name == "unfrozen" else cfg.scratch_lr_scale
            groups.append({"params": [p for p in source.backbone.parameters() if p.requires_grad], "lr": cfg.lr * scale})
        optimizer = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        base_lrs = [g["lr"] for g in groups]
        trainable = [p for g in groups for p in g["params"]]

        state = {"epoch": 0, "curve": [], "best_epoch": 0, "best_dev_per": math.inf, "best_dev_loss": math.inf, "bad_epochs": 0, "initial_dev_per": None, "seconds": 0.0}
        best_weights = None
        if resuming:
            if not self.resume:
                raise FinetuneError(f"{last_path} exists; pass --resume to continue it")
            ck = _load(last_path)
            if ck.get("data_fingerprint") != fingerprint:
                raise FinetuneError(f"{last_path}: was trained on different data; use a new --output-dir")
            head.load_state_dict(ck["head"])
            if source.backbone is not None:
                source.backbone.load_state_dict(ck["backbone"])
            optimizer.load_state_dict(ck["optimizer"])
            state.update(ck["state"])
            best = _load(best_path)
            best_weights = (best["head"], best.get("backbone"))
            self.log(f"{name}: resuming after epoch {state['epoch']} (best dev PER {state['best_dev_per']:.4f} at epoch {state['best_epoch']})")

        def save_best(epoch: int, dev_per: float) -> None:
            nonlocal best_weights
            best_weights = (_clone_state(head), _clone_state(source.backbone))
            if best_path is not None:
                atomic_save(
                    {
                        "format_version": FORMAT_VERSION,
                        "kind": CKPT_KIND,
                        "condition": name,
                        "epoch": epoch,
                        "dev_per": dev_per,
                        "head": best_weights[0],
                        "backbone": best_weights[1],
                        "head_config": asdict(cfg.head_config()),
                        "in_dim": source.dim,
                        "num_classes": inventory.num_classes,
                        "phones": inventory.class_names,
                        "features": "mfcc" if name == "mfcc" else cfg.features,
                        "backbone_config": to_dict(self.model_config()) if name != "mfcc" else None,
                        "pretrained": cfg.model if name in PRETRAINED else None,
                    },
                    best_path,
                )

        def save_last() -> None:
            if last_path is None:
                return
            atomic_save(
                {
                    "format_version": FORMAT_VERSION,
                    "kind": CKPT_KIND,
                    "condition": name,
                    "config": to_dict(cfg),
                    "data_fingerprint": fingerprint,
                    "head": head.state_dict(),
                    "backbone": source.backbone.state_dict() if source.backbone is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "state": {**state, "curve": [dict(r) for r in state["curve"]]},
                },
                last_path,
            )

        if state["initial_dev_per"] is None:  # fresh start: record the untrained head
            dev0, loss0 = self.evaluate(head, source, data.dev)
            dev0 = dev0.rate
            # epoch 0 (the starting head) competes too: a fine-tuned run never reports worse than its start
            state.update(initial_dev_per=dev0, initial_dev_loss=loss0, best_epoch=0, best_dev_per=dev0)
            save_best(0, dev0)  # only the result when no epoch is trained (epochs = 0)
            save_last()

        blank = inventory.blank
        train = data.train
        bs = cfg.batch_size
        per_epoch = len(epoch_batches(train.utterances, bs, cfg.batching, torch.Generator(), cfg.batch_frames))
        epochs_max = cfg.epochs_for(name)
        total_steps = per_epoch * epochs_max
        masking = cfg.masking(source.dim)
        epochs = tqdm(
            range(state["epoch"] + 1, epochs_max + 1), desc=name, unit="epoch", disable=not self.progress, initial=state["epoch"], total=epochs_max
        )
        seconds_before = state["seconds"]
        for epoch in epochs:
            if state["bad_epochs"] >= cfg.patience:
                break
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            torch.manual_seed(cfg.seed * 1_000_033 + epoch)  # dropout
            mask_gen = torch.Generator().manual_seed(cfg.seed * 1_000_037 + epoch)
            batches = epoch_batches(train.utterances, bs, cfg.batching, gen, cfg.batch_frames)
            head.train()
            source.train(True)
            total, weight = 0.0, 0
            for b, idx in enumerate(tqdm(batches, desc=f"{name} epoch {epoch}", unit="batch", disable=not self.progress, leave=False)):
                factor = lr_factor(cfg.lr_schedule, (epoch - 1) * per_epoch + b, total_steps, cfg.warmup_steps)
                for group, base in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base * factor
                utts = [train.utterances[i] for i in idx]
                labels = [train.targets[i].labels for i in idx]
                x, lengths = source.batch(utts)
                keep = keep_mask(lengths, x.shape[1], x.shape[2], masking, mask_gen) if masking.enabled else None
                loss = _ctc(head(x, lengths, keep).float(), head.output_lengths(lengths), labels, blank, "mean")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
                optimizer.step()
                total += float(loss.detach()) * len(idx)
                weight += len(idx)
            dev_counts, dev_loss = self.evaluate(head, source, data.dev)
            dev_per = dev_counts.rate
            record = {"epoch": epoch, "train_loss": total / max(1, weight), "dev_per": dev_per, "dev_loss": dev_loss}
            state["curve"].append(record)
            state["epoch"] = epoch
            # progress = a better dev PER, or (e.g. while the head still emits mostly blanks) a dev
            # loss at least 0.1 % below its best so far; the best epoch is chosen on dev PER only
            progress = False
            if dev_per < state["best_dev_per"]:
                state.update(best_dev_per=dev_per, best_epoch=epoch)
                save_best(epoch, dev_per)
                progress = True
            if dev_loss < state["best_dev_loss"] * (1 - 1e-3):
                state["best_dev_loss"] = dev_loss
                progress = True
            state["bad_epochs"] = 0 if progress else state["bad_epochs"] + 1
            state["seconds"] = seconds_before + (time.time() - t_start)
            save_last()
            epochs.set_postfix(loss=f"{record['train_loss']:.3f}", dev_per=f"{dev_per:.3f}", best=state["best_epoch"])
            if on_epoch_end is not None:
                on_epoch_end(name, epoch, dict(record))
        epochs.close()

        # the best epoch, decoded once on dev (already known) and test
        head.load_state_dict(best_weights[0])
        if source.backbone is not None:
            source.backbone.load_state_dict(best_weights[1])
        dev = self.decode_split(head, source, data.dev)
        test = self.decode_split(head, source, data.test) if data.test else None
        state["seconds"] = seconds_before + (time.time() - t_start)
        record = {
            "per_dev": dev["per"],
            "per_test": test["per"] if test else None,
            "decoder": cfg.decode,
            "train_hours": data.subset.hours,
            "train_utterances": len(train.utterances),
            "best_epoch": state["best_epoch"],
            "curve": state["curve"],
            "initial_dev_per": state["initial_dev_per"],
            "epochs_run": state["epoch"],
            "stopped_early": state["bad_epochs"] >= cfg.patience and state["epoch"] < epochs_max,
            "dev_errors": dev["errors"],
            "test_errors": test["errors"] if test else None,
            "dev_decoding": dev["decoding"],
            "test_decoding": test["decoding"] if test else None,
            "started_from": "frozen head" if name == "unfrozen" and cfg.unfrozen_init == "frozen" else "random head",
            "device": str(self.device),
            "precision": None if name == "mfcc" else self.precision().name,
            "seconds": state["seconds"],
            "data_fingerprint": fingerprint,
        }
        if cdir is not None:
            atomic_write_text(cdir / "result.json", json.dumps(record, indent=2))
        if name == "frozen":
            self._frozen_head = _clone_state(head)
        self.log(
            f"{name}: dev PER {record['per_dev']:.4f}"
            + (f", test PER {record['per_test']:.4f}" if record["per_test"] is not None else "")
            + f" (best epoch {record['best_epoch']} of {record['epochs_run']}, {record['seconds']:.1f} s)"
        )
        result = ConditionResult(name, record, head, source.backbone if name != "frozen" else self._pretrained)
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
                self._frozen_head = _load(cdir / "best.pt")["head"]
            else:
                self.log("unfrozen: starts from the frozen condition's best head; training that first")
                self.train_condition("frozen")
        return self._frozen_head


def run_finetune(
    cfg: FinetuneConfig,
    progress: bool = True,
    resume: bool = False,
    out: Optional[str] = None,
    on_epoch_end: Optional[Callable[[str, int, Dict[str, Any]], None]] = None,
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
        if cfg.output_dir:
            if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
                raise FinetuneError(f"--output-dir {cfg.output_dir} is a file, not a folder")
            stack.enter_context(hold_output(cfg.output_dir, "finetune"))
            for folder in [Path(cfg.output_dir), *Path(cfg.output_dir).iterdir()]:
                remove_stale_temporaries(folder)
        if out:
            if Path(out).is_dir():
                raise FinetuneError(f"--out {out} is a folder; give the result file's name")
            stack.enter_context(hold_output(out, "finetune", kind="file"))
        result = Finetuner(cfg, progress=progress, resume=resume, log=log).run(on_epoch_end)
        for path in [out] + ([str(Path(cfg.output_dir) / "result.json")] if cfg.output_dir else []):
            if path:
                atomic_write_text(path, json.dumps(result, indent=2))
    return result


def read_settings(path: Path) -> Dict[str, Any]:
    """The mapping of fine-tuning settings in a YAML file (``finetune_config.yaml``); a one-line
    :class:`FinetuneError` naming the file when it is missing, not YAML or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise FinetuneError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FinetuneError(f"{path}: expected a mapping of finetune settings, got {type(data).__name__}")
    return data


def config_from_dict(data: Dict[str, Any]) -> FinetuneConfig:
    return from_dict(FinetuneConfig, data, "finetune config").validate()
