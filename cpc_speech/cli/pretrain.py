"""``cpc-speech pretrain``: CPC pretraining on a manifest of untranscribed audio.

Single process: ``cpc-speech pretrain --config conf.yaml --train-manifest M --output-dir DIR``.
Several processes/GPUs/nodes: ``torchrun --nproc-per-node N -m cpc_speech.cli pretrain ...``.
Re-running with the same DIR resumes from ``DIR/checkpoints/last.pt``.

Settings: the :class:`~cpc_speech.config.PretrainConfig` of ``--config FILE[:SECTION]``, then
``key=value`` overrides (``train.lr=5e-4``), then the dotted flags generated from its scalar fields
(``--train.lr 5e-4``, ``--data.batch-size 16``; one ``--help`` group per section).
"""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_nested_arguments
    from cpc_speech.config import PretrainConfig

    p = sub.add_parser("pretrain", usage="cpc-speech pretrain --train-manifest TSV --output-dir DIR [--config FILE[:SECTION]] "
                       "[--valid-manifest TSV] [options] [--SECTION.KEY VALUE ...] [key=value ...]",
                       help="pretrain a CPC model on untranscribed audio (resumable, distributed with torchrun)",
                       description="Pretrain a CPC model. Settings: --config FILE[:SECTION] (a PretrainConfig), then key=value "
                       "overrides, then the --SECTION.KEY flags below (flags win).")
    p.add_argument("--config", metavar="FILE[:SECTION]",
                   help="YAML/JSON PretrainConfig (sections model/loss/data/train; model.preset picks a preset)")
    p.add_argument("--preset", help="model preset when no config names one: paper | default | tiny")
    p.add_argument("--train-manifest", required=True, help="manifest TSV of training audio")
    p.add_argument("--valid-manifest", help="manifest TSV of held-out audio for validation loss/accuracy")
    p.add_argument("--output-dir", required=True, help="run folder (config, logs, checkpoints)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output-dir (also the default when it has a checkpoint)")
    p.add_argument("--restart", action="store_true", help="delete the checkpoints and log in --output-dir and start over")
    p.add_argument("--trust-manifest", action="store_true",
                   help="skip the start-up check of a sample of manifest rows against their audio headers")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=5e-4 data.batch_size=16")
    add_nested_arguments(p, PretrainConfig)
    p.set_defaults(func=run)


def settings_from_args(args):
    """The :class:`~cpc_speech.config.PretrainConfig` of the command line: ``--config`` file (or
    section), ``--preset``, then ``key=value`` overrides, then the dotted flags given."""
    from cpc_speech.cli.config_args import nested_flags
    from cpc_speech.config import PretrainConfig, config_from_dict
    from cpc_speech.settings import apply_overrides, deep_merge, read_settings_file

    data = read_settings_file(args.config) if args.config else {}
    if args.preset:
        data.setdefault("model", {}).setdefault("preset", args.preset)
    data = deep_merge(apply_overrides(data, args.overrides), nested_flags(args))  # file < key=value < flags
    return config_from_dict(PretrainConfig, data, where=args.config or "config")


def run(args) -> int:
    import contextlib
    import shutil
    from pathlib import Path

    from cpc_speech.engine.distributed import is_main_process
    from cpc_speech.runlock import hold_output
    from cpc_speech.train.trainer import pretrain

    cfg = settings_from_args(args)
    out = Path(args.output_dir)
    with hold_output(out, "pretrain") if is_main_process() else contextlib.nullcontext():
        if args.restart and out.exists():
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            for name in ("log.jsonl", "tensorboard"):
                target = out / name
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        if args.resume and not (out / "checkpoints" / "last.pt").is_file():
            print(f"note: nothing to resume in {out}; starting a new run")
        summary = pretrain(cfg, args.train_manifest, str(out), args.valid_manifest, progress=not args.no_progress,
                           trust_manifest=args.trust_manifest)
    if summary.get("rank", 0) == 0:
        print(f"pretraining {'finished' if summary['finished'] else 'stopped'} at step {summary['step']}; run folder {out}")
    return 0
