"""The seeds a run derives from its one ``seed``.

A resumed run must draw exactly what the uninterrupted run drew, also for run folders written by
earlier versions, so these formulas are part of the run-folder format: never change them.
"""

from __future__ import annotations

# per-epoch random streams of fine-tuning: multiplier of the run seed
EPOCH_STREAMS = {"batches": 1_000_003, "dropout": 1_000_033, "masks": 1_000_037}


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of optimisation step ``step`` on DDP rank ``rank`` (negatives, dropout, augmentation)."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """The seed of one random ``stream`` (a key of :data:`EPOCH_STREAMS`) in epoch ``epoch``."""
    return seed * EPOCH_STREAMS[stream] + epoch
