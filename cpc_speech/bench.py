"""Speed and memory benchmarks: ``cpc-speech bench`` / ``python -m benchmarks.run``.

One run measures, on the current machine and with an explicit number of torch threads:

* ``matmul``: fp32 (and bf16) square matmul rate, the GFLOP/s ceiling of the machine;
* ``train``: full optimizer steps (forward, InfoNCE with negative sampling, backward, Adam) of
  :meth:`cpc_speech.train.step.PretrainStep.run` on random waveforms, per model configuration
  and negative-sampling mode: step time (median and spread, warm-up excluded), seconds of audio per
  second, achieved GFLOP/s from an analytic FLOP count (:func:`analytic_flops`), the share of the
  step spent in encoder / context / heads / loss / optimizer (staged passes, see
  :func:`_staged_step`) and peak memory;
* ``loader``: windows per second of :func:`cpc_speech.batching.make_loader` over a generated FLAC
  corpus with 0, 1 and 2 workers, and its CPU cost per window;
* ``extract``: :func:`cpc_speech.features.extract_features` real-time factor on 60 s of audio and on a
  one-hour array processed in chunks, with peak RSS.

Every measurement runs in a fresh Python subprocess (``python -m cpc_speech.bench --child JOB``), so
peak RSS is per configuration and no measurement inherits another's allocator state. Results are
printed as a table and written as JSON (schema ``cpc_speech.bench/1``, documented in
``benchmarks/NOTES.md``).

Only the standard library is imported at module level (``cpc-speech --help`` stays fast).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

SCHEMA = "cpc_speech.bench/1"
SECTIONS = ("matmul", "train", "loader", "extract")
SAMPLINGS = ("cross_batch", "same_utterance")

# Named training configurations: (model preset, config overrides).
CONFIGS: Dict[str, Tuple[str, List[str]]] = {
    "default": ("default", []),
    "paper": ("paper", []),
    "cpc_audio_default": ("default", [
        "model.encoder.channels=256", "model.encoder.norm=channel",
        "model.context.kind=lstm", "model.context.hidden=256", "model.context.layers=1",
        "model.predictor.kind=transformer",
    ]),
    "paper_256": ("paper", ["model.encoder.channels=256"]),
    "tiny": ("tiny", []),
}
DEFAULT_PRESETS = ("default", "paper", "cpc_audio_default")

# Precisions measured side by side: float32 and what ``auto`` resolves to on this machine
# (cpc_speech.engine.precision). Every ratio the bench prints is between figures of the same run; figures
# of other toolkits or machines are in benchmarks/NOTES.md, never divided into these.
PRECISIONS = ("fp32", "auto")

# Targets of the performance issue (ratios: automatic precision over float32, same run)
TARGETS = {
    "train_speedup_over_fp32": {"default": 2.5, "paper": 3.5},
    "encoder_fraction_of_roofline": 0.5,  # encoder forward+backward GFLOP/s over the matmul rate of its precision
    "extract_speedup_over_fp32": 3.0,
    "step_peak_rss_mb_max": 1024.0,
    "long_extract_peak_rss_mb_max": 1024.0,
    "loader_wait_share_max": 0.05,  # training fed by 2 workers waits for batches at most this share of the step
}


@dataclass
class Sizes:
    """Problem sizes of one benchmark run."""

    batch: int = 8
    window: int = 20480
    negatives: int = 128
    steps: int = 12
    warmup: int = 2
    split_steps: int = 4
    matmul_n: int = 2048
    matmul_repeats: int = 8
    loader_seconds: float = 120.0  # audio in the generated FLAC corpus
    loader_file_seconds: float = 12.0  # length of each file (LibriSpeech-like)
    loader_epochs: int = 6
    loader_workers: Tuple[int, ...] = (0, 1, 2)
    extract_seconds: float = 60.0
    extract_repeats: int = 3
    long_seconds: float = 3600.0
    chunk_seconds: Optional[float] = None  # None: the default of extract_features for the precision


QUICK = Sizes(batch=2, window=4096, negatives=16, steps=2, warmup=1, split_steps=1, matmul_n=256, matmul_repeats=3,
              loader_seconds=8.0, loader_file_seconds=2.0, loader_epochs=1, extract_seconds=3.0, extract_repeats=1,
              long_seconds=12.0, chunk_seconds=4.0)


# ------------------------------------------------------------------------------------ FLOPs


def _block_flops(d: int, t: int, window: int) -> int:
    """Forward FLOPs of one CausalTransformerBlock on ``t`` frames of width ``d``: q, k, v
    projections (once), dense causal attention scores and weighted sum over min(t, window) keys
    per query, output projection and the 4x feed-forward."""
    keys = min(t, window)
    return 2 * t * d * 3 * d + 2 * 2 * t * keys * d + 2 * t * d * d + 2 * 2 * t * d * 4 * d


def analytic_flops(cfg, batch: int, samples: int, negatives: int, sampling: str, shared: bool = True) -> Dict[str, Any]:
    """Forward FLOPs per batch (multiply-add = 2 FLOPs) of a :class:`CPCConfig` on ``batch``
    windows of ``samples`` samples; a training step counts 3x (backward = 2x forward).

    encoder: sum over conv layers of 2 * k * Cin * Cout * frames_out (norms and ReLU ignored);
    context: GRU 3 gates / LSTM 4 gates, each 2 * (in * H + H * H) per frame and layer;
    heads: linear 2 * H * K * D per frame, or per step one Transformer block + 2 * H * D;
    loss: the score products the loss computes, 2 * (B T K) * D * candidates, candidates = T frames
    of the own window (same_utterance only: one score matrix per window), 1 + N (negatives shared
    by the K steps: gathered and scored by a batched product) or B * T (a set per step: dense
    product against all frames).
    Also returned: ``loss_gather`` (what scoring only the 1 + N candidates would need).
    """
    from cpc_speech.loss.negatives import parse_sampling

    enc = cfg.encoder
    n, cin, conv = samples, 1, 0
    for k, s, p in zip(enc.kernels, enc.strides, enc.paddings):
        n = (n + 2 * p - k) // s + 1
        conv += 2 * k * cin * enc.channels * n
        cin = enc.channels
    t, d_enc, h = n, enc.channels, cfg.context.hidden
    ctx = cfg.context
    if ctx.kind in ("gru", "lstm"):
        gates = 3 if ctx.kind == "gru" else 4
        context = sum(gates * 2 * ((d_enc if layer == 0 else h) * h + h * h) * t for layer in range(ctx.layers))
    else:
        context = 2 * d_enc * h * t + ctx.layers * _block_flops(h, t, ctx.window)
    pred = cfg.predictor
    k_steps = pred.steps
    if pred.kind == "linear":
        heads = 2 * h * k_steps * d_enc * t
    else:
        heads = k_steps * (_block_flops(h, t, pred.window) + 2 * h * d_enc * t)
    modes = {m for m, _ in parse_sampling(sampling, negatives)}
    candidates = t if modes == {"same_utterance"} else (negatives + 1 if shared else batch * t)
    loss = 2 * batch * t * k_steps * d_enc * candidates
    per_batch = {"encoder": conv * batch, "context": context * batch, "heads": heads * batch, "loss": loss}
    forward = sum(per_batch.values())
    return {
        **per_batch,
        "forward": forward,
        "step": 3 * forward,
        "frames": t,
        "loss_gather": 2 * batch * t * k_steps * d_enc * (negatives + 1),
    }


# ------------------------------------------------------------------------------------ helpers


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
    kb = _proc_status_kb("VmHWM")
    return None if kb is None else kb / 1024


def cpu_seconds(children: bool = True) -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def spread(values: Sequence[float]) -> Dict[str, Any]:
    """median, min, max, quartiles and mean of a list (and the values themselves)."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"n": 0}
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0]] * 3
    return {"n": len(v), "median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2],
            "mean": statistics.fmean(v), "values": [round(x, 6) for x in values]}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _git_commit() -> Optional[str]:
    here = Path(__file__).resolve().parent.parent
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
    import numpy as np
    import torch

    from cpc_speech import __version__

    info: Dict[str, Any] = {
        "name": name or socket.gethostname(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": _mem_total_gb(),
        "threads": threads,
        "device": device,
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpc_speech": __version__,
        "git_commit": _git_commit(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                           "GOMP_SPINCOUNT", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _mem_total_gb() -> Optional[float]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _loadavg() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ------------------------------------------------------------------------------------ child jobs


def _setup_torch(threads: int, device: str):
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} but CUDA is not available")
    return torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def job_matmul(job: Dict[str, Any]) -> Dict[str, Any]:
    """Best-of-N square matmul rate in fp32 and bf16: the roofline of each precision; plus what
    ``auto`` resolves to here and why."""
    device = job["device"]
    torch = _setup_torch(job["threads"], device)
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
        _sync(device)
        times = []
        for _ in range(reps if dtype_name == "fp32" else max(2, reps // 2)):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=c)
            _sync(device)
            times.append(time.perf_counter() - t0)
        flops = 2.0 * n_d**3
        out[dtype_name] = {"n": n_d, "gflops_best": flops / min(times) / 1e9, "gflops_median": flops / statistics.median(times) / 1e9,
                           "seconds": spread(times)}
    out["gflops"] = out["fp32"]["gflops_best"]
    return out


def roofline(matmul: Optional[Dict[str, Any]], precision: str) -> Optional[float]:
    """Best matmul GFLOP/s of the precision a measurement ran in (fp32 for fp32)."""
    if not matmul or "error" in matmul:
        return None
    key = "bf16" if precision in ("bf16", "fp16") else "fp32"
    return (matmul.get(key) or {}).get("gflops_best")


def _fast_bf16() -> bool:
    """Whether the CPU has native bf16 matmul instructions (AVX512-BF16 or AMX)."""
    from cpc_speech.engine.precision import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def _amp_value(precision: str) -> str:
    """The ``train.amp`` value of a bench precision name (fp32 -> none)."""
    return "none" if precision == "fp32" else precision


def build_config(name: str, sizes: Dict[str, Any], sampling: str, amp: str, device: str, threads: int,
                 extra: Sequence[str] = ()):
    from cpc_speech.config import PretrainConfig, config_from_dict

    if name not in CONFIGS:
        raise ValueError(f"unknown benchmark configuration {name!r}; choose from {', '.join(CONFIGS)}")
    preset_name, overrides = CONFIGS[name]
    data = {"model": {"preset": preset_name}}
    ov = list(overrides) + [
        f"data.batch_size={sizes['batch']}", f"data.window_samples={sizes['window']}", "data.num_workers=0",
        f"loss.negatives={sizes['negatives']}", f"loss.sampling={sampling}",
        f"train.amp={amp}", f"train.device={device}", f"train.threads={threads}", "train.max_steps=1000000",
    ] + list(extra)
    return config_from_dict(PretrainConfig, data, ov, where=f"bench:{name}"), list(overrides) + list(extra)


def _staged_step(tr, batch, seed: int, device: str) -> Dict[str, float]:
    """One training step cut into separately timed parts with the same arithmetic as
    ``PretrainStep.run``: each part's output is detached and re-marked as requiring grad, the
    forward of every part is timed, then the backward is run part by part (loss, heads, context,
    encoder) feeding each part the gradient of its output, then clip + Adam. Returns seconds per part."""
    import torch

    model, loss_fn, opt = tr.model, tr.loss_fn, tr.optimizer
    model.train()
    gen = torch.Generator(device=tr.device).manual_seed(seed)
    times: Dict[str, float] = {}
    _sync(device)
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        _sync(device)
        now = time.perf_counter()
        times[name] = now - t
        t = now

    with tr.autocast():
        z = model.encoder(batch.wav)
        lap("encoder_forward")
        zd = z.detach().requires_grad_()
        c, _ = model.context(zd)
        lap("context_forward")
        cd = c.detach().requires_grad_()
        p = model.heads(cd)
        lap("heads_forward")
        zl = z.detach().requires_grad_()
        pl = p.detach().requires_grad_()
        b, frames, k_steps, _ = pl.shape
        neg = loss_fn.sampler.sample(b, frames, k_steps, batch.speaker, batch.utterance, generator=gen, device=zl.device)
        lap("loss_sampling")
        result = loss_fn(zl, pl, batch.speaker, batch.utterance, negatives=neg)
        lap("loss_forward")
    opt.zero_grad(set_to_none=True)
    result.loss.backward()
    lap("loss_backward")
    p.backward(pl.grad.to(p.dtype))
    lap("heads_backward")
    c.backward(cd.grad)
    lap("context_backward")
    z.backward(zd.grad + zl.grad.to(z.dtype))
    lap("encoder_backward")
    if tr.cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.cfg.train.grad_clip)
    opt.step()
    lap("optimizer")
    # informational (not part of the step): the dense score matmul of the loss alone
    with torch.no_grad():
        pf, zf = pl.detach(), zl.detach()
        if loss_fn.sampler.within_window_only:
            torch.bmm(pf.reshape(b, frames * k_steps, -1), zf.transpose(1, 2))
        else:
            pf.reshape(b * frames * k_steps, -1) @ zf.reshape(-1, zf.shape[-1]).t()
    lap("score_matmul_forward_only")
    return times


PARTS = ("encoder", "context", "heads", "loss", "optimizer")


def job_train(job: Dict[str, Any]) -> Dict[str, Any]:
    device, sizes = job["device"], job["sizes"]
    torch = _setup_torch(job["threads"], device)
    from cpc_speech.batching import Batch
    from cpc_speech.train.step import PretrainStep

    cfg, overrides = build_config(job["config"], sizes, job["sampling"], _amp_value(job.get("precision", "fp32")), device,
                                  job["threads"], job.get("overrides", ()))
    B, S = sizes["batch"], sizes["window"]
    flops = analytic_flops(cfg.model, B, S, sizes["negatives"], job["sampling"], cfg.loss.shared_negatives)
    rss_start = rss_mb()
    tr = PretrainStep(cfg)  # batches below are random
    precision = tr.precision
    if job.get("compile"):  # as train.compile=true does
        tr.forward_model = torch.compile(tr.model)
    g = torch.Generator().manual_seed(1234)
    batches = [
        Batch(0.1 * torch.randn(B, S, generator=g), torch.zeros(B, dtype=torch.long), torch.arange(B),
              [(0, i * S) for i in range(B)]).to(tr.device)
        for _ in range(min(4, max(1, sizes["steps"])))
    ]
    params = sum(p.numel() for p in tr.model.parameters())
    feature_params = sum(p.numel() for m in (tr.model.encoder, tr.model.context) for p in m.parameters())
    rss_model = rss_mb()

    def one(i: int) -> Tuple[float, float]:
        _sync(device)
        t0 = time.perf_counter()
        stats = tr.run(batches[i % len(batches)])
        _sync(device)
        return time.perf_counter() - t0, stats["loss"]

    warm = [one(i)[0] for i in range(sizes["warmup"])]
    reset_ok = reset_peak_rss()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    step_times, losses = [], []
    for i in range(sizes["steps"]):
        dt, loss = one(i)
        step_times.append(dt)
        losses.append(loss)
    step_peak = hwm_mb() if reset_ok else None
    cuda_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    peak_after_steps = peak_rss_mb()

    split_runs: List[Dict[str, float]] = []
    for i in range(sizes["split_steps"] + (1 if sizes["split_steps"] else 0)):
        r = _staged_step(tr, batches[i % len(batches)], 777 + i, device)
        if i > 0:  # the first staged step warms up the separate autograd graphs
            split_runs.append(r)
    st = spread(step_times)
    audio = B * S / 16000.0
    med = st["median"]
    out: Dict[str, Any] = {
        "config": job["config"], "sampling": job["sampling"], "preset": CONFIGS[job["config"]][0], "overrides": overrides,
        "precision_requested": job.get("precision", "fp32"), "precision": precision.name, "precision_reason": precision.reason,
        "compile": bool(job.get("compile")),
        "model": _model_summary(cfg.model), "parameters": params, "feature_parameters": feature_params,
        "batch": B, "window_samples": S, "frames": flops["frames"], "negatives": sizes["negatives"],
        "steps": sizes["steps"], "warmup": sizes["warmup"], "warmup_seconds": [round(x, 6) for x in warm],
        "step_seconds": st,
        "audio_seconds_per_step": audio,
        "audio_seconds_per_second": {"median": audio / med, "min": audio / st["max"], "max": audio / st["min"],
                                     "q1": audio / st["q3"], "q3": audio / st["q1"]},
        "flops": flops,
        "gflops_per_second": flops["step"] / med / 1e9,
        "loss_values": [round(x, 5) for x in losses],
        "memory": {"rss_start_mb": rss_start, "rss_model_mb": rss_model, "step_peak_rss_mb": step_peak,
                   "peak_rss_mb": peak_after_steps, "peak_rss_incl_split_mb": peak_rss_mb(), "cuda_peak_allocated_mb": cuda_peak},
    }
    if split_runs:
        keys = list(split_runs[0])
        sec = {k: statistics.median(r[k] for r in split_runs) for k in keys}
        parts: Dict[str, Dict[str, Any]] = {}
        for part in PARTS:
            fwd = sec.get(f"{part}_forward", 0.0) + (sec.get("loss_sampling", 0.0) if part == "loss" else 0.0)
            bwd = sec.get(f"{part}_backward", 0.0)
            total = sec["optimizer"] if part == "optimizer" else fwd + bwd
            parts[part] = {"forward": fwd if part != "optimizer" else None, "backward": bwd if part != "optimizer" else None,
                           "total": total}
        parts["loss"]["sampling"] = sec.get("loss_sampling", 0.0)
        staged_sum = sum(p["total"] for p in parts.values())
        for part, p in parts.items():
            p["share"] = p["total"] / staged_sum if staged_sum > 0 else None
            f = flops.get(part)
            p["gflops_per_second"] = 3 * f / p["total"] / 1e9 if f and p["total"] > 0 else None
        out["split"] = {
            "method": "staged",
            "steps": len(split_runs),
            "parts": parts,
            "seconds": {k: round(v, 6) for k, v in sec.items()},
            "staged_sum_seconds": staged_sum,
            "staged_over_step": staged_sum / med,
            "score_matmul_forward_seconds": sec.get("score_matmul_forward_only"),
        }
    return out


def _model_summary(m) -> Dict[str, Any]:
    return {"encoder_channels": m.encoder.channels, "encoder_norm": m.encoder.norm, "context": m.context.kind,
            "context_hidden": m.context.hidden, "context_layers": m.context.layers, "predictor": m.predictor.kind,
            "steps": m.predictor.steps}


def _speechlike(n: int, rng, f0: float):
    """A harmonic tone with drifting pitch plus noise bursts (compresses like speech-ish FLAC)."""
    import numpy as np

    t = np.arange(n) / 16000.0
    pitch = f0 * (1 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t + rng.uniform(0, 6.3)))
    phase = 2 * np.pi * np.cumsum(pitch) / 16000.0
    wav = sum((0.5 / h) * np.sin(h * phase) for h in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6.3)) ** 2
    wav = wav * env + 0.02 * rng.standard_normal(n)
    return (0.3 * wav / np.abs(wav).max()).astype(np.float32)


def _flac_corpus(root: Path, sizes: Dict[str, Any], copies: int = 1):
    """``loader_seconds`` of speech-like audio in FLAC files of ``loader_file_seconds`` under
    ``root`` (4 speakers) and its manifest rows; ``copies`` > 1 lists every file that many times
    (under distinct ids) to make an epoch longer without writing more audio."""
    import numpy as np

    from cpc_speech.audio import write_audio
    from cpc_speech.corpora.manifest import Utterance, read_manifest, utterance_from_file, write_manifest

    rng = np.random.default_rng(0)
    per_file = int(sizes["loader_file_seconds"] * 16000)
    files = max(1, int(math.ceil(sizes["loader_seconds"] / sizes["loader_file_seconds"])))
    rows = []
    for i in range(files):
        path = root / f"spk{i % 4}" / f"utt{i:04d}.flac"
        write_audio(path, _speechlike(per_file, rng, 100.0 + 30.0 * (i % 4)))
        rows.append(utterance_from_file(f"utt{i:04d}", path, f"spk{i % 4}"))
    rows = [Utterance(f"{r.id}-{c}", r.path, r.speaker, r.num_samples, r.sample_rate) for c in range(copies) for r in rows]
    rows = read_manifest(write_manifest(rows, root / "manifest.tsv"))
    info = {"audio_seconds": files * per_file / 16000.0, "files": files, "file_seconds": per_file / 16000.0, "copies": copies,
            "flac_megabytes": round(sum(os.path.getsize(root / f"spk{i % 4}" / f"utt{i:04d}.flac") for i in range(files)) / 2**20, 2)}
    return rows, info


def job_loader(job: Dict[str, Any]) -> Dict[str, Any]:
    _setup_torch(job["threads"], "cpu")
    from cpc_speech.batching import make_loader
    from cpc_speech.config import DataConfig

    sizes = job["sizes"]
    out: Dict[str, Any] = {"batch": sizes["batch"], "window_samples": sizes["window"], "epochs": sizes["loader_epochs"],
                           "format": "flac", "workers": {}}
    with tempfile.TemporaryDirectory(prefix="cpc-bench-loader-") as td:
        rows, info = _flac_corpus(Path(td), sizes)
        out.update(info)
        for workers in sizes["loader_workers"]:
            cfg = DataConfig(window_samples=sizes["window"], batch_size=sizes["batch"], num_workers=workers)
            loader, sampler = make_loader(rows, cfg, seed=0)
            cpu0, t_all = cpu_seconds(), time.perf_counter()
            windows = steady_windows = 0
            steady_time = 0.0
            first_batch = []
            for epoch in range(sizes["loader_epochs"]):
                sampler.set_epoch(epoch)
                t0 = time.perf_counter()
                t_first = None
                for batch in loader:
                    n = 0 if batch is None else int(batch.wav.shape[0])
                    windows += n
                    now = time.perf_counter()
                    if t_first is None:
                        t_first = now
                        first_batch.append(now - t0)
                    else:
                        steady_windows += n
                t_end = time.perf_counter()
                if t_first is not None:
                    steady_time += t_end - t_first
            elapsed = time.perf_counter() - t_all
            del loader
            cpu = cpu_seconds() - cpu0
            out["workers"][str(workers)] = {
                "windows": windows,
                "seconds": elapsed,
                "windows_per_second": steady_windows / steady_time if steady_time > 0 else None,
                "windows_per_second_incl_startup": windows / elapsed if elapsed > 0 else None,
                "first_batch_seconds": spread(first_batch),
                "cpu_ms_per_window": 1000 * cpu / windows if windows else None,
                "cpu_seconds": cpu,
            }
    return out


def job_loader_e2e(job: Dict[str, Any]) -> Dict[str, Any]:
    """Training steps fed by the real loader (``data.num_workers`` workers reading FLAC, as in
    ``Trainer.fit``) against the same steps on batches already in memory: the time each step waits
    for its batch, and the step-time slowdown from workers competing for the cores."""
    device, sizes = job["device"], job["sizes"]
    _setup_torch(job["threads"], device)
    from cpc_speech.train.trainer import Trainer

    steps, warmup, workers = sizes["steps"], sizes["warmup"], job.get("workers", 2)
    B, S = sizes["batch"], sizes["window"]
    with tempfile.TemporaryDirectory(prefix="cpc-bench-e2e-") as td:
        # enough windows for warm-up + steps in one epoch (no worker restart inside the measurement)
        per_file_windows = max(1, int(sizes["loader_file_seconds"] * 16000) // S)
        files = max(1, int(math.ceil(sizes["loader_seconds"] / sizes["loader_file_seconds"])))
        copies = max(1, int(math.ceil((steps + warmup + 1) * B / (files * per_file_windows))))
        rows, info = _flac_corpus(Path(td), sizes, copies)
        manifest = str(Path(td) / "manifest.tsv")
        cfg, overrides = build_config(job["config"], sizes, "cross_batch", "auto", device, job["threads"], [f"data.num_workers={workers}"])
        tr = Trainer(cfg, manifest, str(Path(td) / "run"), progress=False)
        tr.sampler.set_epoch(0)
        it = iter(tr.loader)
        waits, with_loader, batches = [], [], []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            batch = next(it).to(tr.device)
            t1 = time.perf_counter()
            tr.train_step(batch)
            _sync(device)
            t2 = time.perf_counter()
            batches.append(batch)
            if i >= warmup:
                waits.append(t1 - t0)
                with_loader.append(t2 - t0)
        del it
        prebuilt = []
        for i in range(steps):
            t0 = time.perf_counter()
            tr.train_step(batches[warmup + i])
            _sync(device)
            prebuilt.append(time.perf_counter() - t0)
    a, b = spread(with_loader), spread(prebuilt)
    return {"config": job["config"], "workers": workers, "steps": steps, "warmup": warmup, **info,
            "wait_seconds": spread(waits), "step_seconds_with_loader": a, "step_seconds_prebuilt": b,
            "slowdown": a["median"] / b["median"], "wait_share": statistics.fmean(waits) / a["mean"]}


def job_extract(job: Dict[str, Any]) -> Dict[str, Any]:
    """extract_features real-time factor on ``extract_seconds`` of audio (one pass)."""
    device, sizes = job["device"], job["sizes"]
    torch = _setup_torch(job["threads"], device)
    import numpy as np

    from cpc_speech.config import preset
    from cpc_speech.features import extract_features
    from cpc_speech.model.cpc import CPCModel

    torch.manual_seed(0)
    model = CPCModel(preset(job.get("preset", "default"))).to(device).eval()
    seconds = sizes["extract_seconds"]
    wav = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000), dtype=np.float32)
    precision = job.get("precision", "fp32")
    extract_features(wav[: 16000 * 2], sample_rate=16000, model=model, precision=precision)  # warm-up
    out: Dict[str, Any] = {"preset": job.get("preset", "default"), "audio_seconds": seconds, "repeats": sizes["extract_repeats"],
                           **_precision_fields(precision, device)}
    for layer in ("context", "encoder"):
        times = []
        for _ in range(sizes["extract_repeats"] if layer == "context" else 1):
            _sync(device)
            t0 = time.perf_counter()
            feats = extract_features(wav, sample_rate=16000, model=model, layer=layer, precision=precision)
            _sync(device)
            times.append(time.perf_counter() - t0)
        out[layer] = {"seconds": spread(times), "rtf": seconds / statistics.median(times), "frames": int(feats.shape[0]),
                      "dim": int(feats.shape[1])}
    out["rtf"] = out["context"]["rtf"]
    out["peak_rss_mb"] = peak_rss_mb()
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def job_extract_long(job: Dict[str, Any]) -> Dict[str, Any]:
    """extract_features on one long array (default one hour), processed in chunks."""
    device, sizes = job["device"], job["sizes"]
    torch = _setup_torch(job["threads"], device)
    import numpy as np

    from cpc_speech.config import preset
    from cpc_speech.features import chunk_seconds_for, extract_features
    from cpc_speech.engine.precision import resolve
    from cpc_speech.model.cpc import CPCModel

    torch.manual_seed(0)
    model = CPCModel(preset(job.get("preset", "default"))).to(device).eval()
    precision = job.get("precision", "fp32")
    extract_features(np.zeros(16000, np.float32), sample_rate=16000, model=model, precision=precision)  # warm-up
    rss_model = rss_mb()
    seconds = sizes["long_seconds"]
    wav = np.random.default_rng(1).standard_normal(int(seconds * 16000), dtype=np.float32)
    wav *= 0.1
    rss_input = rss_mb()
    reset_ok = reset_peak_rss()
    t0 = time.perf_counter()
    chunk_seconds = chunk_seconds_for(resolve(precision, device, key="precision"), sizes["chunk_seconds"])
    feats = extract_features(wav, sample_rate=16000, model=model, chunk_seconds=chunk_seconds, precision=precision)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {
        "preset": job.get("preset", "default"), "audio_seconds": seconds, "chunk_seconds": chunk_seconds,
        **_precision_fields(precision, device),
        "seconds": elapsed, "rtf": seconds / elapsed, "frames": int(feats.shape[0]), "dim": int(feats.shape[1]),
        "input_mb": wav.nbytes / 2**20, "output_mb": feats.nbytes / 2**20,
        "rss_model_mb": rss_model, "rss_with_input_mb": rss_input,
        "extract_peak_rss_mb": hwm_mb() if reset_ok else None, "peak_rss_mb": peak_rss_mb(),
    }


