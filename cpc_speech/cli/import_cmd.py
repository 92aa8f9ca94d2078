"""``cpc-speech import``: turn another toolkit's checkpoint into a cpc_speech run folder.

    cpc-speech import cpc_audio checkpoint_32.pt --out runs/cpc_audio_ls100

(the module is ``import_cmd`` because ``import`` is a Python keyword; the subcommand is ``import``).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "import",
        help="import a CPC_audio checkpoint as a cpc_speech run folder",
        description="Convert a facebookresearch/CPC_audio checkpoint (checkpoint_<N>.pt with or without "
        "checkpoint_args.json beside it, its training folder, or the hub {config, weights} file) into a run "
        "folder OUT (config.yaml, checkpoints/best.pt) that every cpc-speech command accepts.",
    )
    p.add_argument("format", choices=("cpc_audio",), help="checkpoint format")
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint file, or a CPC_audio training folder (its last checkpoint_<N>.pt)")
    p.add_argument("--out", "-o", required=True, help="run folder to write")
    p.add_argument("--state", choices=("last", "best"), default="last",
                   help="the model state to import: last (the checkpoint's gEncoder entry) or best (its best-validation 'best' entry)")
    p.add_argument("--context-layers", type=int, metavar="N",
                   help="keep only the first N LSTM/GRU layers: features from layer N (e.g. 2 for CPC-big as in ZeroSpeech 2021)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/checkpoints/best.pt")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from cpc_speech.cpc_audio import describe, import_cpc_audio
    from cpc_speech.engine.checkpoint import load_model, resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint)
    out = import_cpc_audio(ckpt, args.out, overwrite=args.overwrite, state=args.state, context_layers=args.context_layers)
    print(f"imported {ckpt} -> {out}: {describe(load_model(out))}")
    return 0
