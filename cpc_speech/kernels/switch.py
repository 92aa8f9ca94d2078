"""When the fast paths run: one process-wide switch, and the autocast state the kernels follow.

The fast paths are on by default. ``with disabled():`` turns all of them off, and the model then
runs plain torch (``F.conv1d`` on channels-first input, ``nn.GRU`` / ``nn.LSTM`` as they are): the
reference the kernels are tested against, and a way to try an architecture change before the
kernels know about it. Like ``torch.backends`` flags the switch is global, not per thread.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

_enabled = True


def enabled() -> bool:
    """True unless inside :func:`disabled`."""
    return _enabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the block with every fast path off (the plain torch reference)."""
    global _enabled
    saved, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = saved


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast runs matrix products in on ``device_type`` ("cpu"), or None when it is off."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
