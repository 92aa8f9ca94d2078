"""Limited-label training subsets: at most N hours, chosen deterministically, spread over speakers.

Selection (:func:`select_hours`): utterances are grouped by speaker; each speaker's list is sorted
by id and shuffled with the seed, and the speakers are put in a seeded order. Then speakers are
visited round-robin; each visit takes that speaker's next utterance that still fits in the budget
(longer ones that no longer fit are passed over for good). A speaker with nothing left that fits
drops out; selection ends when every speaker has dropped out. The result never exceeds the budget,
does not depend on the input order, and gives every speaker a turn before any gets a second one.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from cpc_speech.corpora.manifest import Utterance


@dataclass
class Subset:
    """The chosen utterances (in the input order), their total duration and the budget."""

    utterances: List[Utterance]
    seconds: float
    budget_hours: Optional[float]
    speakers: int

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0

    def per_speaker(self) -> Dict[str, int]:
        counts: Dict[str, int] = defaultdict(int)
        for u in self.utterances:
            counts[u.speaker] += 1
        return dict(counts)


def select_hours(utterances: Sequence[Utterance], hours: Optional[float], seed: int = 0) -> Subset:
    """Choose utterances totalling at most ``hours`` (``None`` or <= 0: all of them)."""
    utterances = list(utterances)
    if hours is None or hours <= 0:
        return Subset(utterances, sum(u.duration for u in utterances), None, len({u.speaker for u in utterances}))
    budget = float(hours) * 3600.0
    rng = random.Random(seed)
    groups: Dict[str, List[Utterance]] = defaultdict(list)
    for u in utterances:
        groups[u.speaker].append(u)
    speakers = sorted(groups)
    rng.shuffle(speakers)
    queues = {}
    for spk in speakers:
        items = sorted(groups[spk], key=lambda u: u.id)
        rng.shuffle(items)
        queues[spk] = deque(items)
    chosen = set()
    used = 0.0
    active = deque(speakers)
    while active:
        spk = active.popleft()
        queue = queues[spk]
        while queue and used + queue[0].duration > budget + 1e-9:
            queue.popleft()  # too long for what is left of the budget: never fits later either
        if not queue:
            continue  # speaker drops out
        u = queue.popleft()
        chosen.add(u.id)
        used += u.duration
        active.append(spk)
    picked = [u for u in utterances if u.id in chosen]
    return Subset(picked, sum(u.duration for u in picked), float(hours), len({u.speaker for u in picked}))
