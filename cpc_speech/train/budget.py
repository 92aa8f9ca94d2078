"""A pretraining budget in minutes (``train.max_minutes``), turned into a step count once.

The run times its own steps ``FIRST_STEP``..``LAST_STEP`` (wall clock, data loading included,
the first steps' start-up excluded; a run resumed before that measures its first 30 steps after
``FIRST_STEP``) and from then on trains for the number of steps the budget
buys at that rate, ``floor(max_minutes * 60 / seconds_per_step)``, capped at ``train.max_steps``.
The count is fixed once: the learning-rate schedule ends where the run ends, checkpoints record
the count and the measured rate, and a resumed run keeps them (a changed ``max_minutes`` is
converted at the recorded rate), so a budgeted run resumes exactly. The budget pays for training
steps only: a validation or checkpoint inside the measured window is timed apart (``paused``) and left
out of the rate, and validation, checkpoints and start-up add their own time to the wall time of the
run. Under DDP every rank takes rank 0's count.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional

FIRST_STEP = 10  # steps before it: the loader's and the allocator's start-up
LAST_STEP = 40  # the rate is measured over steps FIRST_STEP..LAST_STEP

clock = time.perf_counter  # seconds; tests replace it


@dataclass
class StepBudget:
    """The steps that ``minutes`` of pretraining buy, measured on this machine.

    ``after_step(step)`` is called after every optimiser step; once it has measured the rate it
    returns the run's step count (before that: None)."""

    minutes: float
    seconds_per_step: Optional[float] = None
    steps: Optional[int] = None
    _start: Optional[tuple] = None  # (step, clock) where the measurement began
    _paused: float = 0.0  # seconds of the window spent in ``paused`` blocks (validation, checkpoints)

    def after_step(self, step: int) -> Optional[int]:
        if self.steps is not None:
            return self.steps
        if self._start is None:
            if step >= FIRST_STEP:  # a run resumed past FIRST_STEP measures from where it resumed
                self._start = (step, clock())
        elif step - self._start[0] >= LAST_STEP - FIRST_STEP:
            self.seconds_per_step = (clock() - self._start[1] - self._paused) / (step - self._start[0])
            self.steps = self.steps_at_rate()
        return self.steps

    @contextmanager
    def paused(self) -> Iterator[None]:
        """A block whose time is not a training step's (validation, a checkpoint): while the rate
        is being measured its seconds are left out of it; otherwise the clock is not read."""
        if self._start is None or self.steps is not None:
            yield
            return
        began = clock()
        try:
            yield
        finally:
            self._paused += clock() - began

    def steps_at_rate(self) -> int:
        """The steps ``minutes`` buy at the measured rate; never fewer than ``LAST_STEP``
        (the budget cannot end before the rate is known)."""
        return max(LAST_STEP, math.floor(self.minutes * 60.0 / max(1e-9, self.seconds_per_step)))

    def state(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint records (None before the rate is measured)."""
        if self.steps is None:
            return None
        return {"max_minutes": self.minutes, "seconds_per_step": self.seconds_per_step, "steps": self.steps}

    @classmethod
    def resumed(cls, minutes: float, saved: Optional[Dict[str, Any]]) -> "StepBudget":
        """The budget of a resumed run: the recorded rate and count (converted to a new
        ``minutes`` at the recorded rate), or a fresh measurement if none was recorded."""
        if not saved:
            return cls(minutes)
        budget = cls(minutes, seconds_per_step=float(saved["seconds_per_step"]), steps=int(saved["steps"]))
        if float(saved["max_minutes"]) != minutes:
            budget.steps = budget.steps_at_rate()
        return budget
