"""The settings of ``cpc-speech report`` as a typed dataclass (the command line is generated from
it, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from cpc_speech.settings import setting


@dataclass
class ReportConfig:
    """``cpc-speech report RUN_DIR``: which result files to collect and what to write."""

    run_dir: str = setting("", positional=True, metavar="RUN_DIR",
                           help="pretraining run folder (the --output-dir of cpc-speech pretrain)")
    results: Optional[str] = setting(None, metavar="DIR", help="folder of the result files (default: RUN_DIR/results)")
    phone_probe: Optional[str] = setting(None, metavar="FILE", help="phone probe result JSON (default: <results>/phone_probe.json)")
    speaker_probe: Optional[str] = setting(None, metavar="FILE",
                                           help="speaker probe result JSON (default: <results>/speaker_probe.json)")
    speaker_probe_window: Optional[str] = setting(
        None, metavar="FILE", help="window-protocol speaker probe result JSON (default: <results>/speaker_probe_window.json)")
    finetune: List[str] = setting(
        default_factory=list, metavar="FILE",
        help="fine-tuning result JSON(s); several: one PER table per file, named after finetune_<name>.json "
             "(default: <results>/finetune.json and finetune_*.json); give RUN_DIR first")
    plots: bool = setting(True, help="draw the PNG plots (--no-plots: skip them)")
    print_headline: bool = setting(False, aliases=("--print",), help="also print the headline table (Markdown) to stdout")

    def validate(self) -> "ReportConfig":
        if not self.run_dir:
            raise ValueError("RUN_DIR is required")
        return self
