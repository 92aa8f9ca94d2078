"""The ``matmul`` job: square matrix product rates in float32 and bf16, each precision's roofline."""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict

from benchmarks.jobs.common import setup_torch, spread, sync


def job_matmul(job: Dict[str, Any]) -> Dict[str, Any]:
    """Best-of-N square matmul rate in fp32 and bf16: the roofline of each precision; plus what
    ``auto`` resolves to here and why."""
    device = job["device"]
    torch = setup_torch(job["threads"], device)
    from cpc_speech.engine.precision import resolve

    auto = resolve("auto", device)
    n, reps = job["sizes"]["matmul_n"], job["sizes"]["matmul_repeats"]
    out: Dict[str, Any] = {"n": n, "repeats": reps, "auto": {"name": auto.name, "reason": auto.reason}}
    for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        if dtype_name == "bf16" and device == "cpu" and not _fast_bf16():
            n_d = min(n, 512)  # emulated bf16 (no AVX512-BF16/AMX) runs at a fraction of fp32: keep it short
        else:
            n_d = n
        a = torch.randn(n_d, n_d, device=device).to(dtype)
        b = torch.randn(n_d, n_d, device=device).to(dtype)
        c = a @ b
        sync(device)
        times = []
        for _ in range(reps if dtype_name == "fp32" else max(2, reps // 2)):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            sync(device)
            times.append(time.perf_counter() - t0)
        flops = 2.0 * n_d**3
        out[dtype_name] = {"n": n_d, "gflops_best": flops / min(times) / 1e9, "gflops_median": flops / statistics.median(times) / 1e9,
                           "seconds": spread(times)}
    out["gflops"] = out["fp32"]["gflops_best"]
    return out


def _fast_bf16() -> bool:
    """Whether the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    from cpc_speech.engine.precision import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
