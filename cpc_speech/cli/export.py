"""``cpc-speech export``: ship a trained model as a bundle or an ONNX file.

    cpc-speech export runs/cpc --format bundle --out dist/cpc-model
    cpc-speech export runs/cpc --format onnx --out dist/cpc.onnx [--layer encoder]
    cpc-speech export runs/cpc --format onnx --streaming --out dist/cpc-stream   # folder of 2 graphs

The options are the fields of :class:`~cpc_speech.interop_config.ExportConfig` (generated flags,
``--config FILE``, ``key=value``).
"""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.interop_config import ExportConfig

    p = sub.add_parser(
        "export",
        help="export a model as a bundle (config.json + model.safetensors + model card) or ONNX",
        description="Export RUN (a run folder, checkpoint file, bundle or CPC_audio checkpoint). bundle: OUT/config.json, "
        "OUT/model.safetensors and a generated OUT/README.md model card (load it with cpc_speech.load_model(OUT)). "
        "onnx: OUT (.onnx) maps a 16 kHz waveform (batch, samples) to features (batch, frames, dim), dynamic length; "
        "with --streaming OUT is a folder: encoder_stream.onnx and context_step.onnx with explicit state inputs/outputs "
        "(cpc_speech.onnx_export).",
    )
    add_config_arguments(p, ExportConfig)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.interop_config import ExportConfig

    cfg = config_from_args(ExportConfig, args, where="export settings")
    if cfg.format == "bundle":
        from cpc_speech.bundle import export_bundle

        out = export_bundle(cfg.run, cfg.out, name=cfg.name, overwrite=cfg.overwrite)
        print(f"wrote bundle {out} (config.json, model.safetensors, README.md)")
        return 0
    from cpc_speech.onnx_export import OPSET, export_onnx

    opset = cfg.opset or OPSET
    out = export_onnx(cfg.run, cfg.out, layer=cfg.layer, streaming=cfg.streaming, opset=opset, overwrite=cfg.overwrite)
    print(f"wrote {out} (opset {opset}, layer {cfg.layer}{', streaming graphs' if cfg.streaming else ''})")
    return 0
