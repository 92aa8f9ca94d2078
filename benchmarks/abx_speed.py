"""ABX scoring speed: ``python -m benchmarks.abx_speed [--hours 1] [--dim 256] [--threads 2]``.

Generates (or reuses, ``--corpus DIR``) a synthetic corpus with ``cpc-speech synth`` (its
``abx.item`` lists every phone of every utterance), gives every utterance random frame features
(``dim`` channels at 10 ms: DTW cost does not depend on the values), and times
:func:`cpc_speech.evaluation.abx.abx_error` with the default settings (max_size_group 10,
max_x_across 5, cosine). Writes ``benchmarks/results/abx-speed-<date>.json``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, default=1.0, help="corpus size to generate (default %(default)s)")
    p.add_argument("--corpus", help="an existing synth corpus folder (with abx.item and manifest.tsv)")
    p.add_argument("--dim", type=int, default=256, help="feature channels (default %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", default="within,across")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/abx-speed-<date>.json)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.evaluation.abx import AbxConfig, abx_error
    from cpc_speech.evaluation.items import read_item_file

    corpus = Path(args.corpus) if args.corpus else None
    t_synth = None
    if corpus is None:
        from cpc_speech.synth.corpus import synthesize_corpus

        corpus = Path(tempfile.mkdtemp(prefix="abx-bench-")) / "corpus"
        speakers = 24
        per_speaker = max(1, int(round(args.hours * 3600 / 3.0 / speakers)))  # about 3 s per utterance
        t = time.time()
        synthesize_corpus(corpus, speakers=speakers, utterances=per_speaker, jobs=args.threads, progress=False)
        t_synth = time.time() - t
    rows = read_manifest(corpus / "manifest.tsv")
    rng = np.random.default_rng(0)
    feats = {r.id: rng.standard_normal((r.num_samples_16k // 160, args.dim)).astype(np.float32) for r in rows}
    hours = sum(r.duration for r in rows) / 3600
    items = read_item_file(corpus / "abx.item")
    cfg = AbxConfig(modes=tuple(args.modes.split(",")))
    t = time.time()
    res = abx_error(items, feats, cfg, log=lambda m: print(m, file=sys.stderr))
    seconds = time.time() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "benchmark": "abx_speed/1",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "corpus": str(corpus),
        "synth_seconds": t_synth,
        "audio_hours": hours,
        "utterances": len(rows),
        "items": len(items),
        "dim": args.dim,
        "config": {"modes": list(cfg.modes), "max_size_group": cfg.max_size_group, "max_x_across": cfg.max_x_across,
                   "distance": cfg.distance, "frame_rule": cfg.frame_rule},
        "seconds": seconds,
        "seconds_per_hour_of_speech": seconds / hours if hours else None,
        "details": res["details"],
        "max_rss_mb": rss_mb,
        "scores": {m: res.get(m) for m in cfg.modes},
    }
    path = write_results(out, "abx-speed", socket.gethostname(), args.out)
    print(f"ABX of {hours:.2f} h ({len(items)} items, dim {args.dim}) in {seconds:.1f} s on {args.threads} thread(s) "
          f"({out['seconds_per_hour_of_speech']:.1f} s per hour); peak RSS {rss_mb:.0f} MB -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
