"""The settings of ``cpc-speech probe phone|speaker`` as typed dataclasses (the command line is
generated from them, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from cpc_speech.settings import check_choices, check_flag_limits, require, setting
from cpc_speech.probes.common import BASELINES, parse_baselines

LABEL_FILES = {  # looked for next to the manifest when not given
    "alignments": "converted_aligned_phones.txt",
    "phones": "phones.txt",
    "train_split": "train_split.txt",
    "test_split": "test_split.txt",
}
SPEAKER_PROTOCOLS = ("utterance", "window")


def _floats(text: str) -> List[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _baselines(text: str) -> List[str]:
    try:
        return list(parse_baselines(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@dataclass
class ProbeConfig:
    """Settings both probes share."""

    model: str = setting("", path=True, help="run folder or checkpoint file of the model to probe (required)")
    manifest: str = setting("", path=True, help="manifest TSV; label and split files default to its folder (required)")
    out: str = setting("", path=True, help="result JSON file (required)")
    train_split: Optional[str] = setting(None, path=True, help=f"train ids, one per line ({LABEL_FILES['train_split']} next to the manifest when absent)")
    test_split: Optional[str] = setting(None, path=True, help=f"test ids ({LABEL_FILES['test_split']} next to the manifest when absent)")
    cache_dir: Optional[str] = setting(None, path=True, help="feature cache folder (None: <out stem>.cache next to --out)")
    layer: str = setting("context", help="context, encoder, context.N or encoder+context")
    baselines: List[str] = setting(default_factory=lambda: list(BASELINES), parse=_baselines,
                                   help="comma-separated subset of mfcc,random_init, or none")
    dev_fraction: float = setting(0.1, help="share of train utterances held out for model selection")
    seed: int = setting(0, help="seed of the dev split, the baselines' random init and the probe")
    optimizer: Optional[str] = setting(None, choices=("lbfgs", "adam"),
                                       help="probe optimiser (None: the task's default, lbfgs full batch; adam: mini-batches, cheaper on millions of frames)")
    epochs: Optional[int] = setting(None, help="maximum epochs searched on dev (None: the task's default)")
    weight_decays: Optional[List[float]] = setting(None, parse=_floats, help="comma-separated weight-decay grid, e.g. 0,1e-4,1e-3 (None: the task's default)")
    refit: bool = setting(False, help="retrain the selected probe on the whole train split (fit + dev) instead of keeping the best dev snapshot")
    skip_missing: bool = setting(False, help="drop split utterances missing from the manifest/alignments/features (with a warning) instead of failing")
    device: Optional[str] = setting(None, help="device for feature extraction (cpu, cuda, ...)")
    workers: int = setting(2, help="audio reading threads")
    threads: int = setting(0, help="torch CPU threads (0: torch default)")

    LIMITS = {"dev_fraction": "[0, 1)", "workers": ">= 0", "threads": ">= 0", "seed": ">= 0", "epochs": "null or >= 1"}

    def validate(self) -> "ProbeConfig":
        require(self, ("model", "manifest", "out"))
        check_flag_limits(self, self.LIMITS)  # "--dev-fraction must be in [0, 1), got 1.5"
        check_choices(self, flags=True)
        if self.weight_decays is not None and not self.weight_decays:
            raise ValueError("--weight-decays: give at least one number")
        return self

    def fit_config(self, base):
        """``base`` (a :class:`~cpc_speech.probes.linear.FitConfig`) with the flags that were set."""
        if self.epochs is not None:
            base.max_epochs = self.epochs
        if self.weight_decays is not None:
            base.weight_decays = tuple(self.weight_decays)
        if self.optimizer:
            base.optimizer = self.optimizer
        try:
            return base.validate()
        except ValueError as exc:  # name the flags
            raise ValueError(str(exc).replace("weight_decays", "--weight-decays").replace("max_epochs", "--epochs")) from None

    def common_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments shared by :func:`run_phone_probe` and :func:`run_speaker_probe`."""
        return dict(model=self.model, manifest=self.manifest, out=self.out, cache_dir=self.cache_dir, layer=self.layer,
                    baselines=tuple(self.baselines), dev_fraction=self.dev_fraction, seed=self.seed, device=self.device,
                    workers=self.workers, skip_missing=self.skip_missing, refit=self.refit)


@dataclass
class PhoneProbeConfig(ProbeConfig):
    """``cpc-speech probe phone``: frame-level phone classification."""

    alignments: Optional[str] = setting(None, path=True, help=f"frame labels, one line per utterance ({LABEL_FILES['alignments']} next to the manifest when absent)")
    phones: Optional[str] = setting(None, path=True, help=f"'<id> <name>' lines ({LABEL_FILES['phones']} next to the manifest, if present)")
    context_frames: int = setting(0, help="also feed N frames on each side")

    LIMITS = {**ProbeConfig.LIMITS, "context_frames": ">= 0"}


@dataclass
class SpeakerProbeConfig(ProbeConfig):
    """``cpc-speech probe speaker``: speaker classification on held-out utterances of the same speakers."""

    protocol: str = setting("utterance", choices=SPEAKER_PROTOCOLS,
                            help="utterance: mean-pooled features per utterance; window: last c_t of 1.28 s windows (CPC paper)")
    window_frames: int = setting(128, help="window protocol: frames per window")
    holdout: float = setting(0.2, help="without split files: share of each speaker's utterances held out for test")

    LIMITS = {**ProbeConfig.LIMITS, "window_frames": ">= 4", "holdout": "(0, 1)"}
