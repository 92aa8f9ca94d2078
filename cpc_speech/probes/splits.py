"""Train/dev/test splits shared by the phone and speaker probes: split checks against the manifest,
alignments and features, and deterministic dev carving and hold-out.

Split files are read by :func:`cpc_speech.corpora.labels.read_id_list`; every problem is a
:class:`~cpc_speech.corpora.labels.LabelFileError` naming the split file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.corpora.labels import FrameLabels, IdList, LabelFileError, read_id_list

PathLike = Union[str, Path]


def as_split(split: Union[PathLike, IdList, Sequence[str]], name: str) -> IdList:
    """A split given as a file, an :class:`IdList` or a sequence of ids (``name``: "train split")."""
    if isinstance(split, IdList):
        return split
    if isinstance(split, (str, Path)):
        return read_id_list(split, name)
    return IdList.from_ids(list(split), name)


def check_split(
    split: IdList,
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
            raise LabelFileError(msg + " (use --skip-missing to drop them)")
        if warn is not None:
            warn("dropping: " + msg)
    kept = [u for u in split.ids if u in known]
    if not kept:
        raise LabelFileError(f"{split.path}: none of its {len(split)} utterance(s) is in {what} {where}: the split is empty")
    return kept


def check_disjoint(train: IdList, test: IdList) -> None:
    """A test id that is also in train is an error naming the test file and line."""
    both = [u for u in test.ids if u in train.lines]
    if both:
        first = ", ".join(f"{u!r} (line {test.lines[u]})" for u in both[:5])
        raise LabelFileError(f"{test.path}: {len(both)} test utterance(s) are also in the train split {train.path}: {first}")


def known_ids(split: IdList, manifest_ids: Iterable[str], manifest_name: str, ali: Optional[FrameLabels],
              skip_missing: bool, warn=None) -> List[str]:
    """Ids of ``split`` that are in the manifest (and in the alignments ``ali`` when given); see
    :func:`check_split`."""
    kept = check_split(split, manifest_ids, "the manifest", manifest_name, skip_missing, warn)
    if ali is not None:
        sub = IdList(split.path, kept, split.lines)
        kept = check_split(sub, ali.labels.keys(), "the alignment file", str(ali.path), skip_missing, warn)
    return kept


def with_features(ids: List[str], feats: Mapping[str, np.ndarray], split: IdList, name: str, skip_missing: bool,
                  warn=None) -> List[str]:
    """Ids whose features exist (audio that could not be read has none); others are an error, or
    with ``skip_missing`` dropped with one warning. ``name`` is the featuriser's."""
    missing = [u for u in ids if u not in feats]
    if missing:
        msg = (f"{split.path}: {len(missing)} utterance(s) have no features ({name}: their audio could not be read, "
               f"see the warnings above): {', '.join(repr(u) for u in missing[:5])}")
        if not skip_missing:
            raise LabelFileError(msg + " (use --skip-missing to drop them)")
        if warn is not None:
            warn("dropping: " + msg)
    kept = [u for u in ids if u in feats]
    if not kept:
        raise LabelFileError(f"{split.path}: no utterance of the split has features")
    return kept


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
