"""Can the loader augment fast enough? ``python -m benchmarks.augment_loader``.

Times the training data loader over a generated FLAC corpus (12 s files) with and without
``data.augment`` (every transform of :mod:`cpc_speech.augment` at its default range, each with
probability ``--p``), for 0, 1 and 2 worker processes, interleaved. Prints windows per second and
the worker CPU milliseconds per window, and how many workers keep up with a training step of
``--step-seconds`` (a `default` step at batch 8 reads 8 windows); writes JSON
(``benchmarks/results/augment-loader-<machine>-<date>.json``).
"""

from __future__ import annotations

import argparse
import datetime
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from benchmarks.results_file import write_results

    p = argparse.ArgumentParser(prog="python -m benchmarks.augment_loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--p", type=float, default=0.5, help="probability of each transform (default %(default)s)")
    p.add_argument("--batches", type=int, default=12, help="batches per measurement (default %(default)s)")
    p.add_argument("--step-seconds", type=float, default=0.25, help="training step to keep up with (default %(default)s)")
    p.add_argument("--output", help="JSON path")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from cpc_speech.audio import write_audio
    from cpc_speech.augment import KINDS
    from cpc_speech.batching import make_loader
    from benchmarks.machine import cpu_model
    from cpc_speech.config import AugmentConfig, AugmentStep, DataConfig
    from cpc_speech.corpora.manifest import utterance_from_file

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    res = {"schema": "cpc_speech.augment_loader/1", "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": socket.gethostname(), "cpu_model": cpu_model(), "p": args.p, "runs": []}
    with tempfile.TemporaryDirectory() as td:
        rows = []
        for i in range(10):
            path = Path(td) / f"u{i}.flac"
            write_audio(path, (0.1 * rng.standard_normal(16000 * 12)).astype(np.float32))
            rows.append(utterance_from_file(f"u{i}", path, f"s{i % 3}"))
        steps = [AugmentStep(k, p=args.p) for k in KINDS]
        for workers in (0, 1, 2):
            for label, aug in (("clean", AugmentConfig()), ("augmented", AugmentConfig(steps, apply_to="past"))):
                cfg = DataConfig(batch_size=8, num_workers=workers, augment=aug)
                loader, sampler = make_loader(rows, cfg, seed=0)
                sampler.set_epoch(0)
                t0, n = time.perf_counter(), 0
                for epoch in range(100):
                    sampler.set_epoch(epoch)
                    for batch in loader:
                        n += batch.wav.shape[0]
                        if n >= args.batches * 8:
                            break
                    if n >= args.batches * 8:
                        break
                sec = time.perf_counter() - t0
                run = {"workers": workers, "augment": label, "windows": n, "seconds": sec, "windows_per_second": n / sec}
                res["runs"].append(run)
                print(f"{workers} worker(s), {label:<9}: {run['windows_per_second']:7.1f} windows/s "
                      f"({1000 * sec / n:.1f} ms per window, start-up included)", flush=True)
    need = 8 / args.step_seconds
    aug0 = next(r for r in res["runs"] if r["workers"] == 0 and r["augment"] == "augmented")
    res["needed_windows_per_second"] = need
    res["workers_needed_estimate"] = need / aug0["windows_per_second"]
    print(f"a step of {args.step_seconds} s at batch 8 needs {need:.0f} windows/s: about "
          f"{res['workers_needed_estimate']:.1f} worker(s) of augmentation at one core each")
    write_results(res, "augment-loader", res["machine"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
