"""ABX phone discriminability (Libri-light / ZeroSpeech 2021): within- and across-speaker error.

An item is one phone occurrence (see :mod:`cpc_speech.evaluation.items`); items with the same
context (previous and next phone) form triplets A, B, X: A and X have the same central phone, B
another one. The triplet is an error when X is closer to B than to A (a tie counts one half). The
distance between two items is the path-length-normalised DTW (:mod:`cpc_speech.evaluation.dtw`) of
their frame-wise distances, by default the angular distance ``arccos(cos) / pi`` of the frames.

*Within*: A, B and X from one speaker (X another item of A's phone). *Across*: A and B from one
speaker, X from another. As in the reference scorer, items are grouped by (context, speaker,
phone); for every context and speaker, every phone A with every other phone B of that (context,
speaker) gives one cell whose score averages all its (x, a, b) triplets; at most ``max_size_group``
items of a group are drawn (a fresh draw for each cell), and across-speaker cells use at most
``max_x_across`` X speakers per A group. Scores are averaged over contexts per (speaker, phone A,
phone B), then over speakers per (phone A, phone B), then over phone pairs.

Defaults follow the reference scorer, so that numbers compare with published ones. Where we
knowingly differ, or offer a different convention:

* **Frame cut.** By default (``frame_rule="libri-light"``) an item gets the reference's frames:
  from the first frame whose centre is at or after the onset, ending one frame before the last
  centre inside the item in almost every case. ``frame_rule="centre"`` takes every frame whose
  centre lies in ``[onset, offset)`` (for items cut from 10 ms alignments: exactly the labelled
  frames). See :func:`~cpc_speech.evaluation.items.frame_ranges`.
* **KL divergences** are computed on the features as given (posteriorgrams); the reference first
  L2-normalises every frame and appends a constant channel, as it does for the cosine distance, so
  its "KL" is not between probability distributions; ``kl_normalised=True`` reproduces it.
* **Sampling** uses a seeded numpy generator (the reference draws with Python's unseeded
  ``random``): the draws differ, so only groups larger than ``max_size_group`` (or more X speakers
  than ``max_x_across``) score differently, by sampling noise. With both limits above the largest
  group the two agree to float rounding.

Zero frames: as in the reference, a zero vector is at angular distance 1 from every non-zero frame
and 0 from another zero frame.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from cpc_speech.evaluation.dtw import DISTANCES, dtw_normalised
from cpc_speech.evaluation.items import FRAME_SECONDS, ItemFile, frame_ranges
from cpc_speech.results import ABX_MODES as MODES
from cpc_speech.results import AbxResult, AbxScores

FRAME_RULES = ("libri-light", "centre")
PAIR_BUDGET = 1 << 22  # float32 cells of a DTW batch (pairs x diagonals x rows): 16 MB
FRAME_BUDGET = 1 << 23  # float32 values of the frames gathered for a DTW batch: 32 MB


class AbxError(ValueError):
    """An ABX input that cannot be scored; the message names the file or option."""


@dataclass
class AbxConfig:
    """How to score. ``max_size_group``/``max_x_across``: ``None`` for no limit."""

    modes: Tuple[str, ...] = MODES
    distance: str = "cosine"
    max_size_group: Optional[int] = 10
    max_x_across: Optional[int] = 5
    seed: int = 0
    frame_rule: str = "libri-light"
    kl_normalised: bool = False
    frame_seconds: float = FRAME_SECONDS

    def validate(self) -> "AbxConfig":
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise AbxError(f"mode must be within, across or both (comma-separated), got {','.join(self.modes) or 'nothing'}")
        if self.distance not in DISTANCES:
            raise AbxError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        for name in ("max_size_group", "max_x_across"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise AbxError(f"{name} must be at least 1 (or None for no limit), got {v}")
        if self.frame_rule not in FRAME_RULES:
            raise AbxError(f"frame rule must be one of {', '.join(FRAME_RULES)}, got {self.frame_rule!r}")
        if not self.frame_seconds > 0:
            raise AbxError(f"frame_seconds must be positive, got {self.frame_seconds}")
        return self


# ------------------------------------------------------------------------------------ items


@dataclass
class PreparedItems:
    """The scorable items: their frames, concatenated (frames, dim) float32, and integer codes."""

    frames: torch.Tensor
    starts: np.ndarray  # (items,) first row in ``frames``
    lengths: np.ndarray  # (items,) frames per item
    context: np.ndarray  # (items,) codes
    phone: np.ndarray
    speaker: np.ndarray
    phone_names: List[str]
    counts: Dict[str, int] = field(default_factory=dict)
    missing_files: List[str] = field(default_factory=list)


def unit_norm_with_sentinel(x: np.ndarray) -> np.ndarray:
    """Frames (n, D) scaled to unit norm plus one channel, so that dot products give the cosine
    similarity, a zero frame is at cosine -1 from every non-zero frame and at +1 from another zero
    frame (the reference scorer's convention): (n, D + 1) float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(1, keepdims=True))
    zero = norm[:, 0] == 0
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.float32)
    out[:, :-1] = x / np.where(zero[:, None], 1.0, norm)
    out[zero, :-1] = 1.0 / math.sqrt(x.shape[1])
    out[:, -1] = np.where(zero, -2e12, 1e-12)
    return out


