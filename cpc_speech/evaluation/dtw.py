"""Batched dynamic time warping with path-length normalisation (the ABX distance).

For a frame distance matrix ``d`` (n x m), the cost ``C[i, j] = d[i, j] + min(C[i-1, j], C[i-1, j-1],
C[i, j-1])`` (first row and column: cumulative sums) and the result is ``C[n-1, m-1] / L`` where
``L`` counts the cells of the optimal path. The path is the one the Libri-light scorer's backtracking
finds: from ``(i, j)`` it steps diagonally if ``C[i-1, j-1] <= C[i, j-1]`` and ``<= C[i-1, j]``, else
left if ``C[i, j-1] <= C[i-1, j]``, else up. Here ``L`` is carried forward with the same choice, so
no backtracking is needed. Everything is float32 like the reference (the division too: float32
division of float32 values is what the reference's double division rounds to).

The recursion runs over anti-diagonals: cells ``(i, k - i)`` depend only on diagonals ``k - 1`` and
``k - 2``, so one step updates a whole diagonal of every pair of a batch at once; all pairs of a
batch have the same (n, m).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import torch

DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_INF = float("inf")


def angular_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """arccos of the dot product, divided by pi, of unit-norm frames: (P, n, D), (P, m, D) ->
    (P, n, m) in [0, 1]."""
    return torch.bmm(x, y.transpose(1, 2)).clamp_(-1.0, 1.0).acos_().div_(math.pi)


def kl_distance(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(p_i || q_j) = sum_d p log((p + eps) / (q + eps)) between frames of (P, n, D) and (P, m, D)
    (posteriorgrams): (P, n, m)."""
    own = (p * torch.log(p + eps)).sum(-1, keepdim=True)  # (P, n, 1)
    return own - torch.bmm(p, torch.log(q + eps).transpose(1, 2))


def kl_symmetric_distance(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(KL(p || q) + KL(q || p)) / 2 between frames: (P, n, m)."""
    return 0.5 * (kl_distance(p, q, eps) + kl_distance(q, p, eps).transpose(1, 2))


DISTANCES: Dict[str, DistanceFn] = {"cosine": angular_distance, "kl": kl_distance, "kl_symmetric": kl_symmetric_distance}

_SKEW_CACHE: Dict[Tuple[int, int], Tuple[torch.Tensor, torch.Tensor]] = {}


def _skew_index(n: int, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (n + m - 1, n) of cell (i, k - i) of an n x m matrix, and the mask of the valid
    ones (0 <= k - i < m)."""
    key = (n, m)
    if key not in _SKEW_CACHE:
        k = torch.arange(n + m - 1).unsqueeze(1)
        i = torch.arange(n).unsqueeze(0)
        j = k - i
        valid = (j >= 0) & (j < m)
        _SKEW_CACHE[key] = ((i * m + j.clamp(0, m - 1)).reshape(-1), valid)
    return _SKEW_CACHE[key]


def dtw_normalised(dist: torch.Tensor) -> torch.Tensor:
    """Path-length-normalised DTW of each (n x m) matrix of ``dist`` (P, n, m): (P,) float32."""
    dist = dist.to(torch.float32)
    pairs, n, m = dist.shape
    if pairs == 0:
        return dist.new_zeros(0)
    index, valid = _skew_index(n, m)
    skew = dist.reshape(pairs, n * m)[:, index].reshape(pairs, n + m - 1, n)
    skew.masked_fill_(~valid.unsqueeze(0), _INF)
    inf_col = dist.new_full((pairs, 1), _INF)
    cost = skew[:, 0].clone()  # diagonal 0: only (0, 0) is valid
    length = torch.ones(pairs, n, dtype=torch.float32)
    prev_cost, prev_len = torch.full_like(cost, _INF), torch.zeros_like(length)
    for k in range(1, n + m - 1):
        left, left_len = cost, length  # (i, j - 1) is on diagonal k - 1 at row i
        up = torch.cat([inf_col, cost[:, :-1]], 1)  # (i - 1, j): diagonal k - 1, row i - 1
        up_len = torch.cat([inf_col, length[:, :-1]], 1)
        diag = torch.cat([inf_col, prev_cost[:, :-1]], 1)  # (i - 1, j - 1): diagonal k - 2, row i - 1
        diag_len = torch.cat([inf_col, prev_len[:, :-1]], 1)
        take_diag = (diag <= left) & (diag <= up)
        take_left = left <= up
        best = torch.where(take_diag, diag, torch.where(take_left, left, up))
        best_len = torch.where(take_diag, diag_len, torch.where(take_left, left_len, up_len))
        prev_cost, prev_len = cost, length
        cost = skew[:, k] + best
        length = best_len + 1.0
    return cost[:, n - 1] / length[:, n - 1]


def dtw_reference(d) -> float:
    """One matrix, the reference algorithm written plainly (forward pass, then backtracking): for
    tests and as the definition."""
    import numpy as np

    d = np.asarray(d, dtype=np.float32)
    n, m = d.shape
    c = np.empty((n, m), dtype=np.float32)
    c[0, 0] = d[0, 0]
    for i in range(1, n):
        c[i, 0] = d[i, 0] + c[i - 1, 0]
    for j in range(1, m):
        c[0, j] = d[0, j] + c[0, j - 1]
    for i in range(1, n):
        for j in range(1, m):
            c[i, j] = d[i, j] + min(c[i - 1, j], c[i - 1, j - 1], c[i, j - 1])
    i, j, steps = n - 1, m - 1, 1
    while i > 0 and j > 0:
        if c[i - 1, j - 1] <= c[i, j - 1] and c[i - 1, j - 1] <= c[i - 1, j]:
            i, j = i - 1, j - 1
        elif c[i, j - 1] <= c[i - 1, j]:
            j -= 1
        else:
            i -= 1
        steps += 1
    steps += i + j
    return float(np.float32(c[n - 1, m - 1]) / np.float32(steps))
