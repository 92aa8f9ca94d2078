"""Where a run computes: the device, the CPU thread count, and one precision for every rank."""

from __future__ import annotations

import torch

from cpc_speech.engine.distributed import DistInfo, broadcast_choice
from cpc_speech.engine.precision import PRECISION_NAMES, Precision, resolve


def pick_device(name: str, key: str = "train.device") -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; ``key`` names
    the setting in the error raised when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{key}={name} but CUDA is not available on this machine")
    return torch.device(name)


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work; 0 keeps torch's default."""
    if threads > 0:
        torch.set_num_threads(threads)


def shared_precision(requested: str, device: torch.device, dist: DistInfo, key: str = "train.amp") -> Precision:
    """The precision ``requested`` resolves to on ``device``; under DDP every rank takes rank 0's
    choice (``auto`` may time products, and ranks must compute alike)."""
    precision = resolve(requested, device, key=key)
    chosen = broadcast_choice(precision.name, PRECISION_NAMES, dist, device)
    if chosen != precision.name:
        precision = Precision(chosen, f"rank 0's choice ({precision.reason} here)")
    return precision
