"""The settings of ``cpc-speech abx`` and ``cpc-speech quantize`` as typed dataclasses (the
command line is generated from them, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpc_speech.settings import check_choices, check_flag_limits, require, setting

DISTANCES = ("cosine", "kl", "kl_symmetric")
FRAME_RULES = ("libri-light", "centre")
UNIT_FORMATS = ("npy", "text")


def parse_limit(text: str) -> Optional[int]:
    """A draw limit from the command line: a number, or none / 0 / all for no limit."""
    import argparse

    if text.lower() in ("none", "0", "all"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None


@dataclass
class AbxRunConfig:
    """``cpc-speech abx``: the features to score (``features`` or ``model``), the items and the
    scoring rules (:class:`cpc_speech.evaluation.abx.AbxConfig`)."""

    features: Optional[str] = setting(None, metavar="DIR", group="source",
                                      help="folder of <utterance id>.npy feature files (e.g. written by cpc-speech extract)")
    model: Optional[str] = setting(None, group="source",
                                   help="run folder or checkpoint: extract its features (and the baselines') for the items' utterances")
    item: str = setting("", metavar="FILE", help="item file: '#file onset offset #phone prev-phone next-phone speaker' lines (required)")
    out: str = setting("", metavar="R.json", help="result JSON (required)")
    mode: str = setting("within,across", help="within, across or both, comma-separated")
    distance: str = setting("cosine", choices=DISTANCES, help="frame distance: angular (cosine) or KL for posteriorgrams")
    max_size_group: Optional[int] = setting(10, parse=parse_limit, metavar="N",
                                            help="at most N items drawn per (context, speaker, phone) group ('none': all)")
    max_x_across: Optional[int] = setting(5, parse=parse_limit, metavar="N", help="across: at most N X speakers per A group ('none': all)")
    seed: int = setting(0, help="seed of the draws")
    frame_rule: str = setting("libri-light", choices=FRAME_RULES,
                              help="frames of an item: the reference scorer's cut, or every frame whose centre is in [onset, offset)")
    kl_normalised: bool = setting(False, help="KL distances on L2-normalised frames, as the reference scorer computes them "
                                  "(default: on the features as given)")
    frame_seconds: float = setting(0.01, help="feature frame step in seconds")
    name: Optional[str] = setting(None, help="--features: name of the feature set in the result (default: from DIR/meta.json, else 'features')")
    manifest: Optional[str] = setting(None, group="model", help="manifest TSV of the items' utterances (required with --model)")
    layer: str = setting("context", group="model", help="context, encoder, context.N or encoder+context")
    baselines: str = setting("mfcc,random_init", group="model", help="comma-separated subset of mfcc,random_init, or none")
    cache_dir: Optional[str] = setting(None, group="model", help="feature cache folder (default: <out stem>.cache next to --out)")
    device: Optional[str] = setting(None, group="model", help="device for feature extraction")
    workers: int = setting(2, group="model", help="audio reading threads")
    threads: int = setting(0, help="torch CPU threads (0: torch default)")

    GROUPS = {"source": "features to score (give exactly one)", "model": "with --model"}
    LIMITS = {"workers": ">= 0", "threads": ">= 0"}

    def validate(self) -> "AbxRunConfig":
        if bool(self.features) == bool(self.model):
            raise ValueError("give exactly one of --features and --model" + (" (both given)" if self.features else ""))
        require(self, ("item", "out"))
        check_flag_limits(self, self.LIMITS)
        check_choices(self, flags=True)
        if self.model and not self.manifest:
            raise ValueError("--model needs --manifest (the utterances of the item file)")
        self.scoring()
        return self

    def scoring(self):
        """The scoring rules as :class:`cpc_speech.evaluation.abx.AbxConfig` (validated)."""
        from cpc_speech.evaluation.abx import AbxConfig

        return AbxConfig(modes=tuple(m.strip() for m in self.mode.split(",") if m.strip()), distance=self.distance,
                         max_size_group=self.max_size_group, max_x_across=self.max_x_across, seed=self.seed,
                         frame_rule=self.frame_rule, kl_normalised=self.kl_normalised, frame_seconds=self.frame_seconds).validate()


@dataclass
class QuantizeConfig:
    """``cpc-speech quantize``: k-means units of a feature folder, their sequences and quality."""

    features: str = setting("", metavar="DIR", help="folder of <utterance id>.npy feature files (required)")
    units: Optional[int] = setting(None, metavar="K", help="number of units (k-means clusters) (required)")
    out: str = setting("", metavar="UNITS_DIR", help="output folder (required)")
    centroids: Optional[str] = setting(None, metavar="DIR", help="assign with the centroids of an earlier quantize run instead of fitting")
    seed: int = setting(0, help="seed of the frame sample and of k-means")
    max_fit_frames: int = setting(500_000, help="k-means is fit on at most this many frames, drawn uniformly")
    format: str = setting("npy", choices=UNIT_FORMATS, help="unit sequences as units/<id>.npy or one units.txt")
    run_length: bool = setting(False, help="write runs (unit, frames) instead of one unit per frame")
    alignments: Optional[str] = setting(None, help="frame labels (converted_aligned_phones.txt format): purity, PNMI, usage")
    item: Optional[str] = setting(None, help="ABX item file: ABX error of the one-hot units")
    results: Optional[str] = setting(None, metavar="R.json", help="also write the summary here (the report reads results/units_<name>.json)")
    threads: int = setting(0, help="torch CPU threads (0: torch default)")

    LIMITS = {"threads": ">= 0", "seed": ">= 0"}

    def validate(self) -> "QuantizeConfig":
        require(self, ("features", "out"))
        if self.units is None:
            raise ValueError("--units is required")
        check_flag_limits(self, self.LIMITS)
        check_choices(self, flags=True)
        if self.max_fit_frames < 1:
            raise ValueError(f"--max-fit-frames must be positive, got {self.max_fit_frames}")
        return self
