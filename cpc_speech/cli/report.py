"""``cpc-speech report RUN_DIR``: report.json, report.md and plots from a run folder's logs and results.
Layout of the inputs and of report.json: see :mod:`cpc_speech.report`. The options are the fields of
:class:`~cpc_speech.report.config.ReportConfig` (generated flags, ``--config FILE``, ``key=value``)."""

from __future__ import annotations


def register(sub) -> None:
    import argparse

    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.report.config import ReportConfig

    p = sub.add_parser(
        "report",
        help="summarise a run folder (pretraining log, probe and fine-tuning results) as report.json, report.md and plots",
        description=(
            "Collect RUN_DIR/config.yaml, log.jsonl, manifests.json and the result files in RUN_DIR/results "
            "(phone_probe.json, speaker_probe.json, speaker_probe_window.json, finetune.json, finetune_*.json) into "
            "RUN_DIR/report.json, RUN_DIR/report.md and RUN_DIR/plots/*.png. A missing result file omits its section."
        ),
    )
    add_config_arguments(p, ReportConfig, skip=("finetune",))
    # several files after one flag, as the command always took them
    p.add_argument("--finetune", metavar="FILE", nargs="+", action="extend", default=argparse.SUPPRESS,
                   help=ReportConfig.__dataclass_fields__["finetune"].metadata["help"])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    from pathlib import Path

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.report import headline_markdown, write_report
    from cpc_speech.report.config import ReportConfig

    cfg = config_from_args(ReportConfig, args, where="report settings")
    report = write_report(
        cfg.run_dir, plots=cfg.plots, results=cfg.results, phone_probe=cfg.phone_probe, speaker_probe=cfg.speaker_probe,
        speaker_probe_window=cfg.speaker_probe_window, finetune=cfg.finetune or None,
    )
    run_dir = Path(cfg.run_dir)
    if cfg.print_headline:
        print(headline_markdown(report))
        print()
    missing = report.get("missing") or {}
    if missing:
        print("missing: " + ", ".join(missing), file=sys.stderr)
    n = len(report.get("plots") or {})
    print(f"report written to {run_dir / 'report.md'} and {run_dir / 'report.json'}"
          + (f" ({n} plot(s) in {run_dir / 'plots'})" if n else ""))
    return 0
