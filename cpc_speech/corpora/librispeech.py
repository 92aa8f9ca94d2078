"""LibriSpeech: manifests from the corpus as distributed (openslr.org, resource 12).

Layout::

    ROOT/                                  (the folder named LibriSpeech/, or the folder holding it)
        SPEAKERS.TXT                       ; comment lines, then  ID  |SEX| SUBSET  |MINUTES| NAME
        train-clean-100/                   one folder per subset
            19/                            speaker id
                198/                       chapter id
                    19-198.trans.txt       "<utterance id> <TRANSCRIPT>" per line
                    19-198-0000.flac       16 kHz mono FLAC
                    ...

Utterance ids are the file names (``19-198-0000``); the speaker is the LibriSpeech speaker id
(``19``). Any subset folder with this layout is accepted, so Mini LibriSpeech (``dev-clean-2``,
``train-clean-5``) works too.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

from cpc_speech.corpora.manifest import Utterance, parse_name_list, scan_files
from cpc_speech.types import Warn, warner

SUBSETS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)

_UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


@dataclass(frozen=True)
class SpeakerInfo:
    """One line of ``SPEAKERS.TXT``: ``sex`` is ``M``/``F``, ``minutes`` of audio in ``subset``."""

    id: str
    sex: str
    subset: str
    minutes: float
    name: str


def _is_subset_dir(path: Path) -> bool:
    """A folder with at least one ``<speaker digits>/<chapter digits>/`` below it."""
    if not path.is_dir() or path.name.startswith("."):
        return False
    try:
        for spk in os.scandir(path):
            if spk.is_dir() and spk.name.isdigit():
                for chap in os.scandir(spk.path):
                    if chap.is_dir() and chap.name.isdigit():
                        return True
    except OSError:
        return False
    return False


def available_subsets(root: Union[str, Path]) -> List[str]:
    """Subset folders present in a LibriSpeech root (known names first, in the usual order)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted(p.name for p in root.iterdir() if _is_subset_dir(p))
    known = [s for s in SUBSETS if s in found]
    return known + [s for s in found if s not in known]


def find_root(root: Union[str, Path]) -> Path:
    """The ``LibriSpeech/`` folder: ``root`` itself or ``root/LibriSpeech``.

    Raises FileNotFoundError naming the folder when neither holds a subset.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"LibriSpeech root not found: {root}")
    if not root.is_dir():
        raise FileNotFoundError(f"LibriSpeech root is not a folder: {root}")
    if available_subsets(root) or (root / "SPEAKERS.TXT").is_file():
        return root
    inner = root / "LibriSpeech"
    if inner.is_dir():
        return inner
    raise FileNotFoundError(
        f"no LibriSpeech subsets in {root}: expected subset folders such as {root / 'train-clean-100'} "
        f"(<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac), or a LibriSpeech/ folder inside it"
    )


def read_speakers(path: Union[str, Path]) -> Dict[str, SpeakerInfo]:
    """Parse ``SPEAKERS.TXT`` (``;`` comments; ``ID | SEX | SUBSET | MINUTES | NAME``).

    The name is everything after the fourth ``|`` (some names contain ``|`` themselves).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LibriSpeech speaker file not found: {path}")
    speakers: Dict[str, SpeakerInfo] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            parts = [p.strip() for p in line.split("|", 4)]
            if len(parts) < 4 or not parts[0]:
                raise ValueError(f"{path}: line {lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line!r}")
            try:
                minutes = float(parts[3])
            except ValueError:
                raise ValueError(f"{path}: line {lineno}: minutes {parts[3]!r} is not a number") from None
            speakers[parts[0]] = SpeakerInfo(parts[0], parts[1], parts[2], minutes, parts[4] if len(parts) > 4 else "")
    return speakers


def read_transcripts(path: Union[str, Path]) -> Dict[str, str]:
    """A ``<speaker>-<chapter>.trans.txt`` file: ``{utterance id: transcript}``."""
    out: Dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                uid, _, text = line.partition(" ")
                out[uid] = text.strip()
    return out


