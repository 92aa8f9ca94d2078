"""Negative sampling for InfoNCE: which frames of a batch serve as negatives.

Frames of a batch are numbered globally, ``g = window * frames + t``. For every window ``b``, query
frame ``t`` and step ``k`` the sampler draws negatives from a pool and never returns the positive
frame ``g = b * frames + t + k`` itself:

* ``same_utterance``: frames of the windows that share ``b``'s utterance id (its own window included);
* ``same_speaker``: frames of the *other* windows that share ``b``'s speaker id (a batch where some
  window has no other window of its speaker is an error);
* ``cross_batch``: all frames of all windows of the batch.

A spec mixes pools by proportion, e.g. ``"same_utterance:0.5,cross_batch:0.5"``. Sampling is
vectorised: one draw of uniform numbers, no Python loop over frames or negatives.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

MODES = ("same_utterance", "same_speaker", "cross_batch")


def parse_sampling(spec: str, negatives: int) -> List[Tuple[str, int]]:
    """``"same_utterance:0.5,cross_batch:0.5"`` -> ``[("same_utterance", 64), ("cross_batch", 64)]``.

    Shares are normalised; counts add up to ``negatives`` (largest remainders get the rest).
    A bare name means share 1.
    """
    if negatives < 1:
        raise ValueError(f"the number of negatives must be at least 1, got {negatives}")
    shares: Dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        name, _, share = part.partition(":")
        name = name.strip()
        if name not in MODES:
            raise ValueError(f"unknown negative sampling mode {name!r} in {spec!r}; choose from {', '.join(MODES)}")
        try:
            value = float(share) if share else 1.0
        except ValueError:
            raise ValueError(f"share of {name!r} in {spec!r} is not a number") from None
        if value < 0:
            raise ValueError(f"share of {name!r} in {spec!r} is negative")
        shares[name] = shares.get(name, 0.0) + value
    total = sum(shares.values())
    if not shares or total <= 0:
        raise ValueError(f"negative sampling spec {spec!r} names no mode with a positive share")
    exact = {k: negatives * v / total for k, v in shares.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: negatives - sum(counts.values())]:
        counts[k] += 1
    return [(k, n) for k, n in counts.items() if n > 0]


def _group_members(groups: torch.Tensor, include_self: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each window b: members (B, B) listing the windows of its group first (ascending), the
    member count (B,), and b's own rank among its members (B,) (valid when ``include_self``)."""
    same = groups.unsqueeze(0) == groups.unsqueeze(1)
    if not include_self:
        same &= ~torch.eye(len(groups), dtype=torch.bool, device=groups.device)
    members = torch.argsort((~same).to(torch.int8), dim=1, stable=True)
    count = same.sum(1)
    self_rank = (same.cumsum(1).diagonal() - 1).clamp_min(0)
    return members, count, self_rank


class NegativeSampler:
    """Draws negative frame indices for every (window, query frame[, step]).

    ``sample(batch, frames, steps, speaker, utterance, generator)`` returns int64 global frame
    indices into the flattened (batch * frames) encoder output, shaped (batch, frames, 1, N) when
    ``shared`` (one set per query frame for all its K steps, as CPC_audio does; the K positive frames
    ``t + 1 .. t + K`` are all left out) or (batch, frames, steps, N) (a set per step, leaving out
    that step's positive).
    """

    def __init__(self, spec: str = "cross_batch", negatives: int = 128, shared: bool = True):
        self.spec = spec
        self.plan = parse_sampling(spec, negatives)
        self.negatives = negatives
        self.shared = shared

    @property
    def within_window_only(self) -> bool:
        """True when every negative comes from the query's own window (one window per utterance)."""
        return all(mode == "same_utterance" for mode, _ in self.plan)

    def needs(self) -> Tuple[bool, bool]:
        modes = {m for m, _ in self.plan}
        return "same_speaker" in modes, "same_utterance" in modes

    def sample(
        self,
        batch: int,
        frames: int,
        steps: int,
        speaker: Optional[torch.Tensor] = None,
        utterance: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> torch.Tensor:
        device = device or torch.device("cpu")
        parts = []
        for mode, n in self.plan:
            if mode == "cross_batch":
                groups = torch.zeros(batch, dtype=torch.long, device=device)
                parts.append(self._draw(groups, True, batch, frames, steps, n, generator, device, self.shared))
            elif mode == "same_utterance":
                groups = utterance if utterance is not None else torch.arange(batch, device=device)
                parts.append(self._draw(self._check(groups, batch, "utterance"), True, batch, frames, steps, n, generator, device, self.shared))
            else:
                if speaker is None:
                    raise ValueError("same_speaker negatives need the batch's speaker ids")
                groups = self._check(speaker, batch, "speaker")
                _, count, _ = _group_members(groups.to(device), include_self=False)
                if bool((count == 0).any()):
                    lonely = torch.nonzero(count == 0).flatten().tolist()
                    raise ValueError(
                        f"same_speaker negatives: window(s) {lonely} have no other window of their speaker in the batch "
                        f"(speakers {groups.tolist()}); build batches with data.sampler=same_speaker"
                    )
                parts.append(self._draw(groups, False, batch, frames, steps, n, generator, device, self.shared))
        return torch.cat(parts, dim=-1)

    @staticmethod
    def _check(ids: torch.Tensor, batch: int, what: str) -> torch.Tensor:
        if ids.shape != (batch,):
            raise ValueError(f"{what} ids must have shape ({batch},), got {tuple(ids.shape)}")
        return ids

    @staticmethod
    def _draw(groups, include_self, batch, frames, steps, n, generator, device, shared=False) -> torch.Tensor:
        """Uniform draws from each window's pool (the frames of its group members), skipping the
        positives that are in the pool: draw r in [0, pool - excluded) and step over the excluded
        run of frames (one positive per step, or the K positives ``t + 1 .. t + K`` when shared)."""
        groups = groups.to(device)
        members, count, self_rank = _group_members(groups, include_self)
        pool = (count * frames).view(batch, 1, 1, 1)
        u = torch.rand((batch, frames, 1 if shared else steps, n), generator=generator, device=device, dtype=torch.float64)
        t = torch.arange(frames, device=device).view(1, frames, 1, 1)
        if include_self:
            if shared:  # positives t+1 .. t+K_t, K_t = min(K, frames - 1 - t), start at t + 1
                first = self_rank.view(batch, 1, 1, 1) * frames + t + 1
                excluded = (frames - 1 - t).clamp(0, steps)
            else:
                first = self_rank.view(batch, 1, 1, 1) * frames + t + torch.arange(1, steps + 1, device=device).view(1, 1, steps, 1)
                excluded = torch.ones((), dtype=torch.long, device=device)
            size = pool - excluded
            r = (u * size).long().clamp_max(size - 1).clamp_min(0)
            r = r + excluded * (r >= first).long()
        else:
            r = (u * pool).long().clamp_max(pool - 1)
        member = torch.gather(members, 1, (r // frames).reshape(batch, -1)).view_as(r)
        return member * frames + r % frames