def _precision_fields(requested: str, device: str) -> Dict[str, Any]:
    from cpc_speech.engine.precision import resolve

    p = resolve(requested, device, key="precision")
    return {"precision_requested": requested, "precision": p.name, "precision_reason": p.reason}


JOBS = {"matmul": job_matmul, "train": job_train, "loader": job_loader, "loader_e2e": job_loader_e2e, "extract": job_extract, "extract_long": job_extract_long}


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
            root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
            cmd = [sys.executable, "-m", "cpc_speech.bench", "--child", json.dumps(job), "--child-out", str(out)]
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


def _child_main(argv: List[str]) -> int:
    job = json.loads(argv[argv.index("--child") + 1])
    out = argv[argv.index("--child-out") + 1]
    res = JOBS[job["kind"]](job)
    Path(out).write_text(json.dumps(res))
    return 0


# ------------------------------------------------------------------------------------ summary


def _train_rate(r: Dict[str, Any]) -> float:
    return r["audio_seconds_per_second"]["median"]


def roofline_fractions(r: Dict[str, Any], matmul: Optional[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Achieved GFLOP/s of a training measurement (whole step, encoder forward+backward) over the
    matmul rate of the precision it ran in."""
    ceiling = roofline(matmul, r.get("precision", "fp32"))
    enc = ((((r.get("split") or {}).get("parts") or {}).get("encoder")) or {}).get("gflops_per_second")
    return {"step": r["gflops_per_second"] / ceiling if ceiling else None,
            "encoder": enc / ceiling if ceiling and enc else None}


def compare_precisions(results: Dict[str, Any], precisions: Sequence[str]) -> List[Dict[str, Any]]:
    """For every configuration measured in several precisions in this run: the figure of each
    (training audio s/s, extraction real-time factor) and its ratio over the first precision
    (fp32 by default), training ratios as the median over rounds of A/B pairs."""
    base = precisions[0]
    rows: List[Dict[str, Any]] = []
    groups: Dict[Tuple[str, str], Dict[str, List[Dict[str, Any]]]] = {}
    for r in results.get("train", []):
        if "error" not in r:
            groups.setdefault((r["config"], r["sampling"]), {}).setdefault(r["precision_requested"], []).append(r)
    for (config, sampling), by in groups.items():
        for prec, runs in by.items():
            if prec == base or base not in by:
                continue
            pairs = [(a, b) for a in by[base] for b in runs if a.get("round") == b.get("round")]
            if not pairs:
                continue
            rows.append({
                "what": "train", "config": config, "sampling": sampling, "unit": "audio s/s",
                "baseline": base, "precision": prec, "resolved": runs[0]["precision"],
                "baseline_value": statistics.median(_train_rate(a) for a, _ in pairs),
                "value": statistics.median(_train_rate(b) for _, b in pairs),
                "ratio": statistics.median(_train_rate(b) / _train_rate(a) for a, b in pairs),
                "pairs": len(pairs),
            })
    ex = results.get("extract") or {}
    for part, unit in (("short", "x real time"), ("long", "x real time")):
        a = (ex.get(base) or {}).get(part)
        for prec in precisions[1:]:
            b = (ex.get(prec) or {}).get(part)
            if a and b and "error" not in a and "error" not in b:
                rows.append({"what": f"extract {part}", "config": a["preset"], "sampling": f"{a['audio_seconds']:.0f} s",
                             "unit": unit, "baseline": base, "precision": prec, "resolved": b["precision"],
                             "baseline_value": a["rtf"], "value": b["rtf"], "ratio": b["rtf"] / a["rtf"], "pairs": 1})
    return rows


def evaluate_targets(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per target of the performance issue: name, value, target, ok. Every value comes
    from this run (ratios between precisions measured here)."""
    rows: List[Dict[str, Any]] = []

    def add(name, value, target, ok, note=""):
        rows.append({"name": name, "value": value, "target": target, "ok": None if value is None else bool(ok), "note": note})

    matmul = results.get("matmul")
    for c in results.get("comparisons", []):
        if c["what"] == "train" and c["precision"] == "auto" and c["sampling"] == "cross_batch":
            tgt = TARGETS["train_speedup_over_fp32"].get(c["config"])
            if tgt:
                add(f"train {c['config']}: auto ({c['resolved']}) over fp32", c["ratio"], f">= {tgt}", c["ratio"] >= tgt,
                    note=f"{c['value']:.1f} vs {c['baseline_value']:.1f} audio s/s")
        if c["what"] == "extract short" and c["precision"] == "auto":
            tgt = TARGETS["extract_speedup_over_fp32"]
            add(f"extract {c['sampling']}: auto ({c['resolved']}) over fp32", c["ratio"], f">= {tgt}", c["ratio"] >= tgt,
                note=f"{c['value']:.0f}x vs {c['baseline_value']:.0f}x real time")
    train = [r for r in results.get("train", []) if "error" not in r]
    for r in train:
        if r["sampling"] != "cross_batch" or r.get("precision_requested") != "auto" or r.get("compile") or r.get("round", 0):
            continue
        name = r["config"]
        enc = roofline_fractions(r, matmul)["encoder"]
        if enc is not None:
            tgt = TARGETS["encoder_fraction_of_roofline"]
            add(f"train {name} ({r['precision']}): encoder fwd+bwd / {r['precision']} matmul rate", enc, f">= {tgt}", enc >= tgt)
        peak = r["memory"].get("peak_rss_mb")
        if r["memory"].get("cuda_peak_allocated_mb") is not None:
            peak = r["memory"]["cuda_peak_allocated_mb"]
        if name == "default":
            add(f"train {name} ({r['precision']}): peak memory MB", peak, f"< {TARGETS['step_peak_rss_mb_max']:.0f}",
                peak is not None and peak < TARGETS["step_peak_rss_mb_max"])
    for prec, ex in (results.get("extract") or {}).items():
        lg = ex.get("long")
        if lg and "error" not in lg:
            v = lg["peak_rss_mb"]
            add(f"extract {lg['audio_seconds'] / 3600:.2g} h ({lg['precision']}): peak RSS MB", v,
                f"< {TARGETS['long_extract_peak_rss_mb_max']:.0f}", v < TARGETS["long_extract_peak_rss_mb_max"])
    ld = results.get("loader") or {}
    w2 = (ld.get("workers") or {}).get("2")
    if w2 and train:
        fastest = max(train, key=_train_rate)
        need = fastest["batch"] / fastest["step_seconds"]["median"]
        have = w2["windows_per_second"]
        add(f"loader 2 workers: windows/s vs need of {fastest['config']}/{fastest['sampling']}/{fastest['precision']}", have,
            f">= {need:.1f}", have is not None and have >= need,
            note=f"loader CPU per step {w2['cpu_ms_per_window'] * fastest['batch']:.0f} ms vs step {1000 * fastest['step_seconds']['median']:.0f} ms")
    e2e = ld.get("e2e")
    if e2e and "error" not in e2e:
        add(f"loader 2 workers feeding {e2e['config']}: share of step waiting", e2e["wait_share"],
            f"<= {TARGETS['loader_wait_share_max']}", e2e["wait_share"] <= TARGETS["loader_wait_share_max"],
            note=f"step {e2e['slowdown']:.2f}x the in-memory-batch step")
    return rows


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def _label(r: Dict[str, Any]) -> str:
    """A training measurement's name: config, the precision it ran in, +compile, round."""
    label = f"{r.get('config', '?')}/{r.get('precision', r.get('precision_requested', '?'))}"
    if r.get("compile"):
        label += "+compile"
    return label + (f" #{r['round'] + 1}" if r.get("round") else "")


def format_report(res: Dict[str, Any]) -> str:
    lines: List[str] = []
    m = res["machine"]
    lines.append(f"cpc-speech bench  {m['name']}  {m['cpu_model']}  {m['usable_cores']}/{m['cores']} cores  "
                 f"torch {m['torch']} ({m['torch_cpu_capability']})  threads {m['threads']}  device {m['device']}")
    la0, la1 = res.get("load_average_start"), res.get("load_average_end")
    lines.append(f"load average at start {la0}, at end {la1}" + ("   ** machine busy: figures are noisy **"
                                                                if la0 and la0[0] > 0.5 * max(1, m["usable_cores"]) else ""))
    mm = res.get("matmul")
    if mm:
        if "error" in mm:
            lines.append(f"\nmatmul: ERROR {mm['error']}")
        else:
            lines.append(f"\nmatmul {mm['n']}x{mm['n']}: fp32 {mm['fp32']['gflops_best']:.1f} GFLOP/s best "
                         f"({mm['fp32']['gflops_median']:.1f} median), bf16 {mm['bf16']['gflops_best']:.1f} GFLOP/s (n={mm['bf16']['n']})")
            if mm.get("auto"):
                lines.append(f"precision auto = {mm['auto']['name']} ({mm['auto']['reason']})")
    train = res.get("train") or []
    if train:
        lines.append("\ntraining (median step, audio s/s [min..max], GFLOP/s, % of the matmul rate of the precision it ran in, peak RSS)")
        hdr = f"{'config':<20}{'sampling':<16}{'step s':>8}{'audio s/s':>11}{'range':>14}{'GFLOP/s':>9}{'%mm':>6}{'peak MB':>9}{'stepMB':>8}"
        lines.append(hdr)
        for r in train:
            label = _label(r)
            if "error" in r:
                lines.append(f"{label:<20}{r.get('sampling', ''):<16}ERROR {r['error']}")
                continue
            a = r["audio_seconds_per_second"]
            frac = roofline_fractions(r, mm)["step"]
            pct = 100 * frac if frac is not None else None
            lines.append(f"{label:<20}{r['sampling']:<16}{r['step_seconds']['median']:>8.3f}{a['median']:>11.2f}"
                         f"{a['min']:>7.2f}..{a['max']:<5.2f}{r['gflops_per_second']:>9.1f}{_fmt(pct, 0):>6}"
                         f"{_fmt(r['memory']['peak_rss_mb']):>9}{_fmt(r['memory']['step_peak_rss_mb']):>8}")
        if any(r.get("split") for r in train):
            lines.append("\nstep time split (staged passes; forward+backward seconds, share, achieved GFLOP/s of the part)")
            lines.append(f"{'config':<20}{'sampling':<16}" + "".join(f"{p:>18}" for p in PARTS) + f"{'sampling':>10}{'sum/step':>9}")
        for r in train:
            sp = r.get("split")
            if not sp:
                continue
            label = _label(r)
            cells = []
            for p in PARTS:
                d = sp["parts"][p]
                g = d.get("gflops_per_second")
                cells.append(f"{d['total']:>6.3f} {100 * d['share']:>3.0f}% {_fmt(g, 0) if g else '':>5}")
            lines.append(f"{label:<20}{r['sampling']:<16}" + "".join(f"{c:>18}" for c in cells)
                         + f"{sp['parts']['loss']['sampling']:>10.3f}{sp['staged_over_step']:>9.2f}")
        fl = [r for r in train if "error" not in r]
        if fl:
            lines.append("\nanalytic forward GFLOP per batch (step = 3x forward)")
            lines.append(f"{'config':<20}{'sampling':<16}{'encoder':>9}{'context':>9}{'heads':>9}{'loss':>9}{'step':>9}{'loss@1+N':>10}")
            for r in fl:
                f = r["flops"]
                lines.append(f"{r['config']:<20}{r['sampling']:<16}" + "".join(f"{f[k] / 1e9:>9.2f}" for k in ("encoder", "context", "heads", "loss", "step"))
                             + f"{f['loss_gather'] / 1e9:>10.2f}")
    ld = res.get("loader")
    if ld:
        if "error" in ld:
            lines.append(f"\nloader: ERROR {ld['error']}")
        else:
            lines.append(f"\nloader: {ld['files']} FLAC files, {ld['audio_seconds']:.0f} s, batch {ld['batch']} x {ld['window_samples']}, {ld['epochs']} epoch(s)")
            lines.append(f"{'workers':>8}{'windows/s':>11}{'incl. start':>12}{'1st batch s':>12}{'CPU ms/window':>14}")
            for w, d in ld["workers"].items():
                lines.append(f"{w:>8}{_fmt(d['windows_per_second'], 0):>11}{_fmt(d['windows_per_second_incl_startup'], 0):>12}"
                             f"{d['first_batch_seconds'].get('median', 0):>12.3f}{_fmt(d['cpu_ms_per_window']):>14}")
        e2e = ld.get("e2e")
        if e2e:
            if "error" in e2e:
                lines.append(f"  training fed by the loader: ERROR {e2e['error']}")
            else:
                lines.append(f"  {e2e['config']} training fed by {e2e['workers']} workers: step {e2e['step_seconds_with_loader']['median']:.3f} s "
                             f"(in-memory batches {e2e['step_seconds_prebuilt']['median']:.3f} s, x{e2e['slowdown']:.2f}), "
                             f"waiting for batches {100 * e2e['wait_share']:.1f}% of the step (max wait {e2e['wait_seconds']['max']:.3f} s)")
    for prec, ex in (res.get("extract") or {}).items():
        lines.append(f"\nfeature extraction (default preset, random init), precision {prec}")
        s = ex.get("short")
        if s:
            if "error" in s:
                lines.append(f"  short: ERROR {s['error']}")
            else:
                lines.append(f"  {s['audio_seconds']:.0f} s one pass ({s['precision']}): {s['rtf']:.1f}x real time (context c_t), "
                             f"{s['encoder']['rtf']:.1f}x (encoder z_t only); peak RSS {s['peak_rss_mb']:.0f} MB")
        lg = ex.get("long")
        if lg:
            if "error" in lg:
                lines.append(f"  long: ERROR {lg['error']}")
            else:
                lines.append(f"  {lg['audio_seconds']:.0f} s in {lg['chunk_seconds']:g} s chunks ({lg['precision']}): {lg['rtf']:.1f}x real time; peak RSS "
                             f"{lg['peak_rss_mb']:.0f} MB (model+torch {_fmt(lg['rss_model_mb'], 0)} MB, input {lg['input_mb']:.0f} MB, "
                             f"output {lg['output_mb']:.0f} MB)")
    cmp_rows = res.get("comparisons") or []
    if cmp_rows:
        lines.append("\nprecisions side by side (this run; ratio = precision / baseline)")
        lines.append(f"{'what':<16}{'config':<20}{'sampling':<16}{'baseline':>16}{'precision':>22}{'ratio':>8}")
        for c in cmp_rows:
            lines.append(f"{c['what']:<16}{c['config']:<20}{c['sampling']:<16}"
                         f"{c['baseline'] + ' ' + _fmt(c['baseline_value'], 1):>16}"
                         f"{c['precision'] + '=' + c['resolved'] + ' ' + _fmt(c['value'], 1):>22}{c['ratio']:>8.2f}")
    tg = res.get("targets") or []
    if tg:
        lines.append("\ntargets")
        for t in tg:
            lines.append(f"  {t['name']:<62}{_fmt(t['value']):>10}  {t['target']:<10}{_fmt(t['ok']):>5}  {t.get('note', '')}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ driver


def add_arguments(p: argparse.ArgumentParser, default_out_dir: str = "benchmarks/results") -> None:
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; for tests and a smoke check)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)} (default: all)")
    p.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                   help=f"training configurations, comma-separated, from {', '.join(CONFIGS)} (default: %(default)s)")
    p.add_argument("--sampling", default=",".join(SAMPLINGS), help="negative sampling modes to measure (default: %(default)s)")
    p.add_argument("--steps", type=int, help="timed training steps per configuration (default 12; quick 2)")
    p.add_argument("--warmup", type=int, help="untimed warm-up steps (default 2; quick 1)")
    p.add_argument("--split-steps", type=int, help="staged steps for the encoder/context/heads/loss split (default 4; 0 = skip)")
    p.add_argument("--batch", type=int, help="windows per batch (default 8)")
    p.add_argument("--window", type=int, help="samples per window (default 20480)")
    p.add_argument("--negatives", type=int, help="negatives per query (default 128)")
    p.add_argument("--long-seconds", type=float, help="length of the long extraction input (default 3600)")
    p.add_argument("--precisions", default=",".join(PRECISIONS),
                   help="precisions measured side by side, from fp32, auto, bf16, fp16 (default: %(default)s; "
                        "auto = what train.amp=auto picks on this machine)")
    p.add_argument("--rounds", type=int, default=1,
                   help="training measurements per configuration and precision, interleaved A B A B (default %(default)s)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model for training steps (A/B)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: number of usable cores)")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default: cuda when present)")
    p.add_argument("--machine", help="machine name in the results file name (default: hostname)")
    p.add_argument("--out-dir", default=default_out_dir, help="folder for <machine>-<YYYY-MM-DD>.json (default: %(default)s)")
    p.add_argument("--output", help="exact JSON path (overrides --out-dir)")
    p.add_argument("--in-process", action="store_true", help="run every measurement in this process (peaks not per configuration)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement subprocess (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")


