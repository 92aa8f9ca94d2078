"""Peak memory of the data pipeline on a 100-hour manifest (issue: streaming, bounded memory).

Writes a synthetic manifest of ``--hours`` of audio (rows of ``--seconds`` each) whose rows all point
at a few real FLAC files, builds the window sampler and a DataLoader with ``--workers`` workers, reads
``--batches`` batches, and reports the peak RSS of the main process and of the workers (audio is read
lazily, so memory must not grow with the corpus)::

    python -m benchmarks.loader_memory --hours 100
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=100.0)
    p.add_argument("--seconds", type=float, default=12.0, help="duration of each manifest row")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batches", type=int, default=50)
    p.add_argument("--output", default=None, help="JSON file for the figures")
    args = p.parse_args()

    import torch

    from cpc_speech.audio import write_audio
    from cpc_speech.batching import make_loader
    from cpc_speech.config import DataConfig
    from cpc_speech.corpora.manifest import Utterance, read_manifest, write_manifest

    torch.set_num_threads(1)
    base = rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = int(args.seconds * 16000)
        files = []
        for i in range(4):
            path = tmp / f"a{i}.flac"
            write_audio(path, (0.1 * np.random.default_rng(i).standard_normal(n)).astype(np.float32))
            files.append(path)
        count = int(args.hours * 3600 / args.seconds)
        rows = [Utterance(f"u{i:07d}", str(files[i % 4]), f"s{i % 2000}", n, 16000) for i in range(count)]
        write_manifest(rows, tmp / "m.tsv")
        del rows
        t0 = time.time()
        rows = read_manifest(tmp / "m.tsv")
        after_manifest = rss_mb()
        loader, sampler = make_loader(rows, DataConfig(num_workers=args.workers), seed=0)
        sampler.set_epoch(0)
        after_sampler = rss_mb()
        got = 0
        for batch in loader:
            got += 1
            if got >= args.batches:
                break
        elapsed = time.time() - t0
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "hours": args.hours, "rows": count, "windows_per_epoch": len(sampler) * 8, "workers": args.workers,
        "batches_read": got, "seconds": round(elapsed, 1),
        "rss_mb_start": round(base), "rss_mb_after_manifest": round(after_manifest),
        "rss_mb_after_sampler": round(after_sampler), "rss_mb_peak_main": round(rss_mb()),
        "rss_mb_peak_worker": round(children),
    }
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
