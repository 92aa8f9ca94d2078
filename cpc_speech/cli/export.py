"""``cpc-speech export``: ship a trained model as a bundle or an ONNX file.

    cpc-speech export runs/cpc --format bundle --out dist/cpc-model
    cpc-speech export runs/cpc --format onnx --out dist/cpc.onnx [--layer encoder]
    cpc-speech export runs/cpc --format onnx --streaming --out dist/cpc-stream   # folder of 2 graphs
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a model as a bundle (config.json + model.safetensors + model card) or ONNX",
        description="Export RUN (a run folder, checkpoint file, bundle or CPC_audio checkpoint). bundle: OUT/config.json, "
        "OUT/model.safetensors and a generated OUT/README.md model card (load it with cpc_speech.load_model(OUT)). "
        "onnx: OUT (.onnx) maps a 16 kHz waveform (batch, samples) to features (batch, frames, dim), dynamic length; "
        "with --streaming OUT is a folder: encoder_stream.onnx and context_step.onnx with explicit state inputs/outputs "
        "(cpc_speech.onnx_export).",
    )
    p.add_argument("run", metavar="RUN", help="run folder, checkpoint file, bundle folder or CPC_audio checkpoint")
    p.add_argument("--format", choices=("bundle", "onnx"), required=True, help="what to write")
    p.add_argument("--out", "-o", required=True, help="bundle folder, or .onnx file")
    p.add_argument("--name", help="bundle: model name in the card (default: the run folder name)")
    p.add_argument("--layer", choices=("context", "encoder"), default="context", help="onnx: output c_t or z_t (default %(default)s)")
    p.add_argument("--streaming", action="store_true", help="onnx: write the streaming graphs (encoder padding and context state as inputs/outputs) into the folder OUT")
    p.add_argument("--opset", type=int, default=None, help="onnx: opset version (default: cpc_speech.onnx_export.OPSET)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.format == "bundle":
        from cpc_speech.bundle import export_bundle

        out = export_bundle(args.run, args.out, name=args.name, overwrite=args.overwrite)
        print(f"wrote bundle {out} (config.json, model.safetensors, README.md)")
        return 0
    from cpc_speech.onnx_export import OPSET, export_onnx

    out = export_onnx(args.run, args.out, layer=args.layer, streaming=args.streaming, opset=args.opset or OPSET, overwrite=args.overwrite)
    print(f"wrote {out} (opset {args.opset or OPSET}, layer {args.layer}{', streaming graphs' if args.streaming else ''})")
    return 0
