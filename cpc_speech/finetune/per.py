"""Edit distance, phone error rate (PER) and greedy CTC decoding.

Label sequences are sequences of integer class indices. PER is a fraction (not a percentage):
total edit distance over a set of utterances divided by the total reference length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from cpc_speech.corpora.labels import collapse_runs


@dataclass(frozen=True)
class EditCounts:
    """Substitutions, deletions (reference labels missing from the hypothesis), insertions
    (extra hypothesis labels) and the reference length."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors / reference length; ``nan`` for an empty reference set."""
        return self.errors / self.ref_length if self.ref_length else float("nan")

    def __add__(self, other: "EditCounts") -> "EditCounts":
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_length + other.ref_length,
        )


def edit_counts(ref: Sequence[int], hyp: Sequence[int]) -> EditCounts:
    """Levenshtein alignment of ``hyp`` against ``ref`` (unit costs) with the error kinds.

    Among alignments with the minimal total, the one with most substitutions is reported (ties are
    broken towards substitution, then deletion, then insertion).
    """
    ref, hyp = list(ref), list(hyp)
    n, m = len(ref), len(hyp)
    # cost[i][j] = (total, subs, dels, ins) for ref[:i] vs hyp[:j]
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)] + [None] * m
        for j in range(1, m + 1):
            d = prev[j - 1]
            if ref[i - 1] == hyp[j - 1]:
                diag = d
            else:
                diag = (d[0] + 1, d[1] + 1, d[2], d[3])
            up = prev[j]
            dele = (up[0] + 1, up[1], up[2] + 1, up[3])
            left = cur[j - 1]
            ins = (left[0] + 1, left[1], left[2], left[3] + 1)
            cur[j] = min((diag, dele, ins), key=lambda c: c[0])  # first minimum wins: sub, del, ins
        prev = cur
    total, s, dl, ins = prev[m]
    return EditCounts(s, dl, ins, n)


def edit_distance(ref: Sequence[int], hyp: Sequence[int]) -> int:
    """Minimal number of substitutions, deletions and insertions turning ``ref`` into ``hyp``."""
    return edit_counts(ref, hyp).errors


def error_counts(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> EditCounts:
    """Summed :class:`EditCounts` over paired utterances."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    total = EditCounts()
    for r, h in zip(refs, hyps):
        total = total + edit_counts(r, h)
    return total


def phone_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> float:
    """Total edit distance / total reference length (a fraction; can exceed 1 with insertions).

    Raises ``ValueError`` when the references hold no labels at all.
    """
    counts = error_counts(refs, hyps)
    if counts.ref_length == 0:
        raise ValueError("phone error rate is undefined: the references contain no phones")
    return counts.rate


def greedy_decode(log_probs: torch.Tensor, lengths: Optional[Sequence[int]] = None, blank: int = 0) -> List[List[int]]:
    """Best-path CTC decoding.

    ``log_probs``: (frames, classes) for one utterance or (batch, frames, classes); ``lengths``
    the valid frames of each batch row (default: all). Returns one label list per utterance.
    """
    if log_probs.dim() == 2:
        log_probs = log_probs.unsqueeze(0)
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (frames, classes) or (batch, frames, classes), got {tuple(log_probs.shape)}")
    best = log_probs.argmax(dim=-1).cpu()
    if lengths is None:
        lengths = [best.shape[1]] * best.shape[0]
    return [collapse_runs(best[b, : int(n)].tolist(), drop=blank) for b, n in enumerate(lengths)]


def ctc_min_frames(labels: Sequence[int]) -> int:
    """Fewest frames a CTC path for ``labels`` needs: one per label plus one blank between each
    pair of equal adjacent labels."""
    labels = list(labels)
    repeats = sum(1 for a, b in zip(labels, labels[1:]) if a == b)
    return len(labels) + repeats
