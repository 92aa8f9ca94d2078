"""Learning-rate schedules as multipliers of the base rate, by optimizer step."""

from __future__ import annotations

import math

from cpc_speech.config import TrainConfig


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then ``cosine`` decay to ``min_lr_ratio``, ``step``
    decay (x0.5 at 50% and 75% of ``max_steps``) or ``constant``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "step":
        return 1.0 if progress < 0.5 else (0.5 if progress < 0.75 else 0.25)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
