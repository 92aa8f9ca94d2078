"""The settings of a fine-tuning run (``finetune_config.yaml``), their limits and resume rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from cpc_speech.settings import check_choices, check_limits, from_dict, read_settings_file, setting
from cpc_speech.engine.schedule import FINETUNE_SCHEDULES
from cpc_speech.finetune.batching import BATCHING
from cpc_speech.finetune.head import HEAD_KINDS, HeadConfig
from cpc_speech.finetune.specaugment import MaskingConfig
from cpc_speech.model.layers import check_layer
from cpc_speech.results import FINETUNE_CONDITIONS as CONDITIONS

PRETRAINED = ("frozen", "unfrozen")
END_TO_END = ("unfrozen", "scratch")
CONFIG_NAME = "finetune_config.yaml"
# config fields that may change between a run and its resumption
RESUMABLE = ("conditions", "threads", "output_dir", "eval_batch_size", "device")
# settings of runs saved before the field existed (a resumed run must keep them)
LEGACY_DEFAULTS = {
    "batching": "random", "head_layers": 1, "head_stride": 1, "head_norm": False, "head_residual": False, "end_to_end_epochs": 0, "scratch_epochs": 0, "batch_frames": 0,
    "lr_schedule": "constant", "warmup_steps": 0, "time_masks_per_second": 0.0, "time_mask_frames": 10,
    "channel_masks": 0, "channel_mask_fraction": 0.1, "unfrozen_init": "random", "decode": "greedy", "beam_size": 8,
    "lm_order": 0, "lm_weight": 0.5, "insertion_bonus": 0.0, "precision": "fp32", "device": "auto",
}


def parse_hours(text: str) -> float:
    """A label budget from the command line: a number of hours >= 0, or 'all' (0.0: no limit)."""
    import argparse

    if text.lower() in ("all", "none"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"hours must be a number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("hours must be >= 0")
    return value


class FinetuneError(ValueError):
    """A problem with the fine-tuning inputs or output folder; the message names the file."""


class FinetuneWarning(UserWarning):
    """Skipped utterances and other recoverable data problems."""


@dataclass
class FinetuneConfig:
    """Everything that defines a fine-tuning run (saved as ``finetune_config.yaml``)."""

    model: Optional[str] = setting(None, group="data", path=True, help="pretrained checkpoint file or run folder")
    preset: str = setting("default", group="data", help="architecture of the scratch condition when no --model is given")
    manifest: str = setting("", group="data", path=True, help="TSV manifest (id, path, speaker, num_samples, sample_rate)")
    phones: Optional[str] = setting(None, group="data", path=True, help="phone set: '<id> <name>' lines, id 0 = silence")
    transcripts: Optional[str] = setting(None, group="data", path=True,
                                         help="'<utt-id> <phone> <phone> ...' lines (names from --phones, or integer ids)")
    alignments: Optional[str] = setting(None, group="data", path=True,
                                        help="CPC_audio converted_aligned_phones.txt: '<utt-id>' + one phone id per 10 ms frame")
    train_split: str = setting("", group="data", path=True, help="file of training utterance ids (one per line)")
    dev_split: str = setting("", group="data", path=True, help="file of dev utterance ids (model selection)")
    test_split: Optional[str] = setting(None, group="data", path=True, help="file of test utterance ids (reported only)")
    conditions: List[str] = setting(default_factory=lambda: list(CONDITIONS), group="conditions",
                                    help=f"comma list of {', '.join(CONDITIONS)}")
    hours: Optional[float] = setting(1.0, group="data", parse=parse_hours,
                                     help="training label budget in hours, or 'all' (<= 0 = the whole train split)")
    features: str = setting("encoder+context", group="head",
                            help="pretrained layer to read: encoder+context (z_t and c_t concatenated), context (c_t), encoder (z_t), context.N")
    head: str = setting("conv", group="head", choices=HEAD_KINDS, help="CTC head")
    head_hidden: int = setting(256, group="head", help="conv channels / RNN size")
    head_kernel: int = setting(5, group="head", help="conv width in frames, odd")
    head_layers: int = setting(3, group="head", help="conv layers of the conv heads")
    head_norm: bool = setting(True, group="head", help="layer norm after each conv layer of the head")
    head_residual: bool = setting(True, group="head", help="conv heads: a skip connection around every conv layer after the first")
    head_stride: int = setting(2, group="head", help="conv heads: one output frame per this many feature frames (CTC time reduction)")
    head_dropout: float = setting(0.1, group="head", help="dropout in the head")
    bidirectional: bool = setting(False, group="head", help="bidirectional RNN in conv-lstm / conv-gru heads")
    epochs: int = setting(30, group="train", help="maximum epochs")
    end_to_end_epochs: int = setting(0, group="train", help="maximum epochs of the unfrozen and scratch conditions (0 = --epochs)")
    scratch_epochs: int = setting(0, group="train", help="maximum epochs of the scratch condition (0 = as --end-to-end-epochs)")
    patience: int = setting(8, group="train", help="stop after this many epochs without a better dev PER or dev loss")
    batch_size: int = setting(8, group="train", help="utterances per step when --batch-frames is 0")
    batch_frames: int = setting(1500, group="train", help="batches of at most this many padded 10 ms frames, 0 = --batch-size utterances")
    batching: str = setting("length", group="train", choices=BATCHING,
                            help="length: batches of similar-length utterances (less padding), in random order; random: shuffled")
    lr: float = setting(3e-3, group="train", help="head learning rate (Adam)")
    lr_schedule: str = setting("cosine", group="train", choices=FINETUNE_SCHEDULES,
                               help="learning-rate schedule after warm-up (cosine: to 1 %% of lr at the last epoch)")
    warmup_steps: int = setting(50, group="train", help="linear warm-up of every learning rate over this many steps")
    backbone_lr_scale: float = setting(0.1, group="train", help="unfrozen: the pretrained part at lr * this")
    scratch_lr_scale: float = setting(1.0, group="train", help="scratch: the random-init network at lr * this")
    weight_decay: float = setting(0.0, group="train", help="Adam weight decay")
    grad_clip: float = setting(5.0, group="train", help="max gradient norm, 0 = off")
    normalize: bool = setting(True, group="train", help="standardise head inputs with train-set statistics of the initial features")
    time_masks_per_second: float = setting(2.0, group="train", help="SpecAugment time masks per second of audio on the head input, 0 = off")
    time_mask_frames: int = setting(10, group="train", help="widest time mask in frames")
    channel_masks: int = setting(2, group="train", help="SpecAugment channel masks per utterance, 0 = off")
    channel_mask_fraction: float = setting(0.1, group="train", help="widest channel mask as a fraction of the feature dimensions")
    unfrozen_init: str = setting("frozen", group="train", choices=("frozen", "random"),
                                 help="the unfrozen condition starts from the frozen condition's best head, or a random one")
    decode: str = setting("beam", group="decode", choices=("greedy", "beam"), help="greedy best path or CTC prefix beam search")
    beam_size: int = setting(8, group="decode", help="prefixes kept per frame")
    lm_order: int = setting(3, group="decode", help="phone n-gram LM from the training transcripts for the beam search, 0 = none")
    lm_weight: float = setting(0.5, group="decode", help="weight of the LM log-probability")
    insertion_bonus: float = setting(0.0, group="decode", help="score added per emitted phone in the beam search")
    device: str = setting("auto", group="run", help="auto (CUDA when available), cpu, cuda or cuda:N")
    precision: str = setting("auto", group="run", choices=("auto", "fp32", "bf16"),
                             help="precision of the CPC networks (cpc_speech.engine.precision); heads and CTC stay float32")
    seed: int = setting(0, group="run", help="seed for the subset, initialisation and shuffling")
    eval_batch_size: int = setting(16, group="run", help="utterances per batch when computing features and decoding")
    threads: int = setting(0, group="run", help="torch CPU threads, 0 = torch's choice")
    output_dir: Optional[str] = setting(None, group="run", path=True,
                                        help="per-condition checkpoints, settings and result.json (needed for --resume)")

    def head_config(self) -> HeadConfig:
        return HeadConfig(kind=self.head, hidden=self.head_hidden, kernel=self.head_kernel, layers=self.head_layers, norm=self.head_norm,
                          residual=self.head_residual, stride=self.head_stride, dropout=self.head_dropout, bidirectional=self.bidirectional)

    def epochs_for(self, condition: str) -> int:
        """Maximum epochs of ``condition``."""
        if condition == "scratch" and self.scratch_epochs > 0:
            return self.scratch_epochs
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
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise FinetuneError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        try:
            check_choices(self)  # batching, lr_schedule, unfrozen_init, decode, precision, head
        except ValueError as exc:
            raise FinetuneError(str(exc)) from None
        self.head_config().validate()
        return self


# ranges of every numeric field (see cpc_speech.settings.check_limits); hours: null or <= 0 = all
FINETUNE_LIMITS = {
    "hours": "null or finite", "head_hidden": ">= 1", "head_kernel": ">= 1", "head_layers": ">= 1", "head_stride": ">= 1", "head_dropout": "[0, 1)",
    "epochs": ">= 0", "end_to_end_epochs": ">= 0", "scratch_epochs": ">= 0", "patience": ">= 1", "batch_size": ">= 1", "lr": "> 0", "backbone_lr_scale": ">= 0",
    "scratch_lr_scale": "> 0", "weight_decay": ">= 0", "grad_clip": ">= 0", "seed": ">= 0",
    "eval_batch_size": ">= 1", "threads": ">= 0", "batch_frames": ">= 0", "warmup_steps": ">= 0",
    "time_masks_per_second": ">= 0", "time_mask_frames": ">= 0", "channel_masks": ">= 0", "channel_mask_fraction": "[0, 1]",
    "beam_size": ">= 1", "lm_order": ">= 0", "lm_weight": ">= 0", "insertion_bonus": "finite",
}


def read_settings(path: Path) -> Dict[str, Any]:
    """The mapping of fine-tuning settings in a YAML file (``finetune_config.yaml``); a one-line
    :class:`FinetuneError` naming the file when it is missing, not YAML or not a mapping."""
    try:
        return read_settings_file(path)
    except (OSError, ValueError) as exc:
        raise FinetuneError(str(exc)) from None


def config_from_dict(data: Dict[str, Any]) -> FinetuneConfig:
    return from_dict(FinetuneConfig, data, "finetune config").validate()
