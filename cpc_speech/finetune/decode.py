"""CTC decoding beyond best path: a prefix beam search with an optional phone n-gram language model.

:class:`PhoneLM` is an interpolated Witten-Bell n-gram model over phone ids, estimated from the
training transcripts, with sentence start/end symbols. :func:`prefix_beam_search` keeps the
``beam_size`` best label prefixes per frame (Hannun et al. 2014), each scored by the CTC
probability of all its paths (blank-ending and label-ending kept apart), plus ``lm_weight`` times
the LM log-probability of each added phone and ``insertion_bonus`` per phone; at the end, the
LM's end-of-sentence probability is added with the same weight. With ``lm=None`` and a wide
enough beam it finds the most probable label sequence, which greedy decoding only approximates.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

NEG_INF = -math.inf


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class PhoneLM:
    """Interpolated Witten-Bell n-gram model over ``num_labels`` phone ids (order 1 = unigram).

    ``P(w | h) = (c(h, w) + T(h) P(w | h')) / (c(h) + T(h))`` where ``T(h)`` is the number of
    distinct phones seen after ``h`` and ``h'`` drops the oldest phone; the unigram is add-one
    smoothed over the phones and the end symbol, so every phone has a non-zero probability.
    """

    def __init__(self, sentences: Sequence[Sequence[int]], num_labels: int, order: int = 3):
        if order < 1:
            raise ValueError(f"LM order must be at least 1, got {order}")
        self.order, self.num_labels = int(order), int(num_labels)
        self.bos, self.eos = -1, self.num_labels  # start context marker, end symbol (an extra "phone")
        self.counts: Dict[Tuple[int, ...], Counter] = defaultdict(Counter)
        for sent in sentences:
            seq = [self.bos] * (self.order - 1) + [int(x) for x in sent] + [self.eos]
            for i in range(self.order - 1, len(seq)):
                for n in range(self.order):  # histories of length 0 .. order-1
                    self.counts[tuple(seq[i - n:i])][seq[i]] += 1
        self._totals = {h: sum(c.values()) for h, c in self.counts.items()}
        self._cache: Dict[Tuple[Tuple[int, ...], int], float] = {}

    def _prob(self, history: Tuple[int, ...], w: int) -> float:
        if not history:
            c = self.counts.get((), Counter())
            return (c[w] + 1.0) / (self._totals.get((), 0) + self.num_labels + 1)
        lower = self._prob(history[1:], w)
        c = self.counts.get(history)
        if not c:
            return lower
        types = len(c)
        return (c[w] + types * lower) / (self._totals[history] + types)

    def log_prob(self, history: Sequence[int], w: int) -> float:
        """log P(w | the last order-1 phones of ``history``), padded with the start marker."""
        h = tuple(history[-(self.order - 1):]) if self.order > 1 else ()
        if len(h) < self.order - 1:
            h = (self.bos,) * (self.order - 1 - len(h)) + h
        key = (h, int(w))
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = math.log(self._prob(h, int(w)))
        return value

    def sentence_log_prob(self, sent: Sequence[int]) -> float:
        """log P of a whole phone sequence, end symbol included."""
        total, hist = 0.0, []
        for w in list(sent) + [self.eos]:
            total += self.log_prob(hist, w)
            hist.append(int(w))
        return total

    def perplexity(self, sentences: Sequence[Sequence[int]]) -> float:
        """Per-symbol perplexity (end symbols counted) of ``sentences``."""
        logp = sum(self.sentence_log_prob(s) for s in sentences)
        n = sum(len(s) + 1 for s in sentences)
        return math.exp(-logp / max(1, n))


def prefix_beam_search(log_probs: np.ndarray, blank: int, beam_size: int = 8, lm: Optional[PhoneLM] = None,
                       lm_weight: float = 0.5, insertion_bonus: float = 0.0, prune: float = -10.0) -> List[int]:
    """The best label sequence of one utterance's CTC log-probabilities ``(frames, classes)``.

    Per frame only labels with a log-probability above ``prune`` (and at most ``beam_size`` of
    them) are tried as extensions; blank and repeats are always scored.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    # prefix -> (log P(paths ending in blank), log P(paths ending in its last label), LM + bonus score)
    beams: Dict[Tuple[int, ...], Tuple[float, float, float]] = {(): (0.0, NEG_INF, 0.0)}
    for t in range(lp.shape[0]):
        row = lp[t]
        order = np.argsort(row)[::-1]
        candidates = [int(c) for c in order[:beam_size + 1] if c != blank and row[c] > prune][:beam_size]
        nxt: Dict[Tuple[int, ...], List[float]] = {}

        def entry(prefix, extra):
            e = nxt.get(prefix)
            if e is None:
                e = nxt[prefix] = [NEG_INF, NEG_INF, extra]
            return e

        for prefix, (pb, pnb, extra) in beams.items():
            total = _logaddexp(pb, pnb)
            e = entry(prefix, extra)
            e[0] = _logaddexp(e[0], total + row[blank])  # stay, ending in blank
            last = prefix[-1] if prefix else None
            if last is not None:
                e[1] = _logaddexp(e[1], pnb + row[last])  # repeat of the last label collapses
            for c in candidates:
                longer = prefix + (c,)
                add = insertion_bonus + (lm_weight * lm.log_prob(prefix, c) if lm is not None else 0.0)
                e2 = entry(longer, extra + add)
                # a repeated label needs a blank in between; otherwise either ending works
                source = pb if c == last else total
                e2[1] = _logaddexp(e2[1], source + row[c])
        scored = sorted(nxt.items(), key=lambda kv: _logaddexp(kv[1][0], kv[1][1]) + kv[1][2], reverse=True)
        beams = {k: (v[0], v[1], v[2]) for k, v in scored[:beam_size]}

    def final(item):
        prefix, (pb, pnb, extra) = item
        end = lm_weight * lm.log_prob(prefix, lm.eos) if lm is not None else 0.0
        return _logaddexp(pb, pnb) + extra + end

    return list(max(beams.items(), key=final)[0])
