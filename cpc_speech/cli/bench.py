"""``cpc-speech bench``: speed and memory benchmarks (training throughput, loader, extraction).

Thin wrapper over :mod:`cpc_speech.bench` (the same code as ``python -m benchmarks.run``).
"""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.bench import add_arguments

    p = sub.add_parser(
        "bench",
        help="measure training throughput, data loading and feature extraction speed and memory on this machine",
        description="Each measurement runs in a fresh subprocess; prints a table and writes "
        "OUT_DIR/<machine>-<YYYY-MM-DD>.json (schema in benchmarks/NOTES.md).",
    )
    add_arguments(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    from cpc_speech.bench import format_report, run as run_bench

    res = run_bench(args, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    path = res.pop("_path")
    print(json.dumps(res, indent=1) if args.json else format_report(res))
    print(f"\nwrote {path}", file=sys.stderr)
    return 0
