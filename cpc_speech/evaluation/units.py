"""Discrete units: k-means on frame features (scikit-learn ``MiniBatchKMeans``, seeded), the
centroids saved without pickle, unit sequences per utterance, and unit quality against frame labels.

Centroid folder: ``centroids.npy`` (units x dim float32, loaded with ``allow_pickle=False``) and
``kmeans.json`` (``format_version``, ``units``, ``dim``, ``seed``, the features' layer and folder,
the fit's frame count and inertia); :func:`load_centroids` refuses a folder whose version, shape or
dimension does not fit.

Quality (all frames with a label; the unit of frame ``t`` against the phone label of frame ``t``):

* ``pnmi``: phone-normalised mutual information I(phone; unit) / H(phone), in [0, 1];
* ``purity``: sum over units of max over phones of P(phone, unit): how well units predict phones;
  ``unit_purity``: the same with phones and units swapped;
* ``entropy_bits`` / ``perplexity`` of the unit distribution, ``used_units``, and
  ``max_unit_share`` (the most used unit's share of frames: collapse to a few units shows here).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from cpc_speech.results import ABX_MODES, UnitsResult
from cpc_speech.types import PathLike

FORMAT_VERSION = 1  # of kmeans.json
CENTROIDS = "centroids.npy"
META = "kmeans.json"


class UnitsError(ValueError):
    """A bad unit request or centroid folder; the message names it."""


def sample_frames(features: Mapping[str, np.ndarray], max_frames: int, seed: int) -> np.ndarray:
    """At most ``max_frames`` frames drawn uniformly (without replacement, seeded) from all
    utterances: (n, dim) float32."""
    ids = list(features)
    sizes = np.array([features[u].shape[0] for u in ids], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        raise UnitsError("no frames to fit the units on")
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    owner = np.searchsorted(bounds, take, side="right") - 1
    out = []
    for j in np.unique(owner):
        rows = take[owner == j] - bounds[j]
        out.append(np.asarray(features[ids[j]][rows], dtype=np.float32))
    return np.concatenate(out)


def fit_kmeans(frames: np.ndarray, units: int, seed: int = 0, batch_size: int = 10000, n_init: int = 3,
               max_iter: int = 100) -> Tuple[np.ndarray, float]:
    """(centroids (units, dim) float32, inertia) of MiniBatchKMeans on ``frames`` (n, dim)."""
    from sklearn.cluster import MiniBatchKMeans

    if units < 2:
        raise UnitsError(f"--units must be at least 2, got {units}")
    if frames.shape[0] < units:
        raise UnitsError(f"{frames.shape[0]} frames cannot make {units} units")
    km = MiniBatchKMeans(n_clusters=units, random_state=seed, batch_size=min(batch_size, frames.shape[0]),
                         n_init=n_init, max_iter=max_iter, compute_labels=False)
    km.fit(frames)
    return km.cluster_centers_.astype(np.float32), float(km.inertia_) if km.inertia_ is not None else math.nan


def save_centroids(folder: PathLike, centroids: np.ndarray, info: Dict[str, Any]) -> Path:
    """Write ``centroids.npy`` and ``kmeans.json`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (".tmp-" + CENTROIDS)
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(centroids, dtype=np.float32), allow_pickle=False)
    os.replace(tmp, folder / CENTROIDS)
    meta = {"format_version": FORMAT_VERSION, "units": int(centroids.shape[0]), "dim": int(centroids.shape[1]), **info}
    tmp = folder / (".tmp-" + META)
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, folder / META)
    return folder


def load_centroids(folder: PathLike, dim: Optional[int] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
    """(centroids, kmeans.json) of a folder written by :func:`save_centroids`; strict: a wrong
    version, a shape other than the one recorded, or a feature dimension other than ``dim`` is an
    error naming the file."""
    folder = Path(folder)
    meta_path, arr_path = folder / META, folder / CENTROIDS
    for p in (meta_path, arr_path):
        if not p.is_file():
            raise FileNotFoundError(f"{folder}: no {p.name} (not a unit folder written by cpc-speech quantize)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UnitsError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise UnitsError(f"{meta_path}: format_version {meta.get('format_version') if isinstance(meta, dict) else None!r}, "
                         f"this version of cpc_speech reads {FORMAT_VERSION}")
    try:
        cent = np.load(arr_path, allow_pickle=False)
    except Exception as exc:
        raise UnitsError(f"{arr_path}: cannot read ({exc})") from None
    if cent.dtype != np.float32 or cent.shape != (meta.get("units"), meta.get("dim")):
        raise UnitsError(f"{arr_path}: a {cent.dtype} array of shape {cent.shape}, {META} says float32 "
                         f"({meta.get('units')}, {meta.get('dim')})")
    if dim is not None and dim != cent.shape[1]:
        raise UnitsError(f"{folder}: centroids of dimension {cent.shape[1]} cannot quantise features of dimension {dim}")
    return cent, meta


def assign_units(x: np.ndarray, centroids: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Nearest centroid (Euclidean) of every frame of ``x`` (frames, dim): (frames,) int64."""
    c = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32))
    c_sq = (c * c).sum(1)
    out = np.empty(x.shape[0], dtype=np.int64)
    for s in range(0, x.shape[0], chunk):
        xs = torch.from_numpy(np.array(x[s:s + chunk], dtype=np.float32))  # a copy: memory maps are read-only
        out[s:s + chunk] = torch.argmin(c_sq - 2.0 * xs @ c.T, dim=1).numpy()
    return out


def run_length(units: np.ndarray) -> np.ndarray:
    """(runs, 2) int32: [unit, frames] of each run of equal units."""
    if units.size == 0:
        return np.zeros((0, 2), dtype=np.int32)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(units)) + 1])
    lengths = np.diff(np.concatenate([starts, [units.size]]))
    return np.stack([units[starts], lengths], 1).astype(np.int32)


def write_units(folder: PathLike, units: Mapping[str, np.ndarray], fmt: str = "npy", runs: bool = False) -> Path:
    """Unit sequences: ``fmt="npy"``: ``folder/units/<id>.npy`` (frames,) int16/int32 or, with
    ``runs``, (runs, 2) [unit, frames]; ``fmt="text"``: ``folder/units.txt``, one line per utterance
    ``<id> u u u ...`` or, with ``runs``, ``<id> u:frames u:frames ...``. Returns the path."""
    folder = Path(folder)
    if fmt == "npy":
        out = folder / "units"
        out.mkdir(parents=True, exist_ok=True)
        for uid, u in units.items():
            arr = run_length(u) if runs else u.astype(np.int16 if u.size == 0 or u.max() < 32768 else np.int32)
            tmp = out / f".tmp-{uid}.npy"
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
            os.replace(tmp, out / f"{uid}.npy")
        return out
    if fmt == "text":
        lines = []
        for uid, u in units.items():
            toks = [f"{a}:{n}" for a, n in run_length(u).tolist()] if runs else [str(v) for v in u.tolist()]
            lines.append(" ".join([uid] + toks) + "\n")
        path = folder / "units.txt"
        tmp = folder / ".tmp-units.txt"
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, path)
        return path
    raise UnitsError(f"unit format must be npy or text, got {fmt!r}")


def unit_quality(units: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], n_units: int) -> Dict[str, Any]:
    """Quality of ``units`` ({id: (frames,)}) against frame ``labels`` ({id: (frames,)}, trimmed
    to the shorter of the two). Definitions in the module docstring."""
    us, ls = [], []
    for uid, u in units.items():
        if uid not in labels:
            continue
        n = min(u.size, labels[uid].size)
        us.append(u[:n])
        ls.append(np.asarray(labels[uid][:n]))
    if not us:
        raise UnitsError("no utterance has both units and frame labels")
    u = np.concatenate(us)
    lab = np.concatenate(ls)
    n_phones = int(lab.max()) + 1
    joint = np.bincount(lab * n_units + u, minlength=n_phones * n_units).reshape(n_phones, n_units) / u.size
    p_phone, p_unit = joint.sum(1), joint.sum(0)

    def entropy(p):
        p = p[p > 0]
        return float(-(p * np.log2(p)).sum())

    nz = joint > 0
    mi = float((joint[nz] * np.log2(joint[nz] / (p_phone[:, None] * p_unit[None, :])[nz])).sum())
    h_phone, h_unit = entropy(p_phone), entropy(p_unit)
    return {
        "frames": int(u.size),
        "utterances": len(us),
        "pnmi": mi / h_phone if h_phone > 0 else None,
        "purity": float(joint.max(0).sum()),
        "unit_purity": float(joint.max(1).sum()),
        "entropy_bits": h_unit,
        "perplexity": 2.0 ** h_unit,
        "used_units": int((p_unit > 0).sum()),
        "max_unit_share": float(p_unit.max()),
        "unit_share": [round(float(x), 6) for x in p_unit],
    }


class OneHot(Mapping):
    """{id: one-hot (frames, units) float32} built on access from {id: (frames,) units}: the unit
    sequences as features for the ABX."""

    def __init__(self, units: Mapping[str, np.ndarray], n_units: int):
        self.units, self.n_units = units, n_units

    def __getitem__(self, uid: str) -> np.ndarray:
        u = self.units[uid]
        out = np.zeros((u.size, self.n_units), dtype=np.float32)
        out[np.arange(u.size), u] = 1.0
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.units)

    def __len__(self) -> int:
        return len(self.units)

    def __contains__(self, uid: object) -> bool:
        return uid in self.units


def quantize(
    features: Mapping[str, np.ndarray],
    units: int,
    out_dir: PathLike,
    seed: int = 0,
    max_fit_frames: int = 500_000,
    centroids_from: Optional[PathLike] = None,
    fmt: str = "npy",
    runs: bool = False,
    labels: Optional[Mapping[str, np.ndarray]] = None,
    items=None,
    abx_config=None,
    info: Optional[Dict[str, Any]] = None,
    log=print,
) -> Dict[str, Any]:
    """Fit (or load, ``centroids_from``) the units, assign them to every utterance of ``features``,
    write both into ``out_dir`` and measure their quality against ``labels`` (and the ABX of the
    one-hot units on ``items``). Returns the summary written to ``out_dir/quality.json``.
    Utterances with no frame get an empty unit sequence, counted as ``short_utterances``."""
    import time

    t0 = time.time()
    ids = sorted(features)
    if not ids:
        raise UnitsError("no features to quantise")
    dim = int(features[ids[0]].shape[1])
    info = dict(info or {})
    if centroids_from is not None:
        cent, meta = load_centroids(centroids_from, dim)
        fit = {"centroids_from": str(centroids_from), "fit_frames": meta.get("fit_frames"), "inertia": meta.get("inertia")}
        save_centroids(out_dir, cent, {**{k: v for k, v in meta.items() if k not in ("format_version", "units", "dim")}})
    else:
        frames = sample_frames(features, max_fit_frames, seed)
        log(f"fitting {units} units on {frames.shape[0]} frames of dimension {dim}")
        cent, inertia = fit_kmeans(frames, units, seed)
        fit = {"fit_frames": int(frames.shape[0]), "inertia": inertia}
        save_centroids(out_dir, cent, {"seed": seed, **info, **fit})
    assigned = {u: assign_units(np.asarray(features[u]), cent) for u in ids}
    where = write_units(out_dir, assigned, fmt, runs)
    short = [u for u in ids if assigned[u].size == 0]
    if short:
        log(f"warning: {len(short)} of {len(ids)} utterance(s) have no frame (clips shorter than the encoder's "
            f"receptive field, e.g. {short[0]!r}): empty unit sequences, counted as short_utterances")
    named = {k: info.pop(k) for k in ("name", "layer", "features") if k in info}
    record = UnitsResult(units=int(cent.shape[0]), dim=dim, seed=seed, **named, assigned_utterances=len(ids),
                         short_utterances=len(short), unit_files=str(where), extra={**info, **fit})
    if labels is not None:
        record.quality = unit_quality(assigned, labels, int(cent.shape[0]))
    if items is not None:
        from cpc_speech.evaluation.abx import AbxConfig, abx_error

        res = abx_error(items, OneHot(assigned, int(cent.shape[0])), abx_config or AbxConfig())
        record.abx = {k: res.get(k) for k in ABX_MODES}
    record.seconds = round(time.time() - t0, 3)
    record.write(Path(out_dir) / "quality.json")
    return record.to_dict()


def labels_for(units_ids: Sequence[str], alignments, frames: Mapping[str, int]) -> Dict[str, np.ndarray]:
    """{id: labels} of the ids the alignment file has, matched to their frame counts (a one-frame
    difference trimmed, see :meth:`cpc_speech.corpora.labels.FrameLabels.for_frames`); ids with no
    frame (clips shorter than the encoder's receptive field) have nothing to match and are left out."""
    return {u: alignments.for_frames(u, frames[u]) for u in units_ids if u in alignments and frames[u] > 0}
