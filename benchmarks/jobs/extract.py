"""The ``extract`` jobs: ``extract_features`` real-time factor on a short input in one pass, and on a
long array (default one hour) in chunks with its peak memory."""

from __future__ import annotations

import statistics
import time
from typing import Any, Dict

from benchmarks.jobs.common import precision_fields, setup_torch, spread, sync
from benchmarks.machine import hwm_mb, peak_rss_mb, reset_peak_rss, rss_mb


def job_extract(job: Dict[str, Any]) -> Dict[str, Any]:
    """extract_features real-time factor on ``extract_seconds`` of audio (one pass)."""
    device, sizes = job["device"], job["sizes"]
    torch = setup_torch(job["threads"], device)
    import numpy as np

    from cpc_speech.config import preset
    from cpc_speech.features.api import extract_features
    from cpc_speech.model.cpc import CPCModel

    torch.manual_seed(0)
    model = CPCModel(preset(job.get("preset", "default"))).to(device).eval()
    seconds = sizes["extract_seconds"]
    wav = 0.1 * np.random.default_rng(0).standard_normal(int(seconds * 16000), dtype=np.float32)
    precision = job.get("precision", "fp32")
    extract_features(wav[: 16000 * 2], sample_rate=16000, model=model, precision=precision)  # warm-up
    out: Dict[str, Any] = {"preset": job.get("preset", "default"), "audio_seconds": seconds, "repeats": sizes["extract_repeats"],
                           **precision_fields(precision, device)}
    for layer in ("context", "encoder"):
        times = []
        for _ in range(sizes["extract_repeats"] if layer == "context" else 1):
            sync(device)
            t0 = time.perf_counter()
            feats = extract_features(wav, sample_rate=16000, model=model, layer=layer, precision=precision)
            sync(device)
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
    torch = setup_torch(job["threads"], device)
    import numpy as np

    from cpc_speech.config import preset
    from cpc_speech.features.api import extract_features
    from cpc_speech.features.inference import chunk_seconds_for
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
    sync(device)
    elapsed = time.perf_counter() - t0
    return {
        "preset": job.get("preset", "default"), "audio_seconds": seconds, "chunk_seconds": chunk_seconds,
        **precision_fields(precision, device),
        "seconds": elapsed, "rtf": seconds / elapsed, "frames": int(feats.shape[0]), "dim": int(feats.shape[1]),
        "input_mb": wav.nbytes / 2**20, "output_mb": feats.nbytes / 2**20,
        "rss_model_mb": rss_model, "rss_with_input_mb": rss_input,
        "extract_peak_rss_mb": hwm_mb() if reset_ok else None, "peak_rss_mb": peak_rss_mb(),
    }
