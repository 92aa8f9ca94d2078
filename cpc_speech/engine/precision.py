"""Numeric precision: float32, or bf16 / fp16 autocast, chosen to fit the device.

``auto`` (the default of ``train.amp`` and of extraction's ``precision``) picks bf16 autocast on a
CPU that computes bf16 matrix products fast, and float32 elsewhere:

* the CPU has AMX-BF16 tiles (``amx_bf16`` in ``/proc/cpuinfo``): bf16;
* an x86 CPU without native bf16 instructions (neither ``amx_bf16`` nor ``avx512_bf16``): float32
  (bf16 would be emulated, several times slower than float32);
* otherwise (AVX512-BF16, or a CPU whose flags do not tell, e.g. ARM), a short start-up measurement
  (:func:`measure_matmul_rates`, a fraction of a second) compares bf16 and float32 products of an
  encoder-like shape: bf16 when bf16 runs at least :data:`MIN_BF16_SPEEDUP` times as fast;
* on CUDA: bf16 where the GPU supports it, float32 otherwise.

The abilities are detected at run time, never assumed; the result is cached per process and per
device. Under bf16 autocast the matrix products run in bf16 while normalisation statistics,
recurrent states, softmaxes and the optimizer stay in float32 (see the model and loss modules).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import torch

AMP_CHOICES = ("auto", "none", "bf16", "fp16")  # train.amp
EXTRACT_CHOICES = ("auto", "fp32", "bf16")  # extraction precision ("none" is accepted as "fp32")
PRECISION_NAMES = ("fp32", "bf16", "fp16")  # what a request resolves to
MIN_BF16_SPEEDUP = 1.5  # bf16 over fp32 matmul rate that makes bf16 the auto choice (benchmarks/NOTES.md)


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is ``fp32``, ``bf16`` or ``fp16``; ``reason`` says why."""

    name: str
    reason: str

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, or None for float32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: Union[str, torch.device]):
        """A context manager that runs the block in this precision on ``device``."""
        device_type = torch.device(device).type
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def cpu_flags() -> frozenset:
    """The CPU feature flags the kernel reports (empty where ``/proc/cpuinfo`` is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure_matmul_rates(rows: int = 1024, inner: int = 1024, cols: int = 512, repeats: int = 5) -> Dict[str, float]:
    """GFLOP/s of a (rows x inner) @ (inner x cols) product in float32 and bf16 on the CPU with
    torch's current thread count; the two are timed in turn, best of ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=gen)
    b = torch.randn(inner, cols, generator=gen)
    a16, b16 = a.bfloat16(), b.bfloat16()
    flop = 2.0 * rows * inner * cols
    for _ in range(2):  # warm-up: kernel selection, page faults
        a @ b
        a16 @ b16
    fp32, bf16 = float("inf"), float("inf")
    for _ in range(repeats):  # in turn, so that a busy moment hits both
        fp32 = min(fp32, _seconds(lambda: a @ b))
        bf16 = min(bf16, _seconds(lambda: a16 @ b16))
    return {"fp32_gflops": flop / fp32 / 1e9, "bf16_gflops": flop / bf16 / 1e9}


@functools.lru_cache(maxsize=None)
def cpu_bf16_choice() -> Precision:
    """Whether bf16 autocast pays on this CPU (cached for the process)."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return Precision("bf16", "CPU has AMX-BF16")
    if "sse2" in flags and "avx512_bf16" not in flags:
        return Precision("fp32", "CPU has no native bf16 (no AMX-BF16 or AVX512-BF16)")
    try:
        quick = measure_matmul_rates(256, 256, 256, repeats=5)  # a few ms even where bf16 is emulated
        if quick["bf16_gflops"] < 0.5 * quick["fp32_gflops"]:
            rates = quick
        else:
            rates = measure_matmul_rates()
    except RuntimeError as exc:  # no bf16 kernels for this CPU in this torch build
        return Precision("fp32", f"bf16 matrix products unavailable: {str(exc).splitlines()[0][:80]}")
    speedup = rates["bf16_gflops"] / rates["fp32_gflops"]
    measured = f"bf16 matmul measured {speedup:.1f}x float32"
    if speedup >= MIN_BF16_SPEEDUP:
        return Precision("bf16", measured)
    return Precision("fp32", f"{measured}, below {MIN_BF16_SPEEDUP:g}x")


def resolve(requested: str, device: Union[str, torch.device], key: str = "train.amp") -> Precision:
    """Turn a requested precision (``auto``, ``none``/``fp32``, ``bf16``, ``fp16``) into the one to
    run on ``device``. ``key`` names the setting in error messages."""
    device = torch.device(device)
    value = str(requested).lower()
    if value in ("none", "fp32", "float32"):
        return Precision("fp32", f"{key}={requested}")
    if value == "bf16":
        return Precision("bf16", f"{key}={requested}")
    if value == "fp16":
        if device.type != "cuda":
            raise ValueError(f"{key}=fp16 needs a CUDA device (fp16 autocast is slow and unscaled on CPU); use bf16 or auto")
        return Precision("fp16", f"{key}={requested}")
    if value != "auto":
        raise ValueError(f"{key} must be one of auto, none (fp32), bf16, fp16; got {requested!r}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "GPU supports bf16")
        return Precision("fp32", "GPU without bf16")
    if device.type != "cpu":
        return Precision("fp32", f"auto on {device.type}")
    return cpu_bf16_choice()
