"""Manifests: one row per utterance.

File format (TSV, UTF-8, with a header line)::

    id	path	speaker	num_samples	sample_rate
    1089-134686-0000	train-clean-100/1089/134686/1089-134686-0000.flac	1089	166960	16000

``num_samples`` and ``sample_rate`` are the file's own (before resampling to 16 kHz); a relative
``path`` is relative to the manifest's folder. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

from cpc_speech.audio import SAMPLE_RATE, AudioError, audio_info, resampled_length

COLUMNS = ("id", "path", "speaker", "num_samples", "sample_rate")


class ManifestError(ValueError):
    """A malformed manifest; the message names the file and line."""


@dataclass(frozen=True)
class Utterance:
    """One manifest row. ``num_samples`` at the file's ``sample_rate`` (Hz)."""

    id: str
    path: str
    speaker: str
    num_samples: int
    sample_rate: int

    @property
    def num_samples_16k(self) -> int:
        return resampled_length(self.num_samples, self.sample_rate, SAMPLE_RATE)

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.num_samples / self.sample_rate


def write_manifest(rows: Iterable[Utterance], path: Union[str, Path], relative: bool = True) -> Path:
    """Write rows as TSV (atomically). With ``relative`` paths under the manifest folder are stored
    relative to it."""
    from cpc_speech.atomic import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    with atomic_open(path, "w") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for u in rows:
            p = u.path
            if relative:
                try:
                    p = os.path.relpath(Path(p).resolve(), base) if Path(p).is_absolute() else p
                except ValueError:
                    pass
            for value in (u.id, p, u.speaker):
                if "\t" in value or "\n" in value:
                    raise ManifestError(f"{path}: tab or newline in field {value!r}")
            f.write(f"{u.id}\t{p}\t{u.speaker}\t{u.num_samples}\t{u.sample_rate}\n")
    return path


def read_manifest(path: Union[str, Path]) -> List[Utterance]:
    """Read a TSV manifest; relative paths are resolved against the manifest's folder."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path} is a folder, not a manifest file")
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    base = path.parent.resolve()
    try:
        return _read_rows(path, base)
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _read_rows(path: Path, base: Path) -> List[Utterance]:
    rows: List[Utterance] = []
    seen = set()
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if tuple(header[: len(COLUMNS)]) != COLUMNS:
            raise ManifestError(f"{path}: line 1: expected header {'<TAB>'.join(COLUMNS)}, got {header}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < len(COLUMNS):
                raise ManifestError(f"{path}: line {lineno}: expected {len(COLUMNS)} tab-separated fields, got {len(parts)}")
            uid, p, spk, n, sr = parts[:5]
            try:
                n_i, sr_i = int(n), int(sr)
            except ValueError:
                raise ManifestError(f"{path}: line {lineno}: num_samples and sample_rate must be integers") from None
            if n_i < 0:
                raise ManifestError(f"{path}: line {lineno}: num_samples must be >= 0, got {n_i}")
            if sr_i < 1:
                raise ManifestError(f"{path}: line {lineno}: sample_rate must be >= 1 Hz, got {sr_i}")
            if uid in seen:
                raise ManifestError(f"{path}: line {lineno}: duplicate utterance id {uid!r}")
            seen.add(uid)
            full = p if os.path.isabs(p) else str(base / p)
            rows.append(Utterance(uid, full, spk, n_i, sr_i))
    if not rows:
        raise ManifestError(f"{path}: manifest has no utterances")
    return rows


def utterance_from_file(uid: str, path: Union[str, Path], speaker: str) -> Utterance:
    """A row from an audio file's header (no decoding)."""
    info = audio_info(path)
    return Utterance(uid, str(path), speaker, info.frames, info.sample_rate)


def scan_files(
    items: Sequence[Tuple[str, Union[str, Path], str]],
    workers: int = 8,
    on_error: Optional[Callable[[str], None]] = None,
    progress: bool = False,
) -> List[Utterance]:
    """Build rows for ``(id, path, speaker)`` items by reading headers in parallel threads.

    Unreadable files are skipped with one message each to ``on_error`` (default: a warning); the
    order of ``items`` is kept.
    """
    import warnings

    def one(item):
        uid, p, spk = item
        try:
            return utterance_from_file(uid, p, spk)
        except AudioError as exc:
            return exc

    results = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        iterator = pool.map(one, items)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(items), desc="reading headers", unit="file")
        for r in iterator:
            results.append(r)
    report = on_error if on_error is not None else (lambda m: warnings.warn(m, stacklevel=3))
    rows, skipped = [], 0
    for r in results:
        if isinstance(r, Exception):
            skipped += 1
            report(f"skipping {r}")
        else:
            rows.append(r)
    if skipped:
        report(f"skipped {skipped} unreadable file(s) of {len(items)}")
    return rows


def check_headers(rows: Sequence[Utterance], manifest: Union[str, Path], sample: int = 256, workers: int = 8) -> int:
    """Compare up to ``sample`` rows (evenly spread, first and last included) with their audio
    headers: a ``num_samples`` or ``sample_rate`` that differs from the file is a
    :class:`ManifestError` naming the manifest, the utterance and both values; so is a sample in
    which no file is readable. Unreadable files alone are left to the reader (skipped with a
    warning). Returns the number of rows checked."""
    if not rows:
        return 0
    count = min(len(rows), max(1, sample))
    picks = sorted({round(i * (len(rows) - 1) / max(1, count - 1)) for i in range(count)})

    def one(i):
        try:
            return audio_info(rows[i].path)
        except AudioError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        infos = list(pool.map(one, picks))
    unreadable = []
    for i, info in zip(picks, infos):
        u = rows[i]
        if isinstance(info, Exception):
            unreadable.append(info)
            continue
        if (info.frames, info.sample_rate) != (u.num_samples, u.sample_rate):
            raise ManifestError(
                f"{manifest}: utterance {u.id}: the manifest says {u.num_samples} samples at {u.sample_rate} Hz but "
                f"{u.path} has {info.frames} samples at {info.sample_rate} Hz; rebuild the manifest with "
                f"cpc-speech prepare (or pass --trust-manifest to skip this check)"
            )
    if len(unreadable) == len(picks):
        raise ManifestError(f"{manifest}: none of the {len(picks)} audio file(s) checked is readable (first: {unreadable[0]})")
    return len(picks)


def file_sha256(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file's bytes (the identity of a manifest a run was trained on)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TrainingManifest:
    """A manifest read for training: its rows, its resolved path and the SHA-256 of its bytes
    (a resumed run checks it is still the same file)."""

    rows: List[Utterance]
    path: str
    sha256: str


def open_training_manifest(path: Union[str, Path], check: bool = True) -> TrainingManifest:
    """Read ``path`` (:func:`read_manifest`) and, with ``check``, compare a sample of its rows with
    their audio headers (:func:`check_headers`)."""
    rows = read_manifest(path)
    if check:
        check_headers(rows, path)
    return TrainingManifest(rows, str(Path(path).resolve()), file_sha256(path))


def parse_name_list(names: Union[None, str, Iterable[str]], strip_suffix: str = "") -> Optional[List[str]]:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (order kept, duplicates and blanks dropped,
    surrounding slashes and ``strip_suffix`` removed); ``None`` for nothing."""
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    out: List[str] = []
    for n in names:
        n = str(n).strip().strip("/")
        if strip_suffix and n.endswith(strip_suffix):
            n = n[: -len(strip_suffix)]
        if n and n not in out:
            out.append(n)
    return out or None
