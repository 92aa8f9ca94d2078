"""``cpc-speech probe {phone,speaker}``: linear probes on frozen features, with MFCC and random-init
baselines computed by the same code. Result JSON layout: see :mod:`cpc_speech.probes`."""

from __future__ import annotations

from pathlib import Path

DEFAULT_FILES = {
    "alignments": "converted_aligned_phones.txt",
    "phones": "phones.txt",
    "train_split": "train_split.txt",
    "test_split": "test_split.txt",
}


def _common(p) -> None:
    p.add_argument("--model", required=True, help="run folder or checkpoint file of the model to probe")
    p.add_argument("--manifest", required=True, help="manifest TSV; label and split files default to its folder")
    p.add_argument("--out", required=True, help="result JSON file")
    p.add_argument("--train-split", default=None, help=f"train ids, one per line (default: {DEFAULT_FILES['train_split']} next to the manifest)")
    p.add_argument("--test-split", default=None, help=f"test ids (default: {DEFAULT_FILES['test_split']} next to the manifest)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (default: <out stem>.cache next to --out)")
    p.add_argument("--layer", default="context", help="context, encoder, context.N or encoder+context (default %(default)s)")
    p.add_argument("--baselines", default="mfcc,random_init", help="comma-separated subset of mfcc,random_init (default %(default)s)")
    p.add_argument("--no-baselines", action="store_true", help="probe the model only")
    p.add_argument("--dev-fraction", type=float, default=0.1, help="share of train utterances held out for model selection (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", choices=("lbfgs", "adam"), default=None,
                   help="probe optimiser (default lbfgs: full batch; adam: mini-batches, cheaper on millions of frames)")
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs searched on dev")
    p.add_argument("--weight-decays", default=None, help="comma-separated weight-decay grid, e.g. 0,1e-4,1e-3")
    p.add_argument("--refit", action="store_true", help="retrain the selected probe on the whole train split (fit + dev) instead of keeping the best dev snapshot")
    p.add_argument("--skip-missing", action="store_true", help="drop split utterances missing from the manifest/alignments/features (with a warning) instead of failing")
    p.add_argument("--device", default=None, help="device for feature extraction (cpu, cuda, ...)")
    p.add_argument("--workers", type=int, default=2, help="audio reading threads")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def register(sub) -> None:
    p = sub.add_parser("probe", help="linear phone / speaker probes on frozen features (with MFCC and random-init baselines)")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    ph = tasks.add_parser("phone", help="frame-level phone classification (frame accuracy on the test split)")
    _common(ph)
    ph.add_argument("--alignments", default=None, help=f"frame labels, one line per utterance (default: {DEFAULT_FILES['alignments']} next to the manifest)")
    ph.add_argument("--phones", default=None, help=f"'<id> <name>' lines (default: {DEFAULT_FILES['phones']} next to the manifest, if present)")
    ph.add_argument("--context-frames", type=int, default=0, help="also feed N frames on each side (default %(default)s)")
    ph.set_defaults(func=run)
    sp = tasks.add_parser("speaker", help="speaker classification on held-out utterances of the same speakers")
    _common(sp)
    sp.add_argument("--protocol", choices=("utterance", "window"), default="utterance",
                    help="utterance: mean-pooled features per utterance; window: last c_t of 1.28 s windows (CPC paper)")
    sp.add_argument("--window-frames", type=int, default=128, help="window protocol: frames per window (default %(default)s)")
    sp.add_argument("--holdout", type=float, default=0.2,
                    help="without split files: share of each speaker's utterances held out for test (default %(default)s)")
    sp.set_defaults(func=run)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _default_file(args, key: str, required: bool):
    value = getattr(args, key, None)
    if value:
        return value
    candidate = Path(args.manifest).parent / DEFAULT_FILES[key]
    if candidate.is_file():
        return str(candidate)
    if required:
        flag = "--" + key.replace("_", "-")
        raise FileNotFoundError(f"no {flag} given and no {DEFAULT_FILES[key]} next to the manifest ({candidate})")
    return None


def run(args) -> int:
    import json
    import sys
    import warnings

    import torch

    from cpc_speech.cli import check_args
    from cpc_speech.probes.common import parse_baselines

    check_args(args, {"dev_fraction": "[0, 1)", "holdout": "(0, 1)", "workers": ">= 0", "threads": ">= 0", "seed": ">= 0",
                      "epochs": ">= 1", "context_frames": ">= 0", "window_frames": ">= 4"})
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    baselines = () if args.no_baselines else parse_baselines(args.baselines)
    common = dict(
        model=args.model, manifest=args.manifest, out=args.out, cache_dir=args.cache_dir, layer=args.layer,
        baselines=baselines, dev_fraction=args.dev_fraction, seed=args.seed, device=args.device,
        workers=args.workers, progress=not args.no_progress, skip_missing=args.skip_missing, refit=args.refit,
    )
    if args.task == "phone":
        from cpc_speech.probes.linear import FitConfig
        from cpc_speech.probes.phone import run_phone_probe

        fit = _fit_config(FitConfig(seed=args.seed), args)
        result = run_phone_probe(
            alignments=_default_file(args, "alignments", True), train_split=_default_file(args, "train_split", True),
            test_split=_default_file(args, "test_split", True), phones=_default_file(args, "phones", False),
            context_frames=args.context_frames, fit=fit, **common,
        )
    else:
        from cpc_speech.probes.speaker import run_speaker_probe, speaker_fit_config

        train = _default_file(args, "train_split", False)
        test = _default_file(args, "test_split", False)
        if (train is None) != (test is None):
            raise ValueError("give both --train-split and --test-split (or neither: per-speaker hold-out)")
        fit = _fit_config(speaker_fit_config(args.seed), args)
        result = run_speaker_probe(train_split=train, test_split=test, protocol=args.protocol,
                                   window_frames=args.window_frames, holdout_fraction=args.holdout, fit=fit, **common)
    print(f"{result['task']} probe ({result['protocol']}), test accuracy:")
    for name, entry in result["results"].items():
        print(f"  {name:12s} {entry['accuracy'] * 100:6.2f}%  (train {entry['train_utterances']} utt / {entry['train_frames']} frames, "
              f"test {entry['test_utterances']} utt / {entry['test_frames']} frames, best {json.dumps({k: entry['best'][k] for k in ('weight_decay', 'epochs')})})")
    if result.get("majority"):
        print(f"  {'majority':12s} {result['majority']['accuracy'] * 100:6.2f}%  (always {result['majority']['label']!r})")
    print(f"results in {args.out} ({result['seconds']:.1f} s)")
    return 0


def _fit_config(cfg, args):
    if args.epochs is not None:
        cfg.max_epochs = args.epochs
    if args.weight_decays:
        try:
            cfg.weight_decays = tuple(float(x) for x in args.weight_decays.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"--weight-decays must be comma-separated numbers, got {args.weight_decays!r}") from None
    if args.optimizer:
        cfg.optimizer = args.optimizer
    try:
        return cfg.validate()
    except ValueError as exc:  # name the flags
        text = str(exc).replace("weight_decays", "--weight-decays").replace("max_epochs", "--epochs")
        raise ValueError(text) from None
