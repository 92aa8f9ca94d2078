"""Mozilla Common Voice: manifests from a release as downloaded.

Layout::

    CV_ROOT/                               e.g. cv-corpus-17.0-2024-03-15/
        en/                                one folder per locale
            clips/common_voice_en_123.mp3
            validated.tsv train.tsv dev.tsv test.tsv (other.tsv invalidated.tsv ...)

Each split TSV is tab-separated with a header; the columns used are ``client_id`` (the speaker),
``path`` (the clip's file name in ``clips/``) and ``sentence``. Releases differ in their other
columns, and sentences hold stray quote characters, so the files are read with ``QUOTE_NONE``.
The utterance id is the clip name without its extension.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from cpc_speech.corpora.manifest import Utterance, parse_name_list, scan_files
from cpc_speech.types import Warn, warner

DEFAULT_SPLITS = ("validated",)
STANDARD_SPLITS = ("validated", "train", "dev", "test", "other", "invalidated")


def _is_locale_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / "clips").is_dir()


def available_locales(root: Union[str, Path]) -> List[str]:
    """Locale folders (those holding ``clips/``) in a Common Voice root."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _is_locale_dir(p))


def read_tsv(path: Union[str, Path], on_warning: Warn = None) -> List[Dict[str, str]]:
    """Rows of a Common Voice TSV as dicts (header names as keys), read with ``QUOTE_NONE``.

    Rows with fewer fields than the header are padded with empty strings after one warning;
    raises ValueError when ``client_id`` or ``path`` is not in the header.
    """
    warn = warner(on_warning)
    path = Path(path)
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows: List[Dict[str, str]] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header line with client_id and path") from None
        missing = [c for c in ("client_id", "path") if c not in header]
        if missing:
            raise ValueError(f"{path}: header has no {' or '.join(missing)} column (columns: {', '.join(header)})")
        short = 0
        for fields in reader:
            if not fields or not any(fields):
                continue
            if len(fields) < len(header):
                short += 1
                fields = fields + [""] * (len(header) - len(fields))
            rows.append(dict(zip(header, fields)))
        if short:
            warn(f"{path}: {short} row(s) have fewer fields than the header")
    return rows


def _clip_path(clips: Path, name: str) -> Path:
    p = clips / name
    if not p.suffix and not p.exists():  # some early releases list clips without the extension
        p = p.with_name(p.name + ".mp3")
    return p


def load_commonvoice(
    root: Union[str, Path],
    locales: Union[None, str, Sequence[str]] = None,
    splits: Union[str, Sequence[str]] = DEFAULT_SPLITS,
    *,
    with_transcripts: bool = False,
    workers: int = 8,
    progress: bool = False,
    on_warning: Warn = None,
) -> Union[List[Utterance], Tuple[List[Utterance], Dict[str, str]]]:
    """Manifest rows for Common Voice ``locales`` (default: every locale folder present) and the
    rows of the ``splits`` TSVs (``validated``, ``train``, ``dev``, ``test``, ...).

    ``root`` is the release folder (holding ``<locale>/clips``) or one locale folder. A clip listed
    in several splits is kept once. Rows whose clip is missing are skipped with one warning per
    clip, then a warning with the count. MP3 headers are read in ``workers`` threads. With
    ``with_transcripts`` returns ``(rows, {id: sentence})``.
    """
    warn = warner(on_warning)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Common Voice root not found: {root}")
    wanted = parse_name_list(locales)
    if _is_locale_dir(root) and (wanted is None or wanted == [root.name]):
        root, wanted = root.parent, [root.name]  # ROOT is one locale folder
    present = available_locales(root)
    if wanted is None:
        if not present:
            raise FileNotFoundError(f"no Common Voice locale folders in {root}: expected e.g. {root / 'en' / 'clips'}")
        wanted = present
    for loc in wanted:
        if not (root / loc).is_dir():
            raise FileNotFoundError(
                f"Common Voice locale folder not found: {root / loc} (locales in {root}: {', '.join(present) or 'none'})"
            )
        if not (root / loc / "clips").is_dir():
            raise FileNotFoundError(f"Common Voice clips folder not found: {root / loc / 'clips'}")
    split_names = parse_name_list(splits, ".tsv") or list(DEFAULT_SPLITS)

    items: List[Tuple[str, str, str]] = []
    sentences: Dict[str, str] = {}
    seen = set()
    missing_clips: set = set()
    missing = listed = 0
    for loc in wanted:
        loc_dir = (root / loc).resolve()
        clips = loc_dir / "clips"
        for split in split_names:
            tsv = loc_dir / f"{split}.tsv"
            if not tsv.is_file():
                have = sorted(p.stem for p in loc_dir.glob("*.tsv"))
                raise FileNotFoundError(f"Common Voice split file not found: {tsv} (TSV files in {loc_dir}: {', '.join(have) or 'none'})")
            for row in read_tsv(tsv, on_warning=warn):
                name, spk = row["path"].strip(), row["client_id"].strip()
                if not name:
                    continue
                listed += 1
                clip = _clip_path(clips, name)
                uid = clip.stem if clip.suffix else clip.name
                if uid in seen:
                    continue
                if not clip.is_file():
                    missing += 1
                    if uid not in missing_clips:  # one warning per clip, even when listed in several splits
                        missing_clips.add(uid)
                        warn(f"{tsv.name}: clip not found, skipping: {clip}")
                    continue
                seen.add(uid)
                items.append((uid, str(clip), spk or "unknown"))
                if with_transcripts:
                    sentences[uid] = row.get("sentence", "")
    if missing:
        warn(f"skipped {missing} row(s) of {listed} whose clip is missing ({len(missing_clips)} clip(s))")
    if not items:
        raise ValueError(f"no Common Voice clips found for locales {', '.join(wanted)} and splits {', '.join(split_names)} in {root}")
    rows = scan_files(items, workers=workers, on_error=warn, progress=progress)
    if with_transcripts:
        return rows, {u.id: sentences.get(u.id, "") for u in rows}
    return rows
