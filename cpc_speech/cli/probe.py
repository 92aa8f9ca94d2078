"""``cpc-speech probe {phone,speaker}``: linear probes on frozen features, with MFCC and random-init
baselines computed by the same code. Result JSON layout: see :mod:`cpc_speech.probes`. The options
are the fields of :class:`~cpc_speech.probes.config.PhoneProbeConfig` and
:class:`~cpc_speech.probes.config.SpeakerProbeConfig` (generated flags, ``--config FILE``,
``key=value``)."""

from __future__ import annotations

from pathlib import Path


def _add(tasks, name: str, cls, help_text: str) -> None:
    from cpc_speech.cli.config_args import add_config_arguments

    p = tasks.add_parser(name, help=help_text, description=help_text)
    add_config_arguments(p, cls, config_help="YAML/JSON of these settings to start from (flags override it)")
    p.add_argument("--no-baselines", action="store_true", help="probe the model only (same as --baselines none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run, config_cls=cls)


def register(sub) -> None:
    from cpc_speech.probes.config import PhoneProbeConfig, SpeakerProbeConfig

    p = sub.add_parser("probe", help="linear phone / speaker probes on frozen features (with MFCC and random-init baselines)")
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    _add(tasks, "phone", PhoneProbeConfig, "frame-level phone classification (frame accuracy on the test split)")
    _add(tasks, "speaker", SpeakerProbeConfig, "speaker classification on held-out utterances of the same speakers")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])


def _default_file(cfg, key: str, required: bool):
    from cpc_speech.probes.config import LABEL_FILES

    value = getattr(cfg, key, None)
    if value:
        return value
    candidate = Path(cfg.manifest).parent / LABEL_FILES[key]
    if candidate.is_file():
        return str(candidate)
    if required:
        flag = "--" + key.replace("_", "-")
        raise FileNotFoundError(f"no {flag} given and no {LABEL_FILES[key]} next to the manifest ({candidate})")
    return None


def run(args) -> int:
    import json
    import sys
    import warnings

    import torch

    from cpc_speech.cli.config_args import config_from_args

    cfg = config_from_args(args.config_cls, args, where="probe settings")
    if args.no_baselines:
        cfg.baselines = []
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    warnings.simplefilter("always")
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    common = dict(cfg.common_kwargs(), progress=not args.no_progress)
    if args.task == "phone":
        from cpc_speech.probes.linear import FitConfig
        from cpc_speech.probes.phone import run_phone_probe

        result = run_phone_probe(
            alignments=_default_file(cfg, "alignments", True), train_split=_default_file(cfg, "train_split", True),
            test_split=_default_file(cfg, "test_split", True), phones=_default_file(cfg, "phones", False),
            context_frames=cfg.context_frames, fit=cfg.fit_config(FitConfig(seed=cfg.seed)), **common,
        )
    else:
        from cpc_speech.probes.speaker import run_speaker_probe, speaker_fit_config

        train = _default_file(cfg, "train_split", False)
        test = _default_file(cfg, "test_split", False)
        if (train is None) != (test is None):
            raise ValueError("give both --train-split and --test-split (or neither: per-speaker hold-out)")
        result = run_speaker_probe(train_split=train, test_split=test, protocol=cfg.protocol, window_frames=cfg.window_frames,
                                   holdout_fraction=cfg.holdout, fit=cfg.fit_config(speaker_fit_config(cfg.seed)), **common)
    print(f"{result['task']} probe ({result['protocol']}), test accuracy:")
    for name, entry in result["results"].items():
        print(f"  {name:12s} {entry['accuracy'] * 100:6.2f}%  (train {entry['train_utterances']} utt / {entry['train_frames']} frames, "
              f"test {entry['test_utterances']} utt / {entry['test_frames']} frames, best {json.dumps({k: entry['best'][k] for k in ('weight_decay', 'epochs')})})")
    if result.get("majority"):
        print(f"  {'majority':12s} {result['majority']['accuracy'] * 100:6.2f}%  (always {result['majority']['label']!r})")
    print(f"results in {cfg.out} ({result['seconds']:.1f} s)")
    return 0
