"""The ``loader`` jobs: windows per second of ``make_loader`` over a generated FLAC corpus with 0, 1
and 2 workers and its CPU cost per window; and training steps fed by the loader against the same
steps on batches already in memory (``loader_e2e``)."""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from benchmarks.configs import build_config
from benchmarks.jobs.common import setup_torch, spread, sync
from benchmarks.machine import cpu_seconds


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
    setup_torch(job["threads"], "cpu")
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
    setup_torch(job["threads"], device)
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
            sync(device)
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
            sync(device)
            prebuilt.append(time.perf_counter() - t0)
    a, b = spread(with_loader), spread(prebuilt)
    return {"config": job["config"], "workers": workers, "steps": steps, "warmup": warmup, **info,
            "wait_seconds": spread(waits), "step_seconds_with_loader": a, "step_seconds_prebuilt": b,
            "slowdown": a["median"] / b["median"], "wait_share": statistics.fmean(waits) / a["mean"]}
