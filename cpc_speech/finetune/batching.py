"""Training batches of utterances for fine-tuning.

A batch is a list of utterance indices. Batches hold either a fixed number of utterances or as
many length-sorted utterances as fit a budget of padded frames (``batch_frames``: the batch's
longest utterance in 10 ms frames times its size), so short utterances come in larger batches.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from cpc_speech.corpora.manifest import Utterance

BATCHING = ("length", "random")
SAMPLES_PER_FRAME = 160  # 10 ms at 16 kHz


def length_order(utts: Sequence[Utterance]) -> List[int]:
    """Indices of ``utts`` from shortest to longest (ties by id): batches of neighbours pad little."""
    return sorted(range(len(utts)), key=lambda i: (utts[i].num_samples_16k, utts[i].id))


def _frame_budget_batches(utts: Sequence[Utterance], order: Sequence[int], batch_frames: int) -> List[List[int]]:
    batches: List[List[int]] = []
    current: List[int] = []
    for i in order:
        frames = max(1, utts[i].num_samples_16k // SAMPLES_PER_FRAME)
        longest = max([frames] + [utts[j].num_samples_16k // SAMPLES_PER_FRAME for j in current])
        if current and longest * (len(current) + 1) > batch_frames:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def epoch_batches(utts: Sequence[Utterance], batch_size: int, batching: str, gen: torch.Generator,
                  batch_frames: int = 0) -> List[List[int]]:
    """One epoch's batches of utterance indices.

    ``random``: a random permutation cut into batches of ``batch_size``. ``length``: utterances
    sorted by length (in samples) cut into batches of ``batch_size`` utterances, or, when
    ``batch_frames`` > 0, of at most ``batch_frames`` padded frames (an utterance longer than the
    budget is a batch of its own); the batches come in random order. A batch is padded to its
    longest utterance, so similar lengths waste little computation on padding.
    """
    n = len(utts)
    if batching == "random":
        order = torch.randperm(n, generator=gen).tolist()
        if batch_frames > 0:
            return _frame_budget_batches(utts, order, batch_frames)
        return [order[i: i + batch_size] for i in range(0, n, batch_size)]
    order = length_order(utts)
    if batch_frames > 0:
        batches = _frame_budget_batches(utts, order, batch_frames)
    else:
        batches = [order[i: i + batch_size] for i in range(0, n, batch_size)]
    return [batches[j] for j in torch.randperm(len(batches), generator=gen).tolist()]
