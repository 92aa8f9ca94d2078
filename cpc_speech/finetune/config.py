"""The settings of a fine-tuning run (``finetune_config.yaml``), their limits and resume rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from cpc_speech.config import check_limits, from_dict
from cpc_speech.engine.schedule import FINETUNE_SCHEDULES
from cpc_speech.finetune.batching import BATCHING
from cpc_speech.finetune.head import HEAD_KINDS, HeadConfig
from cpc_speech.finetune.specaugment import MaskingConfig
from cpc_speech.model.layers import check_layer

CONDITIONS = ("frozen", "unfrozen", "mfcc", "scratch")
PRETRAINED = ("frozen", "unfrozen")
END_TO_END = ("unfrozen", "scratch")
CONFIG_NAME = "finetune_config.yaml"
# config fields that may change between a run and its resumption
RESUMABLE = ("conditions", "threads", "output_dir", "eval_batch_size", "device")
# settings of runs saved before the field existed (a resumed run must keep them)
LEGACY_DEFAULTS = {
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
    precision: str = "auto"  # auto | fp32 | bf16 (see cpc_speech.engine.precision); heads train in fp32
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
        choices = {"batching": BATCHING, "lr_schedule": FINETUNE_SCHEDULES, "unfrozen_init": ("frozen", "random"),
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