def _codes(values: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    index: Dict[str, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return codes, list(index)


def prepare_items(items: ItemFile, features: Mapping[str, Any], cfg: AbxConfig) -> PreparedItems:
    """Cut every item's frames out of its file's features ``features[file]`` (frames, dim).

    Items of files without features and items with no frame left are skipped (counted in
    ``counts`` as ``no_features`` and ``too_short``; the reference scorer skips them silently);
    ``short_utterances`` counts the files whose features have no frame at all (clips shorter than
    the encoder's receptive field: all their items are ``too_short``). An error when nothing is
    left or the feature dimensions differ."""
    rule = cfg.frame_rule
    normalise = cfg.distance == "cosine" or cfg.kl_normalised
    by_file: Dict[str, List[int]] = {}
    for i, f in enumerate(items.files):
        by_file.setdefault(f, []).append(i)
    missing = [f for f in by_file if f not in features]
    chunks: List[np.ndarray] = []
    keep, lengths = [], []
    total, dim, dim_file, too_short, empty_files = 0, None, None, 0, 0
    for f, idx in by_file.items():
        if f not in features:
            continue
        arr = features[f]
        if getattr(arr, "ndim", None) != 2:
            raise AbxError(f"features of {f!r}: expected a (frames, dim) array, got shape {getattr(arr, 'shape', None)}")
        empty_files += arr.shape[0] == 0
        if dim is None:
            dim, dim_file = arr.shape[1], f
        elif arr.shape[1] != dim:
            raise AbxError(f"features of {f!r} have dimension {arr.shape[1]}, those of {dim_file!r} {dim}")
        idx_a = np.asarray(idx)
        rng = frame_ranges(items.onsets[idx_a], items.offsets[idx_a], np.full(len(idx), arr.shape[0]), rule,
                           cfg.frame_seconds)
        for i, (s, e) in zip(idx, rng):
            if e <= s:
                too_short += 1
                continue
            seg = np.asarray(arr[s:e], dtype=np.float32)
            if not np.isfinite(seg).all():
                raise AbxError(f"features of {f!r}: non-finite values in frames {s}..{e - 1} "
                               f"(item on line {items.lines[i]} of {items.path})")
            chunks.append(unit_norm_with_sentinel(seg) if normalise else seg)
            keep.append(i)
            lengths.append(e - s)
            total += e - s
    counts = {"items": len(items), "used": len(keep), "no_features": sum(len(by_file[f]) for f in missing),
              "too_short": too_short, "files_without_features": len(missing), "short_utterances": empty_files}
    if not keep:
        why = (f"none of its {len(by_file)} file(s) has features" if len(missing) == len(by_file)
               else "no item has a frame inside its feature file")
        raise AbxError(f"{items.path}: no item can be scored ({why}; the features must be named "
                       f"<file>.npy after the item file's first column)")
    contexts = items.contexts
    context, _ = _codes([contexts[i] for i in keep])
    phone, phone_names = _codes([items.phones[i] for i in keep])
    speaker, _ = _codes([items.speakers[i] for i in keep])
    lengths_a = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths_a)[:-1]]).astype(np.int64)
    frames = torch.from_numpy(np.concatenate(chunks)) if chunks else torch.zeros(0, dim or 0)
    return PreparedItems(frames, starts, lengths_a, context, phone, speaker, phone_names, counts, missing)


