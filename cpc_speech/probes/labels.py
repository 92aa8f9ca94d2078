"""Probe inputs: frame-level alignment files, phone inventories and train/dev/test splits.

Alignment file (CPC_audio format, e.g. ``converted_aligned_phones.txt``): one line per utterance,
the utterance id then one integer label per 10 ms (label ``t`` covers samples ``[160 t, 160 t + 160)``
at 16 kHz), separated by whitespace. Phone inventory (``phones.txt``, optional): lines ``<id> <name>``.
Split files (``train_split.txt``, ``test_split.txt``): one utterance id per line; blank lines and
``#`` comments are ignored.

Every error is a :class:`LabelError` naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.audio import missing_file

PathLike = Union[str, Path]


class LabelError(ValueError):
    """A malformed or inconsistent label/split file; the message names the file and line."""


@dataclass
class Alignments:
    """Per-utterance integer labels read from ``path``; ``lines[id]`` is the 1-based line number."""

    path: Path
    labels: Dict[str, np.ndarray]
    lines: Dict[str, int]

    def __contains__(self, uid: str) -> bool:
        return uid in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(max((int(v.max()) for v in self.labels.values() if v.size), default=-1)) + 1

    def where(self, uid: str) -> str:
        return f"{self.path}: line {self.lines[uid]}"

    def for_frames(self, uid: str, frames: int, source: str = "features") -> np.ndarray:
        """Labels of ``uid`` matched to ``frames`` feature frames.

        A difference of one frame (rounding of the last partial 10 ms) is absorbed by trimming the
        longer of the two; the caller trims the features to ``len(result)``. A larger difference is
        an error naming the alignment file and line.
        """
        if uid not in self.labels:
            raise LabelError(f"{self.path}: no alignment for utterance {uid!r}")
        lab = self.labels[uid]
        if abs(lab.size - frames) > 1:
            raise LabelError(
                f"{self.where(uid)}: utterance {uid!r} has {lab.size} labels but its {source} have {frames} "
                f"frames (difference {lab.size - frames:+d}; at most one frame is tolerated). Is the "
                "alignment for the same audio, at 10 ms per label and 16 kHz?"
            )
        return lab[: min(lab.size, frames)]


def read_alignments(path: PathLike) -> Alignments:
    """Read a CPC_audio-style alignment file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(missing_file("alignment file", path))
    labels: Dict[str, np.ndarray] = {}
    lines: Dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            uid = parts[0]
            if uid in labels:
                raise LabelError(f"{path}: line {lineno}: duplicate utterance {uid!r} (first on line {lines[uid]})")
            try:
                lab = np.array([int(x) for x in parts[1:]], dtype=np.int64)
            except ValueError:
                bad = next(x for x in parts[1:] if not _is_int(x))
                raise LabelError(f"{path}: line {lineno}: label {bad!r} of utterance {uid!r} is not an integer") from None
            if lab.size == 0:
                raise LabelError(f"{path}: line {lineno}: utterance {uid!r} has no labels")
            if lab.min() < 0:
                raise LabelError(f"{path}: line {lineno}: negative label {int(lab.min())} in utterance {uid!r}")
            labels[uid] = lab
            lines[uid] = lineno
    if not labels:
        raise LabelError(f"{path}: alignment file has no utterances")
    return Alignments(path, labels, lines)


def _is_int(x: str) -> bool:
    try:
        int(x)
        return True
    except ValueError:
        return False


