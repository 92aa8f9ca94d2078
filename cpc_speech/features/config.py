"""The settings of ``cpc-speech extract`` as a typed dataclass (the command line is generated from
it, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpc_speech.settings import check_choices, check_flag_limits, require, setting

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class ExtractConfig:
    """``cpc-speech extract``: per-frame features of every utterance of a manifest into a folder."""

    model: str = setting("", help="run folder or checkpoint file, or 'mfcc' for the MFCC baseline (required)")
    manifest: str = setting("", help="manifest TSV (id, path, speaker, num_samples, sample_rate) (required)")
    out: str = setting("", help="output folder (required)")
    layer: str = setting("context", help="c_t (context), z_t (encoder), context.N (layer N of a multi-layer context) "
                         "or encoder+context (concatenated)")
    device: Optional[str] = setting(None, help="cpu, cuda, cuda:N (default: cpu)")
    precision: str = setting("auto", choices=PRECISIONS,
                             help="arithmetic of the model: auto = bf16 where the CPU computes it fast, else fp32")
    workers: int = setting(2, help="audio reading threads per process")
    processes: int = setting(1, help="worker processes, each with its share of the torch threads (1: the chunks of "
                             "all files form one stream that keeps every thread busy)")
    float16: bool = setting(False, help="store float16 instead of float32")
    batch_seconds: float = setting(40.0, help="padded audio per model batch, in seconds")
    threads: int = setting(0, help="torch CPU threads (0: torch default)")

    LIMITS = {"workers": ">= 0", "threads": ">= 0", "batch_seconds": "> 0", "processes": ">= 1"}

    def validate(self) -> "ExtractConfig":
        require(self, ("model", "manifest", "out"))
        check_flag_limits(self, self.LIMITS)
        check_choices(self, flags=True)
        return self
