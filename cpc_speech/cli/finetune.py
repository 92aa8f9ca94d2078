"""``cpc-speech finetune``: CTC phone recognition with limited labels, with MFCC and from-scratch baselines."""

from __future__ import annotations

CONDITION_HELP = "frozen, unfrozen, mfcc, scratch"


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.finetune.config import FinetuneConfig

    p = sub.add_parser(
        "finetune",
        help="train a CTC phone recogniser on a pretrained model with limited labels (+ MFCC / from-scratch baselines)",
        description=(
            "Train a small CTC head over phone sequences on top of a pretrained model's features: frozen "
            "(features cached once) and/or fine-tuned end to end, plus the same head on MFCCs and the same "
            "architecture trained from random init. The best epoch is picked on dev PER; test PER is "
            "reported for it only. Results go to --out as JSON; --output-dir keeps per-condition "
            "checkpoints for --resume. Every setting of FinetuneConfig is a flag below, a key of the "
            "--config file, or a key=value override."
        ),
    )
    add_config_arguments(p, FinetuneConfig, groups=GROUPS, skip=("conditions",),
                         config_help="a finetune_config.yaml (or any YAML of these settings) to start from; flags override it")
    cond = p.add_argument_group(GROUPS["conditions"])
    mode = cond.add_mutually_exclusive_group()
    mode.add_argument("--freeze", dest="freeze", action="store_true", default=None, help="pretrained model kept fixed (condition 'frozen')")
    mode.add_argument("--no-freeze", dest="freeze", action="store_false", help="pretrained model fine-tuned too (condition 'unfrozen')")
    mode.add_argument("--from-scratch", action="store_true", help="no pretrained conditions: train the architecture from random init ('scratch')")
    cond.add_argument("--baselines", help="comma list of mfcc, scratch, or 'none' (default: mfcc,scratch)")
    cond.add_argument("--conditions", help=f"comma list overriding the above: {CONDITION_HELP} (default: all four)")
    out = p.add_argument_group("output")
    out.add_argument("--out", help="write the result JSON here")
    out.add_argument("--resume", action="store_true", help="skip finished conditions and continue an interrupted one in --output-dir")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


GROUPS = {"data": "data", "conditions": "conditions", "head": "head", "train": "training",
          "decode": "decoding (the best epoch, on dev and test)", "run": "device and run folder"}


def _conditions(args, default):
    from cpc_speech.finetune.config import CONDITIONS

    def parse(text, allowed, what):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items in (["none"], []):
            return []
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ValueError(f"{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return items

    if args.conditions:
        return parse(args.conditions, CONDITIONS, "--conditions")
    if args.freeze is None and not args.from_scratch and args.baselines is None:
        return list(default)
    pretrained = [] if args.from_scratch else (["frozen"] if args.freeze else ["unfrozen"] if args.freeze is False else ["frozen", "unfrozen"])
    baselines = parse(args.baselines if args.baselines is not None else "mfcc,scratch", ("mfcc", "scratch"), "--baselines")
    if args.from_scratch and "scratch" not in baselines:
        baselines.append("scratch")
    chosen = [c for c in CONDITIONS if c in pretrained + baselines]
    if not chosen:
        raise ValueError("no condition left to run (check --freeze/--no-freeze/--from-scratch and --baselines)")
    return chosen


def run(args) -> int:
    import json
    from pathlib import Path

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.finetune.config import CONFIG_NAME, FinetuneConfig, read_settings
    from cpc_speech.finetune.run import run_finetune

    config_file = args.config
    if config_file is None and args.resume and getattr(args, "output_dir", None) and (Path(args.output_dir) / CONFIG_NAME).is_file():
        config_file = str(Path(args.output_dir) / CONFIG_NAME)
    cfg = config_from_args(FinetuneConfig, args, config_file=config_file, read=read_settings, where="finetune config",
                           validate=False, skip=("conditions",))
    cfg.conditions = _conditions(args, cfg.conditions)
    cfg = cfg.validate()
    result = run_finetune(cfg, progress=not args.no_progress, resume=args.resume, out=args.out)
    rows = [("condition", "dev PER", "test PER", "test S/D/I", "best ep", "epochs", "train h", "utts", "seconds")]
    for name, r in result["finetune"].items():
        errors = r.get("test_errors")
        rows.append(
            (
                name,
                f"{r['per_dev']:.4f}",
                "-" if r["per_test"] is None else f"{r['per_test']:.4f}",
                f"{errors['substitutions']}/{errors['deletions']}/{errors['insertions']}" if errors else "-",
                str(r["best_epoch"]),
                str(r["epochs_run"]),
                f"{r['train_hours']:.3f}",
                str(r["train_utterances"]),
                f"{r['seconds']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if args.out:
        print(f"result written to {args.out}")
    elif not cfg.output_dir:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
    return 0

