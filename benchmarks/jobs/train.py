"""The ``train`` job: full optimizer steps of ``PretrainStep.run`` on random waveforms (step time,
audio seconds per second, achieved GFLOP/s, peak memory) and their split into encoder / context /
heads / loss / optimizer by staged passes (method in ``benchmarks/NOTES.md``)."""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict, List, Tuple

from benchmarks.configs import CONFIGS, amp_value, build_config
from benchmarks.flops import analytic_flops
from benchmarks.jobs.common import setup_torch, spread, sync
from benchmarks.machine import hwm_mb, peak_rss_mb, reset_peak_rss, rss_mb


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
    sync(device)
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        sync(device)
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
    torch = setup_torch(job["threads"], device)
    from cpc_speech.batching import Batch
    from cpc_speech.train.step import PretrainStep

    cfg, overrides = build_config(job["config"], sizes, job["sampling"], amp_value(job.get("precision", "fp32")), device,
                                  job["threads"], job.get("overrides", ()))
    B, S = sizes["batch"], sizes["window"]
    flops = analytic_flops(cfg.model, B, S, sizes["negatives"], job["sampling"], cfg.loss.shared_negatives)
    rss_start = rss_mb()
    tr = PretrainStep(cfg)  # no manifest: the batches below are random
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
        sync(device)
        t0 = time.perf_counter()
        stats = tr.run(batches[i % len(batches)])
        sync(device)
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
