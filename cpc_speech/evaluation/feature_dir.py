"""A folder of per-utterance feature files ``<utterance id>.npy`` (frames x dim), flat as
``cpc-speech extract`` writes it or in nested folders (e.g. ``dev-clean/84/121123/84-121123-0000.npy``).
Files are memory-mapped and never unpickled."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

import numpy as np

from cpc_speech.types import PathLike


def find_feature_files(folder: PathLike) -> Dict[str, Path]:
    """{utterance id: path} of every ``*.npy`` under ``folder`` (hidden and temporary files
    skipped); the same id in two places is an error naming both."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"feature folder not found: {folder}")
    found: Dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".npy") or name.startswith("."):
                continue
            uid = name[:-4]
            path = Path(root) / name
            if uid in found:
                raise ValueError(f"{folder}: two feature files for utterance {uid!r}: {found[uid]} and {path}")
            found[uid] = path
    if not found:
        raise ValueError(f"{folder}: no .npy feature files (expected <utterance id>.npy, frames x dim)")
    return found


def load_npy(path: PathLike) -> np.ndarray:
    """A 2-D array from ``path``, memory-mapped, without pickle; a clear error otherwise."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read as a .npy array ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a (frames, dim) array, got shape {arr.shape}")
    return arr


def load_features(folder: PathLike, ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """{id: (frames, dim) memory-mapped array} of the files under ``folder`` (only ``ids`` if given;
    ids without a file are left out)."""
    files = find_feature_files(folder)
    wanted = files if ids is None else [u for u in dict.fromkeys(ids) if u in files]
    return {u: load_npy(files[u]) for u in wanted}


def feature_meta(folder: PathLike) -> Dict[str, Any]:
    """``meta.json`` of a folder written by ``cpc-speech extract`` ({} if there is none)."""
    path = Path(folder) / "meta.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
