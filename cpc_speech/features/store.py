"""The on-disk feature folder: ``<utt-id>.npy`` files, their index ``features.tsv`` (``id  file
frames  dim  source``) and ``meta.json`` (what produced them), with the rules that decide which
files a new extraction may reuse.

A folder is reused only for the featuriser its ``meta.json`` describes and only for the files its
index lists for the same audio (path, size, modification time); ``.npy`` files it did not write are
never adopted (a folder without ``meta.json`` holding ``<id>.npy`` files is refused); a different
featuriser invalidates the folder (its old feature files are deleted)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.atomic import atomic_open, atomic_write_text
from cpc_speech.features.models import FeatureError

INDEX_NAME = "features.tsv"
META_NAME = "meta.json"
PathLike = Union[str, Path]
IndexRow = Tuple[str, str, int, int]  # (id, file, frames, dim)


def feature_file_name(uid: str) -> str:
    """``<uid>.npy``; an id that cannot be a file name is a :class:`FeatureError`."""
    if not uid or "/" in uid or "\\" in uid or uid in (".", "..") or "\t" in uid or "\n" in uid:
        raise FeatureError(f"utterance id {uid!r} cannot be used as a file name")
    return uid + ".npy"


def read_index(out_dir: PathLike) -> List[IndexRow]:
    """Rows (id, file, frames, dim) of ``out_dir/features.tsv``."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        raise FeatureError(f"{out_dir}: no {INDEX_NAME} (not a feature folder written by extract_corpus)")
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:4] != ["id", "file", "frames", "dim"]:
            raise FeatureError(f"{path}: line 1: expected header id<TAB>file<TAB>frames<TAB>dim")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                if line.strip():
                    raise FeatureError(f"{path}: line {lineno}: expected 4 tab-separated fields")
                continue
            try:
                rows.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
            except ValueError:
                raise FeatureError(f"{path}: line {lineno}: frames and dim must be integers") from None
    return rows


def write_index(out_dir: Path, rows: List[IndexRow], sources: Dict[str, str]) -> None:
    """``features.tsv``; the optional 5th column ``source`` identifies the audio each row came from."""
    with atomic_open(out_dir / INDEX_NAME, "w") as f:
        f.write("id\tfile\tframes\tdim\tsource\n")
        for uid, name, frames, dim in rows:
            f.write(f"{uid}\t{name}\t{frames}\t{dim}\t{sources.get(uid, '')}\n")


def index_sources(out_dir: Path) -> Dict[str, str]:
    """``{id: source}`` of the 5th column of ``features.tsv`` (empty for folders of older versions)."""
    out: Dict[str, str] = {}
    try:
        with open(out_dir / INDEX_NAME, encoding="utf-8") as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 5 and parts[4]:
                    out[parts[0]] = parts[4]
    except OSError:
        pass
    return out


def source_of(path: Any) -> str:
    """The audio a feature file came from: resolved path, size and modification time; for decoded
    audio carried by the row itself, its length and a hash of its samples."""
    if isinstance(path, np.ndarray):
        data = np.ascontiguousarray(path, dtype=np.float32)
        return f"array|{data.size}|{hashlib.sha1(data.tobytes()).hexdigest()}"
    try:
        st = os.stat(path)
        return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}".replace("\t", " ")
    except OSError:
        return ""


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one feature file atomically (a killed run leaves no half-written file)."""
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def npy_shape(path: Path) -> Optional[Tuple[int, ...]]:
    """The shape of a readable ``.npy`` file, None for a missing or broken one."""
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except Exception:
        return None


def begin_writing(out_dir: Path, ids: Sequence[str], meta: Dict[str, Any],
                  same_features: Callable[[Dict[str, Any]], bool]) -> Tuple[Dict[str, IndexRow], Dict[str, str]]:
    """Make ``out_dir`` ready for the features of ``ids`` by the featuriser described by ``meta``
    (written as meta.json, with its creation time) and return what may be reused: the old index
    rows and their sources when ``same_features(old meta)`` holds, else nothing, the old feature
    files deleted (only ours: listed, or named after ``ids``). A folder with ``<id>.npy`` files but
    neither meta.json nor an index is refused."""
    meta_path = out_dir / META_NAME
    old_meta = None
    if meta_path.is_file():
        try:
            old_meta = json.loads(meta_path.read_text())
        except ValueError:
            old_meta = None
    old_index: Dict[str, IndexRow] = {}
    if (out_dir / INDEX_NAME).is_file():
        try:
            old_index = {r[0]: r for r in read_index(out_dir)}
        except FeatureError:
            old_index = {}
    valid_cache = old_meta is not None and same_features(old_meta)
    if old_meta is None and not old_index:
        # not a folder this module wrote: never adopt (nor overwrite) files that are already there
        foreign = sorted(feature_file_name(u) for u in ids if (out_dir / feature_file_name(u)).exists())
        if foreign:
            raise FeatureError(
                f"{out_dir} already holds {foreign[0]}" + (f" and {len(foreign) - 1} more .npy file(s)" if len(foreign) > 1 else "")
                + f" not written by cpc-speech extract (no {META_NAME}); use an empty or new output folder"
            )
    if not valid_cache and (old_meta is not None or old_index):
        stale = {out_dir / r[1] for r in old_index.values()} | {out_dir / feature_file_name(u) for u in ids}
        for p in stale:
            if p.suffix == ".npy" and p.parent == out_dir and p.is_file():
                p.unlink()
        if (out_dir / INDEX_NAME).is_file():
            (out_dir / INDEX_NAME).unlink()
        old_index = {}
    meta = dict(meta, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True))
    return old_index, (index_sources(out_dir) if old_index else {})


def load_feature_dir(out_dir: PathLike, mmap: bool = True, ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """``{id: array (frames, dim)}`` for a folder written by
    :func:`~cpc_speech.features.corpus.extract_corpus` (memory-mapped by default). ``ids``
    restricts to those ids (missing ones are an error)."""
    out_dir = Path(out_dir)
    rows = {r[0]: r for r in read_index(out_dir)}
    wanted = list(rows) if ids is None else list(ids)
    out: Dict[str, np.ndarray] = {}
    for uid in wanted:
        if uid not in rows:
            raise FeatureError(f"{out_dir / INDEX_NAME}: no features for utterance {uid!r}")
        path = out_dir / rows[uid][1]
        try:
            out[uid] = np.load(path, mmap_mode="r" if mmap else None)
        except Exception as exc:
            raise FeatureError(f"{path}: cannot read features ({exc})") from None
    return out


def read_meta(out_dir: PathLike) -> Dict[str, Any]:
    """The ``meta.json`` of a feature folder."""
    path = Path(out_dir) / META_NAME
    if not path.is_file():
        raise FeatureError(f"{out_dir}: no {META_NAME}")
    return json.loads(path.read_text())