# ------------------------------------------------------------------------------------ cells


@dataclass
class Cells:
    """ABX cells of one mode: the item indices of their X, A and B groups and their coordinates
    (speaker, phone A, phone B, context[, speaker X])."""

    x: List[np.ndarray] = field(default_factory=list)
    a: List[np.ndarray] = field(default_factory=list)
    b: List[np.ndarray] = field(default_factory=list)
    coords: List[Tuple[int, ...]] = field(default_factory=list)


def _draw(group: np.ndarray, limit: Optional[int], rng: np.random.Generator) -> np.ndarray:
    if limit is None or group.size <= limit:
        return group
    return group[rng.choice(group.size, size=limit, replace=False)]


def _groups(p: PreparedItems) -> Dict[Tuple[int, int], Dict[int, np.ndarray]]:
    """{(context, speaker): {phone: item indices in item-file order}}, keys in first-seen order."""
    out: Dict[Tuple[int, int], Dict[int, List[int]]] = {}
    for i, (c, s, ph) in enumerate(zip(p.context.tolist(), p.speaker.tolist(), p.phone.tolist())):
        out.setdefault((c, s), {}).setdefault(ph, []).append(i)
    return {k: {ph: np.asarray(v) for ph, v in d.items()} for k, d in out.items()}


def within_cells(p: PreparedItems, max_size_group: Optional[int], rng: np.random.Generator) -> Cells:
    cells = Cells()
    for (c, s), phones in _groups(p).items():
        if len(phones) < 2:
            continue
        for pa, group_a in phones.items():
            if group_a.size < 2:
                continue
            for pb, group_b in phones.items():
                if pb == pa:
                    continue
                b = _draw(group_b, max_size_group, rng)
                a = _draw(group_a, max_size_group, rng)
                cells.x.append(a)
                cells.a.append(a)
                cells.b.append(b)
                cells.coords.append((s, pa, pb, c))
    return cells


def across_cells(p: PreparedItems, max_size_group: Optional[int], max_x: Optional[int], rng: np.random.Generator) -> Cells:
    groups = _groups(p)
    speakers_of: Dict[Tuple[int, int], List[int]] = {}  # (context, phone) -> speakers, first-seen order
    for (c, s), phones in groups.items():
        for ph in phones:
            speakers_of.setdefault((c, ph), []).append(s)
    cells = Cells()
    for (c, s), phones in groups.items():
        if len(phones) < 2:
            continue
        for pa, group_a in phones.items():
            others = [t for t in speakers_of[(c, pa)] if t != s]
            if max_x is not None and len(others) > max_x:
                others = [others[i] for i in rng.choice(len(others), size=max_x, replace=False)]
            for sx in others:
                for pb, group_b in phones.items():
                    if pb == pa:
                        continue
                    a = _draw(group_a, max_size_group, rng)
                    b = _draw(group_b, max_size_group, rng)
                    x = _draw(groups[(c, sx)][pa], max_size_group, rng)
                    cells.x.append(x)
                    cells.a.append(a)
                    cells.b.append(b)
                    cells.coords.append((s, pa, pb, c, sx))
    return cells


# ------------------------------------------------------------------------------------ distances


