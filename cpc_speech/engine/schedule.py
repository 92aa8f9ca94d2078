"""Learning-rate schedules as multipliers of the base rate, by optimizer step (pretraining and
fine-tuning)."""

from __future__ import annotations

import math

from cpc_speech.config import TrainConfig

FINETUNE_SCHEDULES = ("constant", "cosine")  # fine-tuning's lr_schedule choices
FINETUNE_MIN_RATIO = 0.01  # fine-tuning's cosine ends at 1 % of the base rate


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int, min_ratio: float = FINETUNE_MIN_RATIO) -> float:
    """Multiplier of the base learning rate before optimizer step ``step`` (0-based).

    Linear warm-up from 1/``warmup_steps`` to 1 over the first ``warmup_steps`` steps, then
    ``constant`` (1), ``cosine`` (half a cosine from 1 down to ``min_ratio`` at ``total_steps``) or
    ``step`` (x0.5 at 50 % and x0.25 from 75 % of the steps after warm-up)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "step":
        return 1.0 if progress < 0.5 else (0.5 if progress < 0.75 else 0.25)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """The pretraining schedule of ``cfg`` (``schedule``, ``warmup_steps``, ``max_steps``,
    ``min_lr_ratio``; read at every call, so a resumed run with a new ``max_steps`` follows it)."""
    return lr_factor(cfg.schedule, step, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
