"""The settings of ``cpc-speech synth`` as a typed dataclass (the command line is generated from
it, :mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpc_speech.settings import check_choices, check_flag_limits, setting
from cpc_speech.synth.conditions import CHANNELS
from cpc_speech.synth.layouts import LAYOUTS


@dataclass
class SynthConfig:
    """``cpc-speech synth``: the corpus to generate (speakers, utterances, languages, layout) and
    its recording conditions (:class:`~cpc_speech.synth.conditions.SynthConditions`)."""

    out_dir: str = setting("", positional=True, metavar="OUT_DIR", help="output folder (new or empty)")
    speakers: int = setting(16, help="speakers per language")
    utterances: int = setting(20, help="utterances per speaker")
    languages: str = setting("en-us", help="comma-separated: en-us (alias en), fr, es, de, it; the librispeech layout takes one")
    seed: int = setting(0, help="everything derives from it")
    layout: str = setting("librispeech", choices=LAYOUTS, help="folder layout and audio format")
    jobs: int = setting(2, help="worker processes")
    test_fraction: float = setting(0.2, help="share of each speaker's utterances in test_split.txt, at least one")
    subset: str = setting("train-clean-100", help="LibriSpeech subset folder name")
    variability: float = setting(0.0, group="conditions",
                                 help="0-1: per-utterance rate/pitch/range/pause changes and per-speaker vocal-tract scaling")
    channel: str = setting("clean", group="conditions", choices=CHANNELS,
                           help="telephone: 300-3400 Hz band; gsm: that band through the GSM 06.10 codec")
    snr: Optional[str] = setting(None, group="conditions",
                                 help="additive coloured noise at an SNR in dB, DB or LOW:HIGH drawn per utterance (default: none)")
    reverb: float = setting(0.0, group="conditions", help="share of utterances with a generated room reverberation")
    overwrite: bool = setting(False, help="write into a non-empty OUT_DIR")

    GROUPS = {"conditions": "recording conditions (default: clean, as eSpeak NG renders it)"}

    def validate(self) -> "SynthConfig":
        if not self.out_dir:
            raise ValueError("OUT_DIR is required")
        check_flag_limits(self, {"seed": ">= 0"})
        check_choices(self, flags=True)
        self.conditions()
        return self

    def conditions(self):
        """The recording conditions as :class:`~cpc_speech.synth.conditions.SynthConditions` (validated)."""
        from cpc_speech.synth.conditions import SynthConditions, parse_snr

        return SynthConditions(self.variability, self.channel, parse_snr(self.snr), self.reverb).validate()
