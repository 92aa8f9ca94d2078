"""``cpc-speech import``: turn another toolkit's checkpoint into a cpc_speech run folder.

    cpc-speech import cpc_audio checkpoint_32.pt --out runs/cpc_audio_ls100

(the module is ``import_cmd`` because ``import`` is a Python keyword; the subcommand is ``import``).
The options are the fields of :class:`~cpc_speech.interop_config.ImportConfig` (generated flags,
``--config FILE``, ``key=value``).
"""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.interop_config import ImportConfig

    p = sub.add_parser(
        "import",
        help="import a CPC_audio checkpoint as a cpc_speech run folder",
        description="Convert a facebookresearch/CPC_audio checkpoint (checkpoint_<N>.pt with or without "
        "checkpoint_args.json beside it, its training folder, or the hub {config, weights} file) into a run "
        "folder OUT (config.yaml, checkpoints/best.pt) that every cpc-speech command accepts.",
    )
    add_config_arguments(p, ImportConfig)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.cpc_audio import describe, import_cpc_audio
    from cpc_speech.engine.checkpoint import load_model, resolve_checkpoint
    from cpc_speech.interop_config import ImportConfig

    cfg = config_from_args(ImportConfig, args, where="import settings")
    ckpt = resolve_checkpoint(cfg.checkpoint)
    out = import_cpc_audio(ckpt, cfg.out, overwrite=cfg.overwrite, state=cfg.state, context_layers=cfg.context_layers)
    print(f"imported {ckpt} -> {out}: {describe(load_model(out))}")
    return 0
