"""lhotse manifests -> manifest rows, audio left where it is (no copy, no lhotse import).

Reads lhotse's JSON-lines manifests (``.jsonl.gz``, ``.jsonl``, or a ``.json`` list), one object
per line:

* a **RecordingSet** (``recordings.jsonl.gz``): ``{"id", "sources": [{"type": "file",
  "channels": [0], "source": "path.flac"}], "sampling_rate", "num_samples", "duration"}``, with the
  speakers from its **SupervisionSet** (``{"id", "recording_id", "start", "duration", "channel",
  "text", "speaker", ...}``): given, or the file beside it named with ``supervisions`` instead of
  ``recordings``;
* a **CutSet** (``cuts.jsonl.gz``): ``{"id", "start", "duration", "channel", "supervisions": [...],
  "recording": {...}, "type": "MonoCut"}``.

One manifest row per recording (cpc_speech manifests hold whole files): id = recording id, path =
its file source, num_samples / sampling_rate as lhotse recorded them, speaker = the speaker of its
supervisions (the one with the most speech when they differ, with a warning; ``unknown`` without
one). Relative source paths are resolved as lhotse does, against the working directory, or
against ``root`` when given. Recordings whose audio is not one local file (``url``, ``command``,
``memory``, ``shar`` sources, one file per channel) or whose file is missing are skipped with a
warning; ``MixedCut`` / ``MultiCut`` entries are refused.
"""

from __future__ import annotations

import gzip
import json
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from cpc_speech.corpora.manifest import Utterance
from cpc_speech.types import PathLike, Warn

UNKNOWN_SPEAKER = "unknown"


