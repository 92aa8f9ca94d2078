"""``cpc-speech report RUN_DIR``: report.json, report.md and plots from a run folder's logs and results.
Layout of the inputs and of report.json: see :mod:`cpc_speech.report`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="summarise a run folder (pretraining log, probe and fine-tuning results) as report.json, report.md and plots",
        description=(
            "Collect RUN_DIR/config.yaml, log.jsonl, manifests.json and the result files in RUN_DIR/results "
            "(phone_probe.json, speaker_probe.json, speaker_probe_window.json, finetune.json, finetune_*.json) into "
            "RUN_DIR/report.json, RUN_DIR/report.md and RUN_DIR/plots/*.png. A missing result file omits its section."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="pretraining run folder (the --output-dir of cpc-speech pretrain)")
    p.add_argument("--results", metavar="DIR", help="folder of the result files (default: RUN_DIR/results)")
    p.add_argument("--phone-probe", metavar="FILE", help="phone probe result JSON (default: <results>/phone_probe.json)")
    p.add_argument("--speaker-probe", metavar="FILE", help="speaker probe result JSON (default: <results>/speaker_probe.json)")
    p.add_argument("--speaker-probe-window", metavar="FILE",
                   help="window-protocol speaker probe result JSON (default: <results>/speaker_probe_window.json)")
    p.add_argument("--finetune", metavar="FILE", nargs="+", action="extend",
                   help="fine-tuning result JSON(s); several: one PER table per file, named after "
                        "finetune_<name>.json (default: <results>/finetune.json and finetune_*.json); give RUN_DIR first")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--print", dest="print_headline", action="store_true", help="also print the headline table (Markdown) to stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from cpc_speech.report import headline_markdown, write_report

    report = write_report(
        args.run_dir, plots=not args.no_plots,
        results=args.results, phone_probe=args.phone_probe, speaker_probe=args.speaker_probe,
        speaker_probe_window=args.speaker_probe_window, finetune=args.finetune,
    )
    run_dir = Path(args.run_dir)
    if args.print_headline:
        print(headline_markdown(report))
        print()
    missing = report.get("missing") or {}
    if missing:
        print("missing: " + ", ".join(missing), file=sys.stderr)
    n = len(report.get("plots") or {})
    print(f"report written to {run_dir / 'report.md'} and {run_dir / 'report.json'}"
          + (f" ({n} plot(s) in {run_dir / 'plots'})" if n else ""))
    return 0
