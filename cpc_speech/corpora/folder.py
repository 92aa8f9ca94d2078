"""Manifests from a plain folder of audio files or from a file list.

Folder: every file with an audio extension below ``root`` (hidden files and folders skipped,
symlinked folders followed). The utterance id is the path relative to ``root`` without the
extension (``spk1/chapter/utt01``). The speaker is the folder ``speaker_depth`` levels below the
root (1 = first level), or what ``speaker_regex`` finds in the file name (the group named
``speaker``, else group 1, else the whole match).

File list: one audio path per line (relative paths are relative to the list's folder),
optionally followed by a tab and the speaker; ``#`` comments and blank lines are ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from cpc_speech.audio import missing_file
from cpc_speech.corpora.manifest import Utterance, scan_files
from cpc_speech.types import Warn, warner

AUDIO_EXTENSIONS = ("wav", "flac", "ogg", "opus", "mp3")
UNKNOWN_SPEAKER = "unknown"


def _normalise_extensions(extensions: Union[str, Iterable[str]]) -> Tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = extensions.split(",")
    exts = tuple("." + e.strip().lower().lstrip(".") for e in extensions if e.strip())
    if not exts:
        raise ValueError("no audio extensions given")
    return exts


def _compile(speaker_regex: Union[None, str, "re.Pattern"]) -> Optional["re.Pattern"]:
    if speaker_regex is None or isinstance(speaker_regex, re.Pattern):
        return speaker_regex
    try:
        return re.compile(speaker_regex)
    except re.error as exc:
        raise ValueError(f"invalid speaker regex {speaker_regex!r}: {exc}") from None


def speaker_from_name(pattern: "re.Pattern", name: str) -> Optional[str]:
    """The speaker ``pattern`` finds in a file name (None when it does not match)."""
    m = pattern.search(name)
    if not m:
        return None
    if "speaker" in pattern.groupindex:
        return m.group("speaker")
    return m.group(1) if pattern.groups else m.group(0)


def _walk_audio(root: Path, exts: Tuple[str, ...]) -> List[Path]:
    """Audio files below ``root`` in sorted order; follows symlinked folders once (no cycles)."""
    found: List[Path] = []
    visited = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith(".") and os.path.splitext(fn)[1].lower() in exts:
                found.append(Path(dirpath) / fn)
    found.sort(key=lambda p: p.relative_to(root).parts)
    return found


def _unique_ids(candidates: List[str], fallbacks: List[str]) -> List[str]:
    """``candidates``, with every id that occurs more than once replaced by its fallback."""
    counts = {}
    for c in candidates:
        counts[c] = counts.get(c, 0) + 1
    ids = [c if counts[c] == 1 else f for c, f in zip(candidates, fallbacks)]
    taken, out = set(), []
    for uid in ids:
        base, n = uid, 1
        while uid in taken:
            uid = f"{base}-{n}"
            n += 1
        taken.add(uid)
        out.append(uid)
    return out


def _clean_field(value: str) -> str:
    return value.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def load_folder(
    root: Union[str, Path],
    *,
    extensions: Union[str, Sequence[str]] = AUDIO_EXTENSIONS,
    speaker_depth: int = 1,
    speaker_regex: Union[None, str, "re.Pattern"] = None,
    workers: int = 8,
    progress: bool = False,
    on_warning: Warn = None,
) -> List[Utterance]:
    """Manifest rows for every audio file below ``root``.

    The speaker is the folder ``speaker_depth`` levels below ``root`` (0: every file ``unknown``),
    or, with ``speaker_regex``, what it finds in the file name. Files that yield no speaker get
    ``unknown`` (one warning with the count). Unreadable files are skipped with a warning each.
    """
    warn = warner(on_warning)
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"audio folder not found: {root}")
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    if speaker_depth < 0:
        raise ValueError(f"speaker depth must be >= 0, got {speaker_depth}")
    exts = _normalise_extensions(extensions)
    pattern = _compile(speaker_regex)
    root = root.resolve()
    files = _walk_audio(root, exts)
    if not files:
        raise ValueError(f"no audio files ({', '.join(e[1:] for e in exts)}) found under {root}")

    rels = [f.relative_to(root) for f in files]
    ids = _unique_ids([_clean_field(r.with_suffix("").as_posix()) for r in rels], [_clean_field(r.as_posix()) for r in rels])
    items: List[Tuple[str, str, str]] = []
    no_speaker = 0
    for uid, f, rel in zip(ids, files, rels):
        if pattern is not None:
            spk = speaker_from_name(pattern, f.name)
        elif speaker_depth == 0:
            spk = UNKNOWN_SPEAKER
        else:
            spk = rel.parts[speaker_depth - 1] if len(rel.parts) > speaker_depth else None
        if not spk:
            no_speaker += 1
            spk = UNKNOWN_SPEAKER
        items.append((uid, str(f), _clean_field(spk)))
    if no_speaker:
        how = f"speaker regex {pattern.pattern!r} does not match" if pattern is not None else f"no folder {speaker_depth} level(s) below {root} holds them"
        warn(f"{no_speaker} of {len(files)} file(s) have no speaker ({how}); their speaker is '{UNKNOWN_SPEAKER}'")
    return scan_files(items, workers=workers, on_error=warn, progress=progress)


def read_filelist(path: Union[str, Path]) -> List[Tuple[Path, Optional[str]]]:
    """``(audio path, speaker or None)`` per line of a file list; relative paths are resolved
    against the list's folder. A line is ``PATH`` or ``PATH<TAB>SPEAKER``; without a tab, a last
    whitespace-separated word is taken as the speaker when the whole line is not a file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(missing_file("file list", path))
    base = path.resolve().parent
    out: List[Tuple[Path, Optional[str]]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                p, _, spk = line.partition("\t")
                spk = spk.split("\t")[0].strip() or None
            else:
                p, spk = line.strip(), None
                whole = Path(p).expanduser()
                whole = whole if whole.is_absolute() else base / whole
                parts = p.rsplit(None, 1)
                if len(parts) == 2 and not whole.exists():
                    p, spk = parts
            q = Path(p.strip()).expanduser()
            out.append((q if q.is_absolute() else base / q, spk))
    return out


def load_filelist(
    path: Union[str, Path],
    *,
    speaker_regex: Union[None, str, "re.Pattern"] = None,
    workers: int = 8,
    progress: bool = False,
    on_warning: Warn = None,
) -> List[Utterance]:
    """Manifest rows for the files of a file list (see :func:`read_filelist`).

    The id is the file name without extension (the path without extension where names clash).
    Lines without a speaker column take it from ``speaker_regex`` or get ``unknown`` (one warning
    with the count). Missing or unreadable files are skipped with a warning each.
    """
    warn = warner(on_warning)
    entries = read_filelist(path)
    if not entries:
        raise ValueError(f"file list {path} lists no files")
    pattern = _compile(speaker_regex)
    paths = [p for p, _ in entries]
    ids = _unique_ids([_clean_field(p.stem) for p in paths], [_clean_field(p.with_suffix("").as_posix().lstrip("/")) for p in paths])
    items: List[Tuple[str, str, str]] = []
    no_speaker = 0
    for uid, (p, spk) in zip(ids, entries):
        if not spk and pattern is not None:
            spk = speaker_from_name(pattern, p.name)
        if not spk:
            no_speaker += 1
            spk = UNKNOWN_SPEAKER
        items.append((uid, str(p), _clean_field(spk)))
    if no_speaker:
        warn(f"{no_speaker} of {len(entries)} file(s) in {path} have no speaker; their speaker is '{UNKNOWN_SPEAKER}'")
    return scan_files(items, workers=workers, on_error=warn, progress=progress)