def resolve_sizes(args) -> Sizes:
    sizes = replace(QUICK) if args.quick else Sizes()
    for name, attr in (("steps", "steps"), ("warmup", "warmup"), ("split_steps", "split_steps"), ("batch", "batch"),
                       ("window", "window"), ("negatives", "negatives"), ("long_seconds", "long_seconds")):
        v = getattr(args, name, None)
        if v is not None:
            setattr(sizes, attr, v)
    if sizes.steps < 1 or sizes.warmup < 0 or sizes.batch < 1:
        raise ValueError("--steps and --batch must be positive, --warmup non-negative")
    return sizes


def _resolve_device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {name} but CUDA is not available on this machine")
    elif name != "cpu":
        raise ValueError(f"--device must be cpu, cuda or auto, got {name!r}")
    return name


def run(args, progress=print) -> Dict[str, Any]:
    """Run the benchmarks described by parsed ``args``; returns the results dict (and writes the JSON)."""
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        raise ValueError(f"--only: unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    unknown = [s for s in presets if s not in CONFIGS]
    if unknown:
        raise ValueError(f"--presets: unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    samplings = [s.strip() for s in args.sampling.split(",") if s.strip()]
    from cpc_speech.loss.negatives import parse_sampling

    for s in samplings:
        parse_sampling(s, 128)
        if "same_speaker" in s:
            raise ValueError("--sampling: same_speaker needs speaker-grouped batches; not benchmarked")
    sizes = resolve_sizes(args)
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    bad = [s for s in precisions if s not in ("fp32", "auto", "bf16", "fp16")]
    if bad or not precisions:
        raise ValueError(f"--precisions: unknown precision(s) {bad}; choose from fp32, auto, bf16, fp16")
    if args.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    threads = args.threads if args.threads and args.threads > 0 else usable_cores()
    device = _resolve_device(args.device)
    iso = not args.in_process
    if args.in_process:
        import torch

        torch.set_num_threads(threads)
    sz = asdict(sizes)
    base = {"threads": threads, "device": device, "sizes": sz}
    results: Dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(args.machine, threads, device),
        "settings": {"quick": bool(args.quick), "sections": only, "presets": presets, "samplings": samplings,
                     "precisions": precisions, "rounds": args.rounds, "compile": bool(args.compile),
                     "isolated_subprocesses": iso, **sz},
        "load_average_start": _loadavg(),
        "targets_spec": TARGETS,
    }
    t_start = time.perf_counter()
    if "matmul" in only:
        progress(f"[bench] matmul {sizes.matmul_n}x{sizes.matmul_n} ...")
        results["matmul"] = run_job({"kind": "matmul", **base}, iso, args.timeout)
    if "train" in only:
        results["train"] = []
        for name in presets:
            for sampling in samplings:
                for rnd in range(args.rounds):
                    for prec in precisions:  # interleaved: A B A B ...
                        progress(f"[bench] train {name} {sampling} {prec} ({sizes.warmup}+{sizes.steps} steps, round {rnd + 1}) ...")
                        r = run_job({"kind": "train", "config": name, "sampling": sampling, "precision": prec,
                                     "compile": bool(args.compile), **base}, iso, args.timeout)
                        r.setdefault("config", name)
                        r.setdefault("sampling", sampling)
                        r.setdefault("precision_requested", prec)
                        r["round"] = rnd
                        results["train"].append(r)
                        if "error" not in r:
                            progress(f"[bench]   {r['precision']}: {r['audio_seconds_per_second']['median']:.2f} audio s/s, "
                                     f"step {r['step_seconds']['median']:.3f} s, {r['gflops_per_second']:.1f} GFLOP/s, "
                                     f"peak {r['memory']['peak_rss_mb']:.0f} MB")
                        else:
                            progress(f"[bench]   ERROR {r['error']}")
    if "loader" in only:
        progress("[bench] loader ...")
        results["loader"] = run_job({"kind": "loader", **base, "device": "cpu"}, iso, args.timeout)
        e2e_config = "tiny" if args.quick else "default"
        progress(f"[bench] loader feeding {e2e_config} training, 2 workers ({sizes.warmup}+{sizes.steps} steps) ...")
        results["loader"]["e2e"] = run_job({"kind": "loader_e2e", "config": e2e_config, "workers": 2, **base}, iso, args.timeout)
    if "extract" in only:
        results["extract"] = {}
        for prec in precisions:
            progress(f"[bench] extract {sizes.extract_seconds:.0f} s, {prec} ...")
            results["extract"][prec] = {"short": run_job({"kind": "extract", "precision": prec, **base}, iso, args.timeout)}
        for prec in precisions:
            progress(f"[bench] extract {sizes.long_seconds:.0f} s in chunks, {prec} ...")
            results["extract"][prec]["long"] = run_job({"kind": "extract_long", "precision": prec, **base}, iso, args.timeout)
    results["load_average_end"] = _loadavg()
    results["total_seconds"] = time.perf_counter() - t_start
    results["comparisons"] = compare_precisions(results, precisions)
    results["targets"] = evaluate_targets(results)
    out = Path(args.output) if args.output else Path(args.out_dir) / f"{_safe(results['machine']['name'])}-{datetime.date.today():%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out)
    results["_path"] = str(out)
    return results


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "machine"


def main(argv: Optional[List[str]] = None, default_out_dir: str = "benchmarks/results", prog: str = "cpc-speech bench") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--child" in argv:
        return _child_main(argv)
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(p, default_out_dir)
    args = p.parse_args(argv)
    res = run(args, progress=(lambda msg: print(msg, file=sys.stderr, flush=True)))
    path = res.pop("_path")
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
