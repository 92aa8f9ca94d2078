"""What the benchmarks measure: sections, named training configurations, precisions, problem sizes.

The targets the figures are checked against are data: ``benchmarks/targets.json`` (:mod:`benchmarks.report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

SECTIONS = ("matmul", "train", "loader", "extract")
SAMPLINGS = ("cross_batch", "same_utterance")

# Named training configurations: (model preset, config overrides).
CONFIGS: Dict[str, Tuple[str, List[str]]] = {
    "default": ("default", []),
    "paper": ("paper", []),
    "cpc_audio_default": ("default", [
        "model.encoder.channels=256", "model.encoder.norm=channel",
        "model.context.kind=lstm", "model.context.hidden=256", "model.context.layers=1",
        "model.predictor.kind=transformer",
    ]),
    "paper_256": ("paper", ["model.encoder.channels=256"]),
    "tiny": ("tiny", []),
}
DEFAULT_PRESETS = ("default", "paper", "cpc_audio_default")

# Precisions measured side by side: float32 and what ``auto`` resolves to on this machine
# (cpc_speech.engine.precision). Every ratio the bench prints is between figures of the same run; figures
# of other toolkits or machines are in benchmarks/NOTES.md, never divided into these.
PRECISIONS = ("fp32", "auto")


@dataclass
class Sizes:
    """Problem sizes of one benchmark run."""

    batch: int = 8
    window: int = 20480
    negatives: int = 128
    steps: int = 12
    warmup: int = 2
    split_steps: int = 4
    matmul_n: int = 2048
    matmul_repeats: int = 8
    loader_seconds: float = 120.0  # audio in the generated FLAC corpus
    loader_file_seconds: float = 12.0  # length of each file (LibriSpeech-like)
    loader_epochs: int = 6
    loader_workers: Tuple[int, ...] = (0, 1, 2)
    extract_seconds: float = 60.0
    extract_repeats: int = 3
    long_seconds: float = 3600.0
    chunk_seconds: Optional[float] = None  # None: the default of extract_features for the precision


QUICK = Sizes(batch=2, window=4096, negatives=16, steps=2, warmup=1, split_steps=1, matmul_n=256, matmul_repeats=3,
              loader_seconds=8.0, loader_file_seconds=2.0, loader_epochs=1, extract_seconds=3.0, extract_repeats=1,
              long_seconds=12.0, chunk_seconds=4.0)


def amp_value(precision: str) -> str:
    """The ``train.amp`` value of a bench precision name (fp32 -> none)."""
    return "none" if precision == "fp32" else precision


def build_config(name: str, sizes: Dict[str, Any], sampling: str, amp: str, device: str, threads: int,
                 extra: Sequence[str] = ()):
    """The :class:`PretrainConfig` of benchmark configuration ``name`` at the run's ``sizes``, and
    the config overrides that define it (its own plus ``extra``)."""
    from cpc_speech.config import PretrainConfig, config_from_dict

    if name not in CONFIGS:
        raise ValueError(f"unknown benchmark configuration {name!r}; choose from {', '.join(CONFIGS)}")
    preset_name, overrides = CONFIGS[name]
    data = {"model": {"preset": preset_name}}
    ov = list(overrides) + [
        f"data.batch_size={sizes['batch']}", f"data.window_samples={sizes['window']}", "data.num_workers=0",
        f"loss.negatives={sizes['negatives']}", f"loss.sampling={sampling}",
        f"train.amp={amp}", f"train.device={device}", f"train.threads={threads}", "train.max_steps=1000000",
    ] + list(extra)
    return config_from_dict(PretrainConfig, data, ov, where=f"bench:{name}"), list(overrides) + list(extra)
