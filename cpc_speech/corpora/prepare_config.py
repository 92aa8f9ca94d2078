"""The settings of ``cpc-speech prepare CORPUS`` as typed dataclasses, one per corpus kind, over
the settings they share (the command line is generated from them,
:mod:`cpc_speech.cli.config_args`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cpc_speech.settings import check_flag_limits, require, setting


@dataclass
class PrepareConfig:
    """What every ``prepare`` source shares: SOURCE, the manifest to write and how."""

    source: str = setting("", positional=True, metavar="SOURCE", help="the corpus on disk")
    out: str = setting("", aliases=("-o",), metavar="MANIFEST", help="manifest file to write (.tsv) (required)")
    workers: int = setting(8, help="parallel threads for reading headers / decoding")
    min_seconds: float = setting(0.0, help="drop utterances shorter than this (0: keep all)")
    absolute_paths: bool = setting(False, help="store absolute audio paths (default: relative to the manifest)")
    progress: Optional[bool] = setting(None, help="show progress bars (default: when stderr is a terminal)")

    def validate(self) -> "PrepareConfig":
        if not self.source:
            raise ValueError("SOURCE is required")
        require(self, ("out",))
        check_flag_limits(self, {"workers": ">= 1"})
        return self


@dataclass
class LibriSpeechPrepareConfig(PrepareConfig):
    """LibriSpeech: ROOT/<subset>/<speaker>/<chapter>/*.flac"""

    source: str = setting("", positional=True, metavar="SOURCE", help="the LibriSpeech/ folder, or the folder holding it")
    subsets: Optional[str] = setting(None, help="comma-separated subsets, e.g. train-clean-100,dev-clean (default: all present)")
    transcripts: Optional[str] = setting(None, metavar="FILE", help="also write 'id<TAB>transcript' lines to FILE")


@dataclass
class CommonVoicePrepareConfig(PrepareConfig):
    """Common Voice: ROOT/<locale>/clips/*.mp3 with split TSVs"""

    source: str = setting("", positional=True, metavar="SOURCE", help="the release folder holding <locale>/clips (or one locale folder)")
    locales: Optional[str] = setting(None, help="comma-separated locales, e.g. en,fr (default: all present)")
    splits: str = setting("validated", help="comma-separated split TSVs: validated, train, dev, test, ...")
    transcripts: Optional[str] = setting(None, metavar="FILE", help="also write 'id<TAB>sentence' lines to FILE")


@dataclass
class FolderPrepareConfig(PrepareConfig):
    """any folder of audio files (wav, flac, ogg, opus, mp3)"""

    source: str = setting("", positional=True, metavar="SOURCE", help="folder to scan recursively")
    speaker_depth: int = setting(1, help="speaker = folder this many levels below SOURCE; 0: none")
    speaker_regex: Optional[str] = setting(None, help="speaker = what this regex finds in the file name (group 'speaker', else group 1)")
    extensions: str = setting("wav,flac,ogg,opus,mp3", help="comma-separated extensions")


@dataclass
class FilelistPrepareConfig(PrepareConfig):
    """a text file: one audio path per line, optional <TAB>speaker"""

    source: str = setting("", positional=True, metavar="SOURCE", help="the file list (relative paths are relative to its folder)")
    speaker_regex: Optional[str] = setting(None, help="speaker for lines without one: what this regex finds in the file name")


@dataclass
class HfPrepareConfig(PrepareConfig):
    """a Hugging Face dataset on disk (save_to_disk folder, parquet or arrow files)"""

    source: str = setting("", positional=True, metavar="SOURCE", help="save_to_disk folder, folder of .parquet/.arrow files, or one such file")
    splits: Optional[str] = setting(None, help="comma-separated splits (default: all)")
    audio_column: Optional[str] = setting(None, help="audio column (default: 'audio' or the first audio-like column)")
    speaker_column: Optional[str] = setting(None, help="speaker column (default: first of speaker_id, speaker, client_id, spk_id, spk)")
    id_column: Optional[str] = setting(None, help="utterance id column (default: id, else the audio file name, else <split>-<row>)")
    audio_dir: Optional[str] = setting(None, help="where to write the 16 kHz FLACs (default: <MANIFEST name>_audio/ beside the manifest)")
    overwrite: bool = setting(False, help="re-decode even when a FLAC already exists")


@dataclass
class LhotsePrepareConfig(PrepareConfig):
    """lhotse recordings (+ supervisions) or cuts manifests; audio is not copied"""

    source: str = setting("", positional=True, metavar="SOURCE", help="recordings or cuts manifest (.jsonl.gz, .jsonl or .json)")
    supervisions: Optional[str] = setting(None, metavar="FILE",
                                          help="supervisions manifest with the speakers (default: the file beside SOURCE named supervisions*)")
    root: Optional[str] = setting(None, help="folder that relative audio paths are relative to (default: the current folder, as in lhotse)")



PREPARE_CONFIGS = {
    "librispeech": LibriSpeechPrepareConfig, "commonvoice": CommonVoicePrepareConfig, "folder": FolderPrepareConfig,
    "filelist": FilelistPrepareConfig, "hf": HfPrepareConfig, "lhotse": LhotsePrepareConfig,
}
