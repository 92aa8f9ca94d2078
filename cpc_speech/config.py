"""Typed configuration: model, loss, data and training settings as dataclasses.

Every run writes its resolved :class:`PretrainConfig` next to its checkpoints (``config.yaml``) and
inside them, so a run folder alone is enough to resume training or to extract features.

Presets for the model (:func:`preset`):

* ``paper``: the CPC paper (512 encoder channels, batch norm, GRU 256, linear heads);
* ``default``: the "modified CPC" encoder (256 channels, channel norm) with GRU 256, linear heads;
* ``tiny``: 64 channels, batch norm, GRU 64, for tests and quick demos.

Batch norm learns much faster than channel norm at small CPU budgets (measured in
``benchmarks/NOTES.md``); channel norm stays the ``default`` as in CPC_audio.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cpc_speech.settings import apply_overrides, check_choices, check_limits, deep_merge, from_dict, read_settings_file, setting, to_dict

ENCODER_NORMS = ("channel", "batch", "instance", "none")
CONTEXT_KINDS = ("gru", "lstm", "transformer")
PREDICTOR_KINDS = ("linear", "transformer")


@dataclass
class EncoderConfig:
    """Strided 1-D CNN on 16 kHz waveform. Lengths are in samples."""

    channels: int = setting(256, help="channels of every conv layer")
    kernels: Tuple[int, ...] = setting((10, 8, 4, 4, 4), help="kernel width of each conv layer, in samples / frames")
    strides: Tuple[int, ...] = setting((5, 4, 2, 2, 2), help="stride of each conv layer (product: samples per frame)")
    paddings: Tuple[int, ...] = setting((3, 2, 1, 1, 1), help="padding of each conv layer")
    norm: str = setting("channel", choices=ENCODER_NORMS, help="normalisation after each conv layer")
    # epsilon of the norm layers; imported CPC_audio channel norms use 1e-5 * (channels - 1) / channels
    # (their unbiased variance folded into our biased form, cpc_speech.cpc_audio)
    norm_eps: float = setting(1e-5, help="epsilon of the norm layers")

    def validate(self) -> None:
        if not (len(self.kernels) == len(self.strides) == len(self.paddings)) or not self.kernels:
            raise ValueError("encoder.kernels, encoder.strides and encoder.paddings need equal, non-zero lengths")
        check_choices(self, prefix="encoder.")
        if self.channels < 1:
            raise ValueError("encoder.channels must be positive")
        if not self.norm_eps > 0:
            raise ValueError(f"encoder.norm_eps must be positive, got {self.norm_eps!r}")


@dataclass
class ContextConfig:
    """Causal context network over encoder frames (c_t sees z_1..z_t only)."""

    kind: str = setting("gru", choices=CONTEXT_KINDS, help="recurrent or causal transformer context network")
    hidden: int = setting(256, help="size of c_t")
    layers: int = setting(1, help="stacked layers")
    heads: int = setting(4, help="transformer only: attention heads")
    window: int = setting(128, help="transformer only: attention span in frames (keeps streaming exact)")
    dropout: float = setting(0.0, help="dropout between layers")

    def validate(self) -> None:
        check_choices(self, prefix="context.")
        if self.kind == "transformer" and self.hidden % self.heads:
            raise ValueError("context.hidden must be divisible by context.heads")
        if self.layers < 1 or self.hidden < 1 or self.window < 1:
            raise ValueError("context.layers, context.hidden and context.window must be positive")


@dataclass
class PredictorConfig:
    """One prediction head per future step k = 1..steps."""

    kind: str = setting("linear", choices=PREDICTOR_KINDS, help="linear W_k per step, or a transformer over c_t")
    steps: int = setting(12, help="future frames predicted (k = 1..steps)")
    heads: int = setting(4, help="transformer only: attention heads")
    window: int = setting(128, help="transformer only: attention span in frames")
    dropout: float = setting(0.0, help="dropout of the predictor")
    shared: bool = setting(False, help="transformer only: one block for all steps, then a linear map per step, instead of a block per step")

    def validate(self) -> None:
        check_choices(self, prefix="predictor.")
        if self.steps < 1:
            raise ValueError("predictor.steps must be at least 1")


@dataclass
class CPCConfig:
    """Everything needed to build a :class:`cpc_speech.model.cpc.CPCModel`."""

    encoder: EncoderConfig = setting(default_factory=EncoderConfig, help="the strided CNN on the waveform (z_t)")
    context: ContextConfig = setting(default_factory=ContextConfig, help="the causal network over z_t (c_t)")
    predictor: PredictorConfig = setting(default_factory=PredictorConfig, help="the prediction heads")
    sample_rate: int = setting(16000, help="audio sample rate in Hz (16000 only)")

    def validate(self) -> "CPCConfig":
        check_limits(self, MODEL_LIMITS, "model.")
        self.encoder.validate()
        self.context.validate()
        self.predictor.validate()
        if self.predictor.kind == "transformer" and self.context.hidden % self.predictor.heads:
            raise ValueError("context.hidden must be divisible by predictor.heads")
        return self


@dataclass
class LossConfig:
    """InfoNCE settings.

    ``sampling`` names the negative pools and their shares, e.g. ``"same_utterance:0.5,cross_batch:0.5"``
    (modes: ``same_utterance``, ``same_speaker``, ``cross_batch``). ``temperature`` divides the dot
    product score; ``None`` means the encoder dimension (score = dot / dim).
    """

    negatives: int = setting(128, help="negatives per query frame")
    sampling: str = setting("cross_batch", help="negative pools and shares, e.g. same_utterance:0.5,cross_batch:0.5")
    temperature: Optional[float] = setting(None, help="score = dot / temperature (default: the encoder dimension)")
    gather_across_ranks: bool = setting(False, help="distributed: the cross_batch pool spans all ranks")
    # one set of N negatives per query frame for all K steps (CPC_audio; ~8x fewer score FLOPs for
    # cross_batch) rather than a set per step; either way no positive is ever a negative
    shared_negatives: bool = setting(True, help="one set of negatives per query frame for all steps (CPC_audio) rather than one per step")


AUGMENT_KINDS = ("pitch", "speed", "tempo", "noise", "mix", "reverb", "band_reject", "time_drop")
AUGMENT_TARGETS = ("past", "future", "both")
NOISE_COLORS = ("white", "pink", "brown", "random")


@dataclass
class AugmentStep:
    """One transform of ``data.augment.transforms`` (:mod:`cpc_speech.augment`): applied with
    probability ``p``, its parameter drawn from [low, high] (None: the transform's default range;
    semitones, factor, SNR dB, RT60 s, centre Hz or milliseconds by kind)."""

    kind: str = setting(choices=AUGMENT_KINDS, help="the transform")
    p: float = setting(0.5, help="probability of applying it to a window")
    low: Optional[float] = setting(None, help="lower end of its parameter range (default: the transform's)")
    high: Optional[float] = setting(None, help="upper end of its parameter range (default: the transform's)")
    color: str = setting("random", choices=NOISE_COLORS, help="noise: white, pink, brown or random")
    width: float = setting(0.5, help="band_reject: width in octaves")
    count: int = setting(1, help="time_drop: segments dropped")

    def validate(self, where: str) -> None:
        check_choices(self, prefix=f"{where}.")  # kind, color
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"{where}.p must be in [0, 1], got {self.p}")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"{where}: low ({self.low}) must not exceed high ({self.high})")
        positive = {"speed", "tempo", "reverb", "band_reject", "time_drop"}
        for name in ("low", "high"):
            v = getattr(self, name)
            if v is not None and self.kind in positive and v <= 0:
                raise ValueError(f"{where}.{name} must be > 0 for {self.kind}, got {v}")
        if self.width <= 0 or self.count < 1:
            raise ValueError(f"{where}: width must be > 0 and count >= 1")


@dataclass
class AugmentConfig:
    """On-the-fly waveform augmentation of training windows (empty ``transforms``: off).
    ``apply_to``: ``past`` (the context network sees the augmented window, the predicted frames
    come from the clean one: two encoder passes), ``future`` (the reverse) or ``both`` (one
    augmented window for everything)."""

    transforms: List[AugmentStep] = setting(default_factory=list, help="the transforms, applied in order (empty: off)")
    apply_to: str = setting("past", choices=AUGMENT_TARGETS, help="which side sees the augmented window: past, future or both")

    def validate(self) -> None:
        check_choices(self, prefix="data.augment.")
        for i, t in enumerate(self.transforms):
            t.validate(f"data.augment.transforms[{i}]")


@dataclass
class DataConfig:
    """Windowing and batching. Lengths in samples at 16 kHz."""

    window_samples: int = setting(20480, help="training window length in samples")
    batch_size: int = setting(8, help="windows per batch (per process)")
    sampler: str = setting("uniform", choices=("uniform", "same_speaker", "same_utterance"), help="how windows are drawn into a batch")
    windows_per_group: int = setting(4, help="same_speaker / same_utterance: windows per speaker or utterance")
    num_workers: int = setting(2, help="data loader processes")
    cache_mb: int = setting(0, help="per worker LRU cache of decoded audio in MB; 0 = off")
    augment: AugmentConfig = setting(default_factory=AugmentConfig, help="on-the-fly waveform augmentation")


@dataclass
class TrainConfig:
    """Optimisation, schedule, logging and checkpointing."""

    max_steps: int = setting(1000, help="optimiser steps of the run (with max_minutes: at most this many)")
    max_minutes: Optional[float] = setting(None, help="a time budget: train for the steps this many minutes buy at the "
                                           "step rate measured over steps 10-40 (cpc_speech.train.budget), at most max_steps")
    lr: float = setting(2e-4, help="peak learning rate (Adam)")
    warmup_steps: int = setting(100, help="linear warm-up steps")
    schedule: str = setting("cosine", choices=("cosine", "step", "constant"), help="learning-rate schedule after warm-up")
    min_lr_ratio: float = setting(0.05, help="final learning rate as a share of lr")
    weight_decay: float = setting(0.0, help="AdamW weight decay")
    grad_clip: float = setting(1.0, help="gradient norm clip (0: off)")
    amp: str = setting("auto", choices=("auto", "none", "bf16", "fp16"),
                       help="mixed precision: auto (bf16 where the device computes it fast, see cpc_speech.engine.precision), none, bf16, fp16 (CUDA only)")
    compile: bool = setting(False, help="torch.compile the model for training steps (the first step compiles)")
    seed: int = setting(0, help="seed of the model init and of the window draws")
    log_every: int = setting(10, help="steps between log.jsonl lines")
    valid_every: int = setting(200, help="steps between validations")
    valid_batches: int = setting(20, help="batches per validation")
    checkpoint_every: int = setting(200, help="steps between checkpoints")
    keep_last: int = setting(2, help="step checkpoints kept (besides last.pt and best.pt)")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N | mps")
    threads: int = setting(0, help="torch intra-op threads on CPU; 0 = torch default")

    RETIRED_KEYS = ("log_batches",)  # keys of older config files, accepted and ignored


@dataclass
class PretrainConfig:
    """A whole pretraining run: model + loss + data + training."""

    model: CPCConfig = setting(default_factory=CPCConfig, help="the model (model.preset picks a preset to start from)")
    loss: LossConfig = setting(default_factory=LossConfig, help="the InfoNCE loss")
    data: DataConfig = setting(default_factory=DataConfig, help="windows, batches and augmentation")
    train: TrainConfig = setting(default_factory=TrainConfig, help="optimisation, logging and checkpoints")

    def validate(self) -> "PretrainConfig":
        self.model.validate()
        check_limits(self, PRETRAIN_LIMITS)
        check_choices(self.data, prefix="data.")  # sampler
        check_choices(self.train, prefix="train.")  # schedule, amp
        if self.data.sampler == "same_speaker" and self.data.windows_per_group < 2:
            raise ValueError(f"data.windows_per_group must be >= 2 with data.sampler=same_speaker "
                             f"(a window needs a same-speaker partner), got {self.data.windows_per_group}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.train.device):
            raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.train.device!r}")
        from cpc_speech.model.encoder import encoder_frames

        frames = encoder_frames(self.model.encoder, self.data.window_samples)
        if frames <= self.model.predictor.steps:
            raise ValueError(
                f"data.window_samples={self.data.window_samples} gives {frames} encoder frames, but "
                f"model.predictor.steps={self.model.predictor.steps} needs more than that many frames per window"
            )
        from cpc_speech.loss.negatives import parse_sampling

        modes = {m for m, _ in parse_sampling(self.loss.sampling, self.loss.negatives)}
        if "same_speaker" in modes and self.data.sampler != "same_speaker":
            raise ValueError("loss.sampling uses same_speaker negatives: set data.sampler=same_speaker so batches hold several windows per speaker")
        if self.data.sampler != "uniform" and self.data.batch_size % self.data.windows_per_group:
            raise ValueError("data.batch_size must be a multiple of data.windows_per_group")
        self.data.augment.validate()
        return self


# ------------------------------------------------------------------------- ranges of every field
# Key (as written in YAML and in key=value overrides) -> allowed range, checked by check_limits()
# from the validate() methods: ">= 1", "> 0", "[0, 1)" (interval), "== 16000", "finite"; "null or > 0" also
# accepts None. A list value (encoder.kernels...) is checked element-wise. Floats must be finite.
MODEL_LIMITS = {
    "model.encoder.channels": ">= 1", "model.encoder.kernels": ">= 1", "model.encoder.strides": ">= 1",
    "model.encoder.paddings": ">= 0",
    "model.context.hidden": ">= 1", "model.context.layers": ">= 1", "model.context.heads": ">= 1",
    "model.context.window": ">= 1", "model.context.dropout": "[0, 1)",
    "model.predictor.steps": ">= 1", "model.predictor.heads": ">= 1", "model.predictor.window": ">= 1",
    "model.predictor.dropout": "[0, 1)", "model.sample_rate": "== 16000",
}
PRETRAIN_LIMITS = {
    "loss.negatives": ">= 1", "loss.temperature": "null or > 0",
    "data.window_samples": ">= 1", "data.batch_size": ">= 1", "data.windows_per_group": ">= 1",
    "data.num_workers": ">= 0", "data.cache_mb": ">= 0",
    "train.max_steps": ">= 1", "train.max_minutes": "null or > 0", "train.lr": "> 0", "train.warmup_steps": ">= 0", "train.min_lr_ratio": "[0, 1]",
    "train.weight_decay": ">= 0", "train.grad_clip": ">= 0", "train.seed": ">= 0", "train.log_every": ">= 1",
    "train.valid_every": ">= 1", "train.valid_batches": ">= 1", "train.checkpoint_every": ">= 1",
    "train.keep_last": ">= 1", "train.threads": ">= 0",
}


# --------------------------------------------------------------------------------------- presets


def preset(name: str) -> CPCConfig:
    """Model presets: ``paper``, ``default`` or ``tiny``."""
    if name == "default":
        return CPCConfig()
    if name == "paper":
        return CPCConfig(encoder=EncoderConfig(channels=512, norm="batch"), context=ContextConfig(hidden=256))
    if name == "tiny":
        return CPCConfig(encoder=EncoderConfig(channels=64, norm="batch"), context=ContextConfig(hidden=64))
    raise ValueError(f"unknown preset {name!r}; choose paper, default or tiny")


PRESETS = ("paper", "default", "tiny")


# ------------------------------------------------------------------------------- reading files


def load_config(cls: Any, path: str | Path, overrides: Optional[List[str]] = None) -> Any:
    """Read a YAML or JSON config file into dataclass ``cls``, applying ``key=value`` overrides."""
    return config_from_dict(cls, read_settings_file(path), overrides, where=str(path))


def config_from_dict(cls: Any, data: Dict[str, Any], overrides: Optional[List[str]] = None, where: str = "config") -> Any:
    """Build ``cls`` from a dict; a ``model.preset`` key starts from that preset."""
    data = json.loads(json.dumps(data))  # deep copy
    apply_overrides(data, overrides or [])
    if cls is PretrainConfig and isinstance(data.get("model"), dict) and "preset" in data["model"]:
        base = to_dict(preset(data["model"].pop("preset")))
        data["model"] = deep_merge(base, data["model"])
    cfg = from_dict(cls, data, where)
    return cfg.validate() if hasattr(cfg, "validate") else cfg


