"""Helpers every measurement job uses: torch threads and device, CUDA sync, the spread of timings,
the precision a request resolves to."""

from __future__ import annotations

import statistics
from typing import Any, Dict, Sequence


def setup_torch(threads: int, device: str):
    """Import torch with ``threads`` intra-op threads (0: keep torch's default); checks that a CUDA
    ``device`` is there. Returns the torch module."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} but CUDA is not available")
    return torch


def sync(device: str) -> None:
    """Wait for queued CUDA work before reading the clock (no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def spread(values: Sequence[float]) -> Dict[str, Any]:
    """median, min, max, quartiles and mean of a list (and the values themselves)."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"n": 0}
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2],
            "mean": statistics.fmean(v), "values": [round(x, 6) for x in values]}


def precision_fields(requested: str, device: str) -> Dict[str, Any]:
    """The requested precision, what it resolves to on ``device``, and why."""
    from cpc_speech.engine.precision import resolve

    p = resolve(requested, device, key="precision")
    return {"precision_requested": requested, "precision": p.name, "precision_reason": p.reason}