def _pair_keys(cells: Cells, n_items: int, symmetric: bool) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Per cell, the (row item * n_items + column item) keys of its X-A (Nx, Na) and X-B (Nx, Nb)
    distances. Symmetric (within) cells take each pair of A items in drawn order (the earlier one as
    the row, as the reference does) and a placeholder on the diagonal, which is never compared."""
    xa, xb = [], []
    for x, a, b in zip(cells.x, cells.a, cells.b):
        xb.append(x[:, None] * n_items + b[None, :])
        if symmetric:
            pos = np.arange(a.size)
            lo, hi = np.minimum(pos[:, None], pos[None, :]), np.maximum(pos[:, None], pos[None, :])
            hi = np.where(lo == hi, (lo + 1) % a.size, hi)
            lo2 = np.minimum(lo, hi)
            hi2 = np.maximum(lo, hi)
            xa.append(a[lo2] * n_items + a[hi2])
        else:
            xa.append(x[:, None] * n_items + a[None, :])
    return xa, xb


def pair_distances(p: PreparedItems, keys: np.ndarray, distance: str, progress: Optional[Any] = None) -> np.ndarray:
    """DTW distance of each (row item, column item) pair encoded in ``keys`` (unique int64 keys
    ``row * n_items + column``): (pairs,) float32, batched by (row length, column length)."""
    n_items = p.lengths.size
    rows, cols = keys // n_items, keys % n_items
    n, m = p.lengths[rows], p.lengths[cols]
    out = np.empty(keys.size, dtype=np.float32)
    dist_fn = DISTANCES[distance]
    shape_key = n * (int(p.lengths.max()) + 1) + m
    order = np.argsort(shape_key, kind="stable")
    bounds = np.flatnonzero(np.diff(shape_key[order])) + 1
    for sel in np.split(order, bounds):
        if sel.size == 0:
            continue
        ni, mi = int(n[sel[0]]), int(m[sel[0]])
        per_batch = max(1, min(PAIR_BUDGET // ((ni + mi) * max(ni, mi)), FRAME_BUDGET // ((ni + mi) * p.frames.shape[1])))
        ar_n, ar_m = torch.arange(ni), torch.arange(mi)
        for s in range(0, sel.size, per_batch):
            part = sel[s:s + per_batch]
            ri = torch.from_numpy(p.starts[rows[part]]).unsqueeze(1) + ar_n
            ci = torch.from_numpy(p.starts[cols[part]]).unsqueeze(1) + ar_m
            d = dist_fn(p.frames[ri], p.frames[ci])
            out[part] = dtw_normalised(d).numpy()
        if progress is not None:
            progress(sel.size)
    return out


# ------------------------------------------------------------------------------------ scores


def cell_errors(cells: Cells, dist: np.ndarray, xa: List[np.ndarray], xb: List[np.ndarray], symmetric: bool) -> np.ndarray:
    """Error of each cell: 1 - (#(d(x, a) < d(x, b)) + #ties / 2) / #triplets; ``xa``/``xb`` hold
    indices into ``dist``. Cells of equal (Nx, Na, Nb) are scored together."""
    errors = np.empty(len(cells.coords), dtype=np.float64)
    shapes: Dict[Tuple[int, int, int], List[int]] = {}
    for i, (x, a, b) in enumerate(zip(cells.x, cells.a, cells.b)):
        shapes.setdefault((x.size, a.size, b.size), []).append(i)
    for (nx, na, nb), idx in shapes.items():
        dxa = dist[np.stack([xa[i] for i in idx])]  # (C, Nx, Na)
        dxb = dist[np.stack([xb[i] for i in idx])]  # (C, Nx, Nb)
        lt = dxa[:, :, :, None] < dxb[:, :, None, :]
        eq = dxa[:, :, :, None] == dxb[:, :, None, :]
        if symmetric:
            off = ~np.eye(nx, dtype=bool)[None, :, :, None]
            lt, eq = lt & off, eq & off
            triplets = na * (na - 1) * nb
        else:
            triplets = nx * na * nb
        correct = lt.sum((1, 2, 3)) + 0.5 * eq.sum((1, 2, 3))
        errors[idx] = 1.0 - correct / triplets
    return errors


def _mean_by(keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(unique rows of ``keys``, mean of ``values`` per row)."""
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    sums = np.bincount(inv, weights=values, minlength=len(uniq))
    return uniq, sums / np.bincount(inv, minlength=len(uniq))


def aggregate(coords: np.ndarray, errors: np.ndarray) -> Tuple[float, Dict[str, int]]:
    """The reference's averaging: over contexts (and X speakers) per (speaker, phone A, phone B),
    then over speakers per (phone A, phone B), then over phone pairs."""
    per_speaker_pair, e1 = _mean_by(coords[:, :3], errors)
    per_pair, e2 = _mean_by(per_speaker_pair[:, 1:3], e1)
    return float(e2.mean()), {"cells": int(len(errors)), "speaker_phone_pairs": int(len(e1)), "phone_pairs": int(len(e2))}


def abx_error(items: ItemFile, features: Mapping[str, Any], cfg: Optional[AbxConfig] = None,
              log=None) -> Dict[str, Any]:
    """ABX error rates (fractions) of ``features`` ({file id: (frames, dim) array}) on ``items``.

    Returns ``{"within": e, "across": e, "details": {mode: {"cells", "speaker_phone_pairs",
    "phone_pairs", "pairs", "seconds"}}, "items": counts, "config": ...}`` (only the requested
    modes; a mode with no cell, e.g. across with one speaker, is ``None``)."""
    cfg = (cfg or AbxConfig()).validate()
    t0 = time.time()
    prepared = prepare_items(items, features, cfg)
    rng = np.random.default_rng(cfg.seed)
    out: Dict[str, Any] = {"details": {}, "items": prepared.counts}
    for mode in MODES:
        if mode not in cfg.modes:
            continue
        t_mode = time.time()
        symmetric = mode == "within"
        if symmetric:
            cells = within_cells(prepared, cfg.max_size_group, rng)
        else:
            cells = across_cells(prepared, cfg.max_size_group, cfg.max_x_across, rng)
        if not cells.coords:
            out[mode] = None
            out["details"][mode] = {"cells": 0, "reason": "no (context, speaker) with two phones"
                                    + (" and another speaker with the same context and phone" if not symmetric else "")}
            continue
        xa, xb = _pair_keys(cells, prepared.lengths.size, symmetric)
        all_keys = np.concatenate([k.reshape(-1) for k in xa + xb])
        uniq, inv = np.unique(all_keys, return_inverse=True)
        dist = pair_distances(prepared, uniq, cfg.distance)
        pos, split_xa, split_xb = 0, [], []
        for k in xa:
            split_xa.append(inv[pos:pos + k.size].reshape(k.shape))
            pos += k.size
        for k in xb:
            split_xb.append(inv[pos:pos + k.size].reshape(k.shape))
            pos += k.size
        errors = cell_errors(cells, dist, split_xa, split_xb, symmetric)
        score, info = aggregate(np.asarray(cells.coords, dtype=np.int64), errors)
        info.update({"pairs": int(uniq.size), "seconds": round(time.time() - t_mode, 3)})
        out[mode] = score
        out["details"][mode] = info
        if log is not None:
            log(f"ABX {mode}: {100 * score:.2f}% error ({info['cells']} cells, {info['pairs']} DTW pairs, {info['seconds']:.1f} s)")
    out["seconds"] = round(time.time() - t0, 3)
    return out


# ------------------------------------------------------------------------------------ result files

def score_sources(items: ItemFile, sources: Sequence[Any], cfg: AbxConfig, log=None) -> Dict[str, Any]:
    """The ABX result file's dict (:class:`~cpc_speech.results.AbxResult`) for
    :class:`~cpc_speech.evaluation.sources.FeatureSource` objects (the first one is the headline)::

        {"format_version": 1, "within": e, "across": e,          # fractions, of sources[0]
         "results": {name: {"within", "across", "layer", "features", "items", "details"}},
         "item_file", "layer", "modes", "distance", "max_size_group", "max_x_across", "seed",
         "frame_rule", "kl_normalised", "frame_seconds", "seconds"}

    Only the requested modes are keys, at the top and in each feature set's entry.
    """
    cfg = cfg.validate()
    t0 = time.time()
    not_run = frozenset(MODES) - set(cfg.modes)
    results: Dict[str, AbxScores] = {}
    for src in sources:
        res = abx_error(items, src.features, cfg, log=None if log is None else (lambda m, n=src.name: log(f"{n}: {m}")))
        results[src.name] = AbxScores(**{m: res.get(m) for m in cfg.modes}, layer=src.layer, features=src.where,
                                      items=res["items"], details=res["details"], seconds=res["seconds"], absent=not_run)
    first = results[sources[0].name]
    record = AbxResult(
        results=results, **{m: getattr(first, m) for m in cfg.modes}, item_file=str(items.path), layer=sources[0].layer,
        modes=list(cfg.modes), distance=cfg.distance, max_size_group=cfg.max_size_group, max_x_across=cfg.max_x_across,
        seed=cfg.seed, frame_rule=cfg.frame_rule, kl_normalised=cfg.kl_normalised, frame_seconds=cfg.frame_seconds,
        seconds=round(time.time() - t0, 3), absent=not_run,
    )
    return record.to_dict()
