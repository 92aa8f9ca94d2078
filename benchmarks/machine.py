"""The machine and this process: CPU model, cores, memory, software versions, git commit (for the
results file), and the process's resident memory and CPU time (``/proc`` and ``getrusage``).

Only the standard library is imported at module level; :func:`machine_info` imports torch and numpy.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional


def _proc_status_kb(key: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> Optional[float]:
    """Resident set size now (``VmRSS``), MB; None where ``/proc`` is absent."""
    kb = _proc_status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS watermark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_mb() -> Optional[float]:
    """Peak resident set size since the last :func:`reset_peak_rss` (``VmHWM``), MB."""
    kb = _proc_status_kb("VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(children: bool = True) -> float:
    """User + system CPU seconds of this process (and of its reaped children, e.g. loader workers)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def cpu_model() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), else all cores."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def git_commit() -> Optional[str]:
    """Short commit of this checkout, ``-dirty`` when tracked files changed; None outside git."""
    here = Path(__file__).resolve().parent.parent  # the checkout
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def machine_info(name: Optional[str], threads: int, device: str) -> Dict[str, Any]:
    """The ``machine`` block of a results file: host, CPU, memory, versions, threads, device, commit."""
    import numpy as np
    import torch

    from cpc_speech import __version__

    info: Dict[str, Any] = {
        "name": name or socket.gethostname(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": mem_total_gb(),
        "threads": threads,
        "device": device,
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpc_speech": __version__,
        "git_commit": git_commit(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                           "GOMP_SPINCOUNT", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def mem_total_gb() -> Optional[float]:
    """Total memory (``MemTotal``), GB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def loadavg() -> Optional[List[float]]:
    """1, 5 and 15 minute load averages."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
