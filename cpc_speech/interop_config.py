"""The settings of ``cpc-speech export`` and ``cpc-speech import`` as typed dataclasses (the
command line is generated from them, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpc_speech.settings import check_choices, check_flag_limits, require, setting

EXPORT_FORMATS = ("bundle", "onnx")
ONNX_LAYERS = ("context", "encoder")
IMPORT_FORMATS = ("cpc_audio",)
IMPORT_STATES = ("last", "best")


@dataclass
class ExportConfig:
    """``cpc-speech export RUN``: a model as a bundle folder or an ONNX file."""

    run: str = setting("", positional=True, metavar="RUN",
                       help="run folder, checkpoint file, bundle folder or CPC_audio checkpoint")
    format: str = setting("", choices=EXPORT_FORMATS, help="what to write (required)")
    out: str = setting("", aliases=("-o",), help="bundle folder, or .onnx file (required)")
    name: Optional[str] = setting(None, help="bundle: model name in the card (default: the run folder name)")
    layer: str = setting("context", choices=ONNX_LAYERS, help="onnx: output c_t or z_t")
    streaming: bool = setting(False, help="onnx: write the streaming graphs (encoder padding and context state as "
                              "inputs/outputs) into the folder OUT")
    opset: Optional[int] = setting(None, help="onnx: opset version (default: cpc_speech.onnx_export.OPSET)")
    overwrite: bool = setting(False, help="replace an existing OUT")

    def validate(self) -> "ExportConfig":
        if not self.run:
            raise ValueError("RUN is required")
        require(self, ("format", "out"))
        check_choices(self, flags=True)
        if self.opset is not None:
            check_flag_limits(self, {"opset": ">= 1"})
        return self


@dataclass
class ImportConfig:
    """``cpc-speech import FORMAT CKPT``: another toolkit's checkpoint as a cpc_speech run folder."""

    format: str = setting("", positional=True, metavar="FORMAT", help="checkpoint format: cpc_audio")
    checkpoint: str = setting("", positional=True, metavar="CKPT",
                              help="checkpoint file, or a CPC_audio training folder (its last checkpoint_<N>.pt)")
    out: str = setting("", aliases=("-o",), help="run folder to write (required)")
    state: str = setting("last", choices=IMPORT_STATES,
                         help="the model state to import: last (the checkpoint's gEncoder entry) or best (its "
                              "best-validation 'best' entry)")
    context_layers: Optional[int] = setting(None, metavar="N", help="keep only the first N LSTM/GRU layers: features "
                                            "from layer N (e.g. 2 for CPC-big as in ZeroSpeech 2021)")
    overwrite: bool = setting(False, help="replace an existing OUT/checkpoints/best.pt")

    def validate(self) -> "ImportConfig":
        if not self.format or not self.checkpoint:
            raise ValueError("FORMAT and CKPT are required (e.g. cpc-speech import cpc_audio checkpoint_32.pt --out DIR)")
        if self.format not in IMPORT_FORMATS:  # a positional without argparse choices: its own message
            raise ValueError(f"FORMAT must be one of {', '.join(IMPORT_FORMATS)}, got {self.format!r}")
        require(self, ("out",))
        check_choices(self, flags=True)
        if self.context_layers is not None:
            check_flag_limits(self, {"context_layers": ">= 1"})
        return self
