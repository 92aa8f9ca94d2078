"""Speed and memory benchmarks of cpc_speech: ``make bench`` / ``python -m benchmarks.run``.

One run measures, on the current machine and with an explicit number of torch threads:

* ``matmul``: fp32 (and bf16) square matmul rate, the GFLOP/s ceiling of the machine;
* ``train``: full optimizer steps (forward, InfoNCE with negative sampling, backward, Adam) per model
  configuration, negative-sampling mode and precision: step time (median and spread, warm-up
  excluded), seconds of audio per second, achieved GFLOP/s from an analytic FLOP count
  (:mod:`benchmarks.flops`), the share of the step spent in encoder / context / heads / loss /
  optimizer, and peak memory (:mod:`benchmarks.jobs.train`);
* ``loader``: windows per second of :func:`cpc_speech.batching.make_loader` over a generated FLAC
  corpus with 0, 1 and 2 workers, and training fed by it (:mod:`benchmarks.jobs.loader`);
* ``extract``: :func:`cpc_speech.features.extract_features` real-time factor on 60 s of audio and on a
  one-hour array processed in chunks, with peak RSS (:mod:`benchmarks.jobs.extract`).

Every measurement runs in a fresh Python subprocess (:mod:`benchmarks.jobs`). Results are printed as
a table (:mod:`benchmarks.report`) and written as JSON (schema :data:`SCHEMA`, documented in
``benchmarks/NOTES.md``) to ``benchmarks/results/<machine>-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

from benchmarks.configs import CONFIGS, DEFAULT_PRESETS, PRECISIONS, QUICK, SAMPLINGS, SECTIONS, Sizes
from benchmarks.jobs import run_job
from benchmarks.machine import loadavg, machine_info, usable_cores
from benchmarks.report import compare_precisions, evaluate_targets, format_report, load_targets
from benchmarks.results_file import RESULTS
from cpc_speech.atomic import atomic_write_text

SCHEMA = "cpc_speech.bench/1"


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m benchmarks.run``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
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
    p.add_argument("--out-dir", default=str(RESULTS), help="folder for <machine>-<YYYY-MM-DD>.json (default: benchmarks/results)")
    p.add_argument("--output", help="exact JSON path (overrides --out-dir)")
    p.add_argument("--in-process", action="store_true", help="run every measurement in this process (peaks not per configuration)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per measurement subprocess (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    return p


def resolve_sizes(args) -> Sizes:
    """The default (or ``--quick``) sizes with the size options of ``args`` applied."""
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
    targets = load_targets()
    sz = asdict(sizes)
    base = {"threads": threads, "device": device, "sizes": sz}
    results: Dict[str, Any] = {
        "schema": SCHEMA,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(args.machine, threads, device),
        "settings": {"quick": bool(args.quick), "sections": only, "presets": presets, "samplings": samplings,
                     "precisions": precisions, "rounds": args.rounds, "compile": bool(args.compile),
                     "isolated_subprocesses": iso, **sz},
        "load_average_start": loadavg(),
        "targets_spec": targets,
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
    results["load_average_end"] = loadavg()
    results["total_seconds"] = time.perf_counter() - t_start
    results["comparisons"] = compare_precisions(results, precisions)
    results["targets"] = evaluate_targets(results, targets)
    out = Path(args.output) if args.output else Path(args.out_dir) / f"{_safe(results['machine']['name'])}-{datetime.date.today():%Y-%m-%d}.json"
    atomic_write_text(out, json.dumps(results, indent=1))
    results["_path"] = str(out)
    return results


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "machine"


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, run, print the table (or ``--json``) and the results path. Bad options raise ValueError."""
    args = build_parser().parse_args(argv)
    res = run(args, progress=(lambda msg: print(msg, file=sys.stderr, flush=True)))
    path = res.pop("_path")
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from cpc_speech.cli import USER_ERRORS, error_message

    try:
        sys.exit(main())
    except USER_ERRORS as exc:  # one line, as the cpc-speech commands print them
        print(f"python -m benchmarks.run: error: {error_message(exc)}", file=sys.stderr)
        sys.exit(2)

