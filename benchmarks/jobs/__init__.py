"""Measurement jobs, each run in a fresh Python process (``python -m benchmarks.jobs --child JOB``)
so that peak memory is per measurement and no measurement inherits another's allocator or thread
pool state.

A job is a JSON-able dict: ``kind`` (a key of :data:`JOBS`), ``threads``, ``device``, ``sizes`` (the
fields of :class:`benchmarks.configs.Sizes`) and the kind's own keys; it returns a JSON-able dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from benchmarks.jobs.extract import job_extract, job_extract_long
from benchmarks.jobs.loader import job_loader, job_loader_e2e
from benchmarks.jobs.matmul import job_matmul
from benchmarks.jobs.train import job_train

JOBS = {"matmul": job_matmul, "train": job_train, "loader": job_loader, "loader_e2e": job_loader_e2e, "extract": job_extract, "extract_long": job_extract_long}

CHECKOUT = Path(__file__).resolve().parents[2]  # holds benchmarks/ (not installed) and cpc_speech/


def run_job(job: Dict[str, Any], subprocess_mode: bool = True, timeout: float = 3600.0) -> Dict[str, Any]:
    """Run one job in a fresh subprocess (default) or in this process; errors become {"error": ...}."""
    t0 = time.perf_counter()
    if not subprocess_mode:
        try:
            res = JOBS[job["kind"]](job)
        except Exception as exc:  # keep the other measurements
            res = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        with tempfile.TemporaryDirectory(prefix="cpc-bench-job-") as td:
            out = Path(td) / "result.json"
            env = dict(os.environ)
            if job.get("threads", 0) > 0:
                for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    env[var] = str(job["threads"])
            root = str(CHECKOUT)
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            cmd = [sys.executable, "-m", "benchmarks.jobs", "--child", json.dumps(job), "--child-out", str(out)]
            try:
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
                if proc.returncode == 0 and out.is_file():
                    res = json.loads(out.read_text())
                else:
                    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
                    res = {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
            except subprocess.TimeoutExpired:
                res = {"error": f"timed out after {timeout:.0f} s"}
    res["wall_seconds"] = time.perf_counter() - t0
    res["isolated"] = subprocess_mode
    return res
