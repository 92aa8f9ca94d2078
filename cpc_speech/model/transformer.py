"""A small causal Transformer block with a bounded attention span and ALiBi position biases.

Used by the Transformer context network and the Transformer prediction heads. Attention is causal
and limited to the last ``window`` frames, and positions enter only as relative biases, so the
block works for any sequence length and can be run in chunks exactly (keep the last ``window - 1``
inputs as the state).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def alibi_slopes(heads: int) -> torch.Tensor:
    """Geometric per-head slopes 2^(-8 h / heads), h = 1..heads."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def causal_band_bias(queries: int, keys: int, window: int, slopes: torch.Tensor) -> torch.Tensor:
    """Additive attention bias (heads, queries, keys) for the last ``queries`` of ``keys`` positions:
    -inf for future keys and keys more than ``window - 1`` frames back, -slope * distance otherwise."""
    q_pos = torch.arange(keys - queries, keys, device=slopes.device).unsqueeze(1)
    k_pos = torch.arange(keys, device=slopes.device).unsqueeze(0)
    dist = (q_pos - k_pos).float()
    allowed = (dist >= 0) & (dist < window)
    bias = -slopes.view(-1, 1, 1) * dist.unsqueeze(0)
    return bias.masked_fill(~allowed.unsqueeze(0), float("-inf"))


class CausalTransformerBlock(nn.Module):
    """Pre-norm self-attention + feed-forward. (batch, time, dim) -> (batch, time, dim)."""

    def __init__(self, dim: int, heads: int, window: int, dropout: float = 0.0, ff_mult: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.window, self.dropout = dim, heads, window, dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)

    def forward(self, x: torch.Tensor, past: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``past`` (batch, P, dim): earlier inputs (not outputs) of this block, for streaming."""
        b, t, d = x.shape
        full = x if past is None else torch.cat([past, x], dim=1)
        # one projection of every position: keys and values from all of them, queries from the last t
        q, k, v = self.qkv(self.norm1(full)).split(d, dim=-1)
        q = q[:, -t:]
        h = self.heads

        def split(u: torch.Tensor) -> torch.Tensor:
            return u.reshape(b, -1, h, d // h).transpose(1, 2)

        bias = causal_band_bias(t, full.shape[1], self.window, self.slopes.to(x.dtype)).to(x.dtype)
        attn = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.ff(self.norm2(x))


def init_scale(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p, gain=1 / math.sqrt(2))