def read_jsonl(path: PathLike) -> Iterator[dict]:
    """The objects of a lhotse manifest file (JSON lines, gzipped or not, or one JSON list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"lhotse manifest not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            if path.name.endswith((".json", ".json.gz")):
                data = json.load(f)
                if not isinstance(data, list):
                    raise ValueError(f"{path}: expected a JSON list of manifest objects")
                for i, item in enumerate(data):
                    if not isinstance(item, dict):
                        raise ValueError(f"{path}: item {i}: expected a JSON object")
                    yield item
                return
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}: line {lineno}: not valid JSON ({exc})") from None
                if not isinstance(item, dict):
                    raise ValueError(f"{path}: line {lineno}: expected a JSON object")
                yield item
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None


def _kind(item: dict) -> str:
    if "recording" in item or str(item.get("type", "")).endswith("Cut"):
        return "cut"
    if "sources" in item:
        return "recording"
    if "recording_id" in item:
        return "supervision"
    return "unknown"


def _supervisions_beside(path: Path) -> Optional[Path]:
    if "recordings" not in path.name:
        return None
    candidate = path.with_name(path.name.replace("recordings", "supervisions"))
    return candidate if candidate.is_file() else None


def load_lhotse(
    source: PathLike,
    supervisions: Optional[PathLike] = None,
    root: Optional[PathLike] = None,
    on_warning: Warn = None,
    **_ignored,
) -> List[Utterance]:
    """Manifest rows for a lhotse recordings or cuts manifest (see the module docstring): a file,
    or a lhotse ``RecordingSet`` / ``CutSet`` object (read through its ``to_dicts()``)."""
    warn = on_warning if on_warning is not None else (lambda m: warnings.warn(m, stacklevel=3))
    source_obj = source if hasattr(source, "to_dicts") else None  # a lhotse RecordingSet / CutSet object
    source = Path(f"<{type(source).__name__}>") if source_obj is not None else Path(source)
    recordings: Dict[str, dict] = {}
    speech: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))  # recording -> speaker -> seconds
    where: Dict[str, str] = {}

    def add_supervision(sup: dict, at: str) -> None:
        rid, spk = sup.get("recording_id"), sup.get("speaker")
        if rid is None:
            raise ValueError(f"{at}: supervision without recording_id")
        if spk is not None and str(spk).strip():
            speech[str(rid)][str(spk).strip()] += float(sup.get("duration") or 0.0)

    def add_recording(rec: dict, at: str) -> None:
        rid = rec.get("id")
        if rid is None or not str(rid).strip():
            raise ValueError(f"{at}: recording without id")
        rid = str(rid)
        if rid in recordings:
            if recordings[rid] != rec:
                raise ValueError(f"{at}: recording id {rid!r} appears twice with different contents (also {where[rid]})")
            return
        recordings[rid], where[rid] = rec, at

    kinds = set()
    items = source_obj.to_dicts() if source_obj is not None else read_jsonl(source)
    for i, item in enumerate(items):
        at = f"{source}: entry {i + 1}"
        kind = _kind(item)
        kinds.add(kind)
        if kind == "cut":
            if item.get("type", "MonoCut") != "MonoCut":
                raise ValueError(f"{at}: {item.get('type')} cuts are not supported (only MonoCut: one recording each)")
            if not isinstance(item.get("recording"), dict):
                raise ValueError(f"{at}: cut without an embedded recording")
            add_recording(item["recording"], at)
            for sup in item.get("supervisions") or []:
                add_supervision(dict(sup, recording_id=sup.get("recording_id", item["recording"].get("id"))), at)
        elif kind == "recording":
            add_recording(item, at)
        else:
            raise ValueError(f"{at}: neither a lhotse recording (with 'sources') nor a cut (with 'recording')")
    if not recordings:
        raise ValueError(f"{source}: no recordings")
    if "recording" in kinds:
        sup_path = Path(supervisions) if supervisions is not None else _supervisions_beside(source)
        if sup_path is not None:
            for i, sup in enumerate(read_jsonl(sup_path)):
                add_supervision(sup, f"{sup_path}: entry {i + 1}")
            unknown = sorted(set(speech) - set(recordings))
            if unknown:
                warn(f"{sup_path}: {len(unknown)} supervision recording id(s) not in {source.name}, e.g. {unknown[0]!r}")
        else:
            warn(f"{source}: no supervisions manifest (give one, or put it beside as {source.name.replace('recordings', 'supervisions')}); every speaker is '{UNKNOWN_SPEAKER}'")
    elif supervisions is not None:
        for i, sup in enumerate(read_jsonl(supervisions)):
            add_supervision(sup, f"{supervisions}: entry {i + 1}")

    base = Path(root) if root is not None else Path.cwd()
    rows: List[Utterance] = []
    mixed = skipped = 0
    for rid, rec in recordings.items():
        at = where[rid]
        sources = rec.get("sources") or []
        if len(sources) != 1 or not isinstance(sources[0], dict) or sources[0].get("type") != "file":
            kinds_ = ", ".join(str(s.get("type")) for s in sources if isinstance(s, dict)) or "none"
            warn(f"{at}: skipping recording {rid!r}: its audio is not one local file (sources: {kinds_})")
            skipped += 1
            continue
        path = Path(str(sources[0].get("source", "")))
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            warn(f"{at}: skipping recording {rid!r}: audio file not found: {path}")
            skipped += 1
            continue
        try:
            rate, n = int(rec["sampling_rate"]), int(rec["num_samples"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{at}: recording {rid!r} needs integer sampling_rate and num_samples") from None
        if rate <= 0 or n <= 0:
            raise ValueError(f"{at}: recording {rid!r}: sampling_rate and num_samples must be positive")
        spk = UNKNOWN_SPEAKER
        if speech.get(rid):
            by_time = sorted(speech[rid].items(), key=lambda kv: (-kv[1], kv[0]))
            spk = by_time[0][0]
            if len(by_time) > 1:
                mixed += 1
        rows.append(Utterance(rid, str(path), spk, n, rate))
    if mixed:
        warn(f"{mixed} recording(s) have supervisions of several speakers: each row takes the speaker with the most speech")
    if not rows:
        raise ValueError(f"{source}: none of the {len(recordings)} recording(s) is a local audio file")
    return rows