def read_label_names(path: PathLike) -> Dict[int, str]:
    """``phones.txt``: lines ``<id> <name>`` (either order is accepted: ``<name> <id>`` too)."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"phone inventory not found: {path}")
    names: Dict[int, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) != 2:
            raise LabelError(f"{path}: line {lineno}: expected '<id> <name>', got {line.strip()!r}")
        if _is_int(parts[0]):
            idx, name = int(parts[0]), parts[1]
        elif _is_int(parts[1]):
            idx, name = int(parts[1]), parts[0]
        else:
            raise LabelError(f"{path}: line {lineno}: no integer id in {line.strip()!r}")
        if idx in names:
            raise LabelError(f"{path}: line {lineno}: duplicate id {idx}")
        names[idx] = name
    if not names:
        raise LabelError(f"{path}: phone inventory is empty")
    return names


def label_names(num_classes: int, names: Optional[Mapping[int, str]] = None) -> List[str]:
    """Names for ids 0..num_classes-1 (the id itself where the inventory has no name)."""
    names = names or {}
    return [names.get(i, str(i)) for i in range(num_classes)]


@dataclass
class SplitFile:
    """Ids of a split file with their line numbers."""

    path: Path
    ids: List[str]
    lines: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def read_split(path: PathLike, name: str = "split") -> SplitFile:
    """One id per line; duplicates are an error; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise LabelError(missing_file(f"{name} file", path))
    ids: List[str] = []
    lines: Dict[str, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        uid = parts[0]
        if uid in lines:
            raise LabelError(f"{path}: line {lineno}: duplicate id {uid!r} (first on line {lines[uid]})")
        lines[uid] = lineno
        ids.append(uid)
    if not ids:
        raise LabelError(f"{path}: {name} is empty (no utterance ids)")
    return SplitFile(path, ids, lines)


def check_split(
    split: SplitFile,
    known: Iterable[str],
    what: str,
    where: str,
    skip_missing: bool = False,
    warn=None,
) -> List[str]:
    """Ids of ``split`` that are in ``known``; others are an error naming the split file and line
    (``what``/``where`` describe ``known``, e.g. "the manifest", its path), or with ``skip_missing``
    are dropped with one warning. An empty result is an error."""
    known = set(known)
    missing = [u for u in split.ids if u not in known]
    if missing:
        first = ", ".join(f"{u!r} (line {split.lines[u]})" for u in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        msg = f"{split.path}: {len(missing)} of {len(split)} utterance(s) are not in {what} {where}: {first}{more}"
        if not skip_missing:
            raise LabelError(msg + " (use --skip-missing to drop them)")
        if warn is not None:
            warn("dropping: " + msg)
    kept = [u for u in split.ids if u in known]
    if not kept:
        raise LabelError(f"{split.path}: none of its {len(split)} utterance(s) is in {what} {where}: the split is empty")
    return kept


def check_disjoint(train: SplitFile, test: SplitFile) -> None:
    both = [u for u in test.ids if u in train.lines]
    if both:
        first = ", ".join(f"{u!r} (line {test.lines[u]})" for u in both[:5])
        raise LabelError(f"{test.path}: {len(both)} test utterance(s) are also in the train split {train.path}: {first}")


def carve_dev(
    train_ids: Sequence[str],
    fraction: float = 0.1,
    seed: int = 0,
    groups: Optional[Mapping[str, str]] = None,
    min_group: int = 2,
) -> Tuple[List[str], List[str]]:
    """Split the TRAIN ids into (fit, dev), deterministically (sorted ids, seeded permutation).

    Without ``groups``: ``max(1, round(fraction * n))`` utterances go to dev (none if n < 2).
    With ``groups`` (utterance -> speaker): each group with at least ``min_group`` utterances gives
    ``max(1, round(fraction * size))`` of them to dev, so every dev speaker also has fit utterances.
    The input order of the fit ids is kept.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    ordered = sorted(set(train_ids))
    dev: set = set()
    if groups is None:
        if len(ordered) >= 2:
            k = min(len(ordered) - 1, max(1, int(round(fraction * len(ordered)))))
            dev = {ordered[i] for i in rng.permutation(len(ordered))[:k]}
    else:
        by_group: Dict[str, List[str]] = {}
        for u in ordered:
            by_group.setdefault(groups[u], []).append(u)
        for g in sorted(by_group):
            members = by_group[g]
            if len(members) >= min_group:
                k = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
                dev.update(members[i] for i in rng.permutation(len(members))[:k])
    fit = [u for u in train_ids if u not in dev]
    return fit, [u for u in train_ids if u in dev]


def holdout_per_group(ids: Sequence[str], groups: Mapping[str, str], fraction: float, seed: int = 0) -> Tuple[List[str], List[str]]:
    """Deterministic per-speaker hold-out: (train, test) with ``max(1, round(fraction * n))`` test
    utterances from every speaker that has at least 2."""
    return carve_dev(ids, fraction, seed=seed + 1, groups=groups, min_group=2)
