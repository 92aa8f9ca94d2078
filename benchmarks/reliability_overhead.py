"""Cost of the reliability checks (issue 17): the start-up header check of a manifest sample, the
run-folder lock, and checkpoint writing through memory (atomic, ENOSPC-safe) vs a direct torch.save.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reliability_overhead.py [--files 2000]

Prints a table and writes benchmarks/results/reliability-overhead-<date>.json.
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cpc_speech.audio import write_audio
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.corpora.manifest import check_headers, utterance_from_file
from cpc_speech.engine.checkpoint import save_checkpoint
from cpc_speech.model.cpc import CPCModel
from cpc_speech.runlock import hold_output


def timed(fn, repeat=5):
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wav = (0.1 * np.sin(np.arange(16000 * 2) / 20)).astype(np.float32)
        rows = []
        for i in range(args.files):
            p = tmp / "audio" / f"u{i:05d}.flac"
            write_audio(p, wav)
            rows.append(utterance_from_file(f"u{i:05d}", p, f"s{i % 20}"))
        results["header_check_256_of_%d_files_s" % args.files] = timed(lambda: check_headers(rows, "m.tsv"))
        t = []
        for _ in range(20):
            t0 = time.perf_counter()
            with hold_output(tmp / "run2", "bench"):
                pass
            t.append(time.perf_counter() - t0)
        results["lock_acquire_release_ms"] = 1000 * statistics.median(t)
        for preset in ("tiny", "default"):
            cfg = config_from_dict(PretrainConfig, {"model": {"preset": preset}})
            model = CPCModel(cfg.model)
            opt = torch.optim.Adam(model.parameters())
            for p in model.parameters():
                p.grad = torch.zeros_like(p)
            opt.step()
            extra = {"optimizer": opt.state_dict()}

            def atomic():
                save_checkpoint(tmp / "a.pt", model, cfg, **extra)

            def direct():
                state = {"format_version": 1, "config": {}, "model": model.state_dict(), **extra}
                with open(tmp / "b.pt", "wb") as f:
                    torch.save(state, f)
                    f.flush()
                    os.fsync(f.fileno())

            results[f"checkpoint_{preset}_atomic_in_memory_s"] = timed(atomic)
            results[f"checkpoint_{preset}_direct_file_s"] = timed(direct)
            results[f"checkpoint_{preset}_mb"] = (tmp / "a.pt").stat().st_size / 1e6
    for k, v in results.items():
        print(f"{k:45s} {v:10.4f}")
    out = Path(__file__).parent / "results" / f"reliability-overhead-{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