def _subset_items(subset_dir: Path, on_warning: Callable[[str], None]) -> Tuple[List[Tuple[str, str, str]], List[Path]]:
    """``(id, path, speaker)`` items of one subset, sorted, and the chapter folders visited."""
    items: List[Tuple[str, str, str]] = []
    chapters: List[Path] = []
    for spk in sorted(os.scandir(subset_dir), key=lambda e: e.name):
        if not (spk.is_dir() and spk.name.isdigit()):
            continue
        for chap in sorted(os.scandir(spk.path), key=lambda e: e.name):
            if not (chap.is_dir() and chap.name.isdigit()):
                continue
            chapters.append(Path(chap.path))
            for entry in sorted(os.scandir(chap.path), key=lambda e: e.name):
                if not entry.name.endswith(".flac") or entry.name.startswith("."):
                    continue
                uid = entry.name[: -len(".flac")]
                m = _UTT_RE.match(uid)
                if not m or m.group(1) != spk.name or m.group(2) != chap.name:
                    on_warning(
                        f"skipping {entry.path}: expected a name like {spk.name}-{chap.name}-0000.flac "
                        f"in {spk.name}/{chap.name}/"
                    )
                    continue
                items.append((uid, entry.path, spk.name))
    return items, chapters


def load_librispeech(
    root: Union[str, Path],
    subsets: Union[None, str, Sequence[str]] = None,
    *,
    with_transcripts: bool = False,
    workers: int = 8,
    progress: bool = False,
    on_warning: Warn = None,
) -> Union[List[Utterance], Tuple[List[Utterance], Dict[str, str]]]:
    """Manifest rows for LibriSpeech ``subsets`` (names or ``"a,b"``; default: every subset present).

    ``root`` is the ``LibriSpeech/`` folder or the folder holding it; a subset folder itself is
    accepted too. Headers are read in ``workers`` threads. With ``with_transcripts`` returns
    ``(rows, {id: transcript})``. Raises FileNotFoundError for a missing root or subset (listing
    the subsets that exist) and ValueError for a subset without FLAC files.
    """
    warn = warner(on_warning)
    wanted = parse_name_list(subsets)
    given = Path(root).expanduser()
    if given.is_dir() and _is_subset_dir(given) and not available_subsets(given) and (wanted is None or wanted == [given.name]):
        base, wanted = given.parent, [given.name]  # ROOT is a subset folder itself
    else:
        base = find_root(given)
    present = available_subsets(base)
    if wanted is None:
        wanted = present
        if not wanted:
            raise FileNotFoundError(f"no LibriSpeech subsets in {base}: expected folders such as {base / 'train-clean-100'}")
    for name in wanted:
        if not (base / name).is_dir():
            listing = ", ".join(present) if present else "none"
            raise FileNotFoundError(f"LibriSpeech subset folder not found: {base / name} (subsets in {base}: {listing})")

    items: List[Tuple[str, str, str]] = []
    seen: Dict[str, str] = {}
    transcripts: Dict[str, str] = {}
    for name in wanted:
        subset_dir = (base / name).resolve()
        sub_items, chapters = _subset_items(subset_dir, warn)
        if not sub_items:
            raise ValueError(
                f"LibriSpeech subset {name} has no .flac files under {subset_dir} "
                f"(expected <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac)"
            )
        for uid, p, spk in sub_items:
            if uid in seen:
                warn(f"skipping {p}: utterance id {uid} already taken by {seen[uid]}")
                continue
            seen[uid] = p
            items.append((uid, p, spk))
        if with_transcripts:
            for chap in chapters:
                trans = chap / f"{chap.parent.name}-{chap.name}.trans.txt"
                if trans.is_file():
                    transcripts.update(read_transcripts(trans))
                else:
                    warn(f"transcript file missing: {trans}")
    rows = scan_files(items, workers=workers, on_error=warn, progress=progress)
    if with_transcripts:
        missing = [u.id for u in rows if u.id not in transcripts]
        if missing:
            warn(f"{len(missing)} utterance(s) have no transcript line, e.g. {missing[0]}")
        return rows, {u.id: transcripts[u.id] for u in rows if u.id in transcripts}
    return rows
