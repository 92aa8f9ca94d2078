"""The labelled data of a fine-tuning run: splits resolved against the manifest and the phone
targets (skipping, with warnings, what cannot be used), and the limited-label training subset."""

from __future__ import annotations

import hashlib
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from cpc_speech.corpora.labels import read_id_list
from cpc_speech.corpora.manifest import Utterance, read_manifest
from cpc_speech.finetune.config import FinetuneConfig, FinetuneError, FinetuneWarning
from cpc_speech.finetune.per import ctc_min_frames
from cpc_speech.finetune.subset import Subset, select_hours
from cpc_speech.finetune.targets import CTCClasses, Transcript, load_targets
from cpc_speech.results import SKIP_TOO_SHORT

MAX_LISTED_WARNINGS = 5  # per split and reason; the rest only counted


@dataclass
class Split:
    """Usable utterances of one split with their targets, and what was skipped."""

    name: str
    path: str
    utterances: List[Utterance]
    targets: List[Transcript]
    listed: int
    skipped: Dict[str, int] = field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        return {
            "file": self.path,
            "listed": self.listed,
            "used": len(self.utterances),
            "skipped": dict(self.skipped),
            "hours": sum(u.duration for u in self.utterances) / 3600.0,
            "phones": sum(len(t.labels) for t in self.targets),
        }


@dataclass
class FinetuneData:
    inventory: CTCClasses
    train: Split  # after the hours subset
    dev: Split
    test: Optional[Split]
    subset: Subset
    train_pool: int  # usable train utterances before the subset

    def fingerprint(self) -> str:
        h = hashlib.sha1()
        for split in (self.train, self.dev, self.test):
            if split is None:
                continue
            h.update(split.name.encode())
            for u, t in zip(split.utterances, split.targets):
                h.update(f"{u.id}:{u.num_samples}:{','.join(map(str, t.labels))};".encode())
        return h.hexdigest()


class _Skips:
    """Collects skipped utterances: the first few of each reason become warnings, all are counted."""

    def __init__(self, split: str):
        self.split = split
        self.counts: Dict[str, int] = defaultdict(int)

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_LISTED_WARNINGS:
            warnings.warn(f"{self.split} split: skipping {message}", FinetuneWarning, stacklevel=4)

    def finish(self, listed: int) -> None:
        for reason, n in self.counts.items():
            if n > MAX_LISTED_WARNINGS:
                warnings.warn(
                    f"{self.split} split: skipped {n} of {listed} utterances ({reason}); the first {MAX_LISTED_WARNINGS} are listed above",
                    FinetuneWarning,
                    stacklevel=3,
                )


def build_split(
    name: str,
    path: str,
    manifest: Dict[str, Utterance],
    manifest_path: str,
    targets: Dict[str, Transcript],
    targets_path: str,
    min_frames: Callable[[int], int],
) -> Split:
    """Resolve a split file against the manifest and targets; skip (with warnings) utterances
    missing from either, and those with too few frames for their labels under CTC."""
    entries = read_id_list(path, f"{name} split").entries()
    skips = _Skips(name)
    utts: List[Utterance] = []
    tgts: List[Transcript] = []
    for uid, lineno in entries:  # read_id_list refuses an id listed twice
        where = f"{uid!r} ({path}: line {lineno})"
        u = manifest.get(uid)
        if u is None:
            skips.add("missing from manifest", f"{where}: not in the manifest {manifest_path}")
            continue
        t = targets.get(uid)
        if t is None:
            skips.add("missing from transcripts", f"{where}: not in {targets_path}")
            continue
        frames = min_frames(u.num_samples_16k)
        need = ctc_min_frames(t.labels)
        if frames < max(1, need):
            repeats = need - len(t.labels)
            skips.add(
                SKIP_TOO_SHORT,
                f"{where}: {frames} frames ({u.duration:.3f} s) but its {len(t.labels)} phones need at least "
                f"{need} frames under CTC ({len(t.labels)} labels + {repeats} repeated adjacent labels; transcript {t.where})",
            )
            continue
        utts.append(u)
        tgts.append(t)
    skips.finish(len(entries))
    if utts and not any(t.labels for t in tgts):
        raise FinetuneError(f"{name} split {path}: its usable utterances hold no phones (only silence?), so PER is undefined")
    if not utts:
        reasons = ", ".join(f"{n} {r}" for r, n in skips.counts.items())
        raise FinetuneError(f"{name} split {path}: none of its {len(entries)} utterances is usable ({reasons})")
    return Split(name, path, utts, tgts, len(entries), dict(skips.counts))



def budget_text(hours: Optional[float], pool: Sequence[Utterance]) -> str:
    """The label budget and the pool it draws from, for the log: ``budget 1 h, pool 48 utterances
    (0.007 h)``, or ``budget all`` when ``hours`` is None or <= 0 (no limit)."""
    limit = "all" if hours is None or hours <= 0 else f"{hours:g} h"
    return f"budget {limit}, pool {len(pool)} utterances ({sum(u.duration for u in pool) / 3600.0:.3f} h)"


def prepare_data(cfg: FinetuneConfig, encoder, log: Callable[[str], None]) -> FinetuneData:
    """Read targets, manifest and splits; filter; choose the training subset. ``encoder``: the
    CPC encoder (:class:`cpc_speech.model.encoder.Encoder`) of the conditions' networks."""
    targets, inventory = load_targets(cfg.phones, cfg.transcripts, cfg.alignments)
    targets_path = cfg.transcripts or cfg.alignments
    manifest = {u.id: u for u in read_manifest(cfg.manifest)}
    # frames an utterance gets: the fewer of the CPC encoder's and the MFCC's (n // 160), whatever
    # conditions run, so that every condition sees the same utterances
    stride = cfg.head_stride

    def min_frames(n: int) -> int:  # CTC frames: after the head's time reduction
        return 0 if n < encoder.min_samples else -(-min(encoder.num_frames(n), int(n) // 160) // stride)

    def split(name, path):
        return build_split(name, path, manifest, cfg.manifest, targets, targets_path, min_frames)

    train_all = split("train", cfg.train_split)
    dev = split("dev", cfg.dev_split)
    test = split("test", cfg.test_split) if cfg.test_split else None
    train_ids = {u.id for u in train_all.utterances}
    for other in (dev, test):
        if other is not None:
            overlap = train_ids & {u.id for u in other.utterances}
            if overlap:
                warnings.warn(
                    f"{len(overlap)} utterance(s) of the {other.name} split ({other.path}) are also in the train split, e.g. {sorted(overlap)[0]!r}",
                    FinetuneWarning,
                    stacklevel=3,
                )
    subset = select_hours(train_all.utterances, cfg.hours, cfg.seed)
    by_id = {t.id: t for t in train_all.targets}
    train = Split(
        "train", train_all.path, subset.utterances, [by_id[u.id] for u in subset.utterances], train_all.listed, train_all.skipped
    )
    log(
        f"train: {len(train.utterances)} utterances, {subset.hours:.3f} h from {subset.speakers} speakers "
        f"({budget_text(cfg.hours, train_all.utterances)}); dev {len(dev.utterances)}; "
        f"test {len(test.utterances) if test else 0}; {len(inventory.class_names)} phone classes + blank"
    )
    return FinetuneData(inventory, train, dev, test, subset, len(train_all.utterances))


def all_utterances(data: FinetuneData) -> List[Utterance]:
    """The utterances of every split, train first."""
    return [u for s in (data.train, data.dev, data.test) if s is not None for u in s.utterances]
