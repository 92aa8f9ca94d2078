"""Streaming extraction speed: ``python -m benchmarks.streaming [--seconds 30] [--chunk-ms 20]``.

One intra-op thread. For each model (the ``default`` preset: 256 channels, channel norm, GRU 256;
CPC_audio's default feature model: the same encoder with an LSTM 256; the ``tiny`` preset) it pushes ``--seconds``
of audio in ``--chunk-ms`` chunks through :class:`cpc_speech.StreamingExtractor` and reports the
time per push and per 10 ms frame (median, 95th percentile) and the real-time factor (audio
seconds per compute second), next to one offline ``extract_features`` pass. Writes
``benchmarks/results/streaming-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402


def bench_model(name, model, seconds: float, chunk_ms: float, repeats: int):
    import cpc_speech
    from cpc_speech.features.streaming import StreamingExtractor

    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    step = int(round(chunk_ms * 16))
    best = None
    for _ in range(repeats):
        stream = StreamingExtractor(model)
        times, frames = [], 0
        t_all = time.perf_counter()
        for i in range(0, wav.size, step):
            t0 = time.perf_counter()
            frames += stream.push(wav[i:i + step]).shape[0]
            times.append(time.perf_counter() - t0)
        frames += stream.flush().shape[0]
        total = time.perf_counter() - t_all
        if best is None or total < best[0]:
            best = (total, times, frames)
    total, times, frames = best
    per_push = np.array(times[3:])  # the first pushes hold samples back until one receptive field
    t0 = time.perf_counter()
    offline = cpc_speech.extract_features(wav, sample_rate=16000, model=model, precision="fp32")
    offline_s = time.perf_counter() - t0
    frames_per_push = step / 160
    out = {
        "model": name,
        "chunk_ms": chunk_ms,
        "audio_seconds": seconds,
        "frames": frames,
        "push_ms_median": 1000 * float(np.median(per_push)),
        "push_ms_p95": 1000 * float(np.percentile(per_push, 95)),
        "frame_ms_median": 1000 * float(np.median(per_push)) / frames_per_push,
        "frame_ms_p95": 1000 * float(np.percentile(per_push, 95)) / frames_per_push,
        "real_time_factor": seconds / total,
        "offline_real_time_factor": seconds / offline_s,
        "offline_frames": int(offline.shape[0]),
    }
    print(f"{name}: {chunk_ms:g} ms chunks: push {out['push_ms_median']:.3f} ms median ({out['push_ms_p95']:.3f} p95), "
          f"{out['frame_ms_median']:.3f} ms per 10 ms frame, {out['real_time_factor']:.0f}x real time "
          f"(offline extract_features {out['offline_real_time_factor']:.0f}x)")
    return out


def main(argv=None) -> int:
    import torch

    from cpc_speech.config import ContextConfig, preset
    from cpc_speech.model.cpc import CPCModel

    p = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--chunk-ms", type=float, default=20.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/streaming-<date>.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cpc_audio_cfg = preset("default")
    cpc_audio_cfg.context = ContextConfig(kind="lstm", hidden=256)
    results = [bench_model(name, CPCModel(cfg).eval(), args.seconds, args.chunk_ms, args.repeats)
               for name, cfg in (("default (GRU 256)", preset("default")), ("CPC_audio default (LSTM 256)", cpc_audio_cfg),
                                 ("tiny (64 ch, GRU 64)", preset("tiny")))]
    data = {"cpu": cpu_model(), "threads": 1, "torch": torch.__version__, "command": "python -m benchmarks.streaming " + " ".join(argv or sys.argv[1:]), "results": results}
    write_results(data, "streaming", socket.gethostname(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
