"""Prediction heads: one per future step k = 1..K, mapping c_t to a prediction of z_{t+k}.

``forward``: (batch, frames, hidden) -> (batch, frames, K, enc_dim).
"""

from __future__ import annotations

import torch
from torch import nn

from cpc_speech.config import PredictorConfig
from cpc_speech.model.transformer import CausalTransformerBlock


class LinearHeads(nn.Module):
    """W_k c_t for k = 1..K, computed as one (hidden -> K * enc_dim) matrix product."""

    def __init__(self, hidden: int, enc_dim: int, steps: int):
        super().__init__()
        self.steps, self.enc_dim = steps, enc_dim
        self.proj = nn.Linear(hidden, steps * enc_dim, bias=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        b, t, _ = c.shape
        return self.proj(c).view(b, t, self.steps, self.enc_dim)


class TransformerHeads(nn.Module):
    """One single-layer causal Transformer per step, then a linear map to the encoder dimension
    (the "modified CPC" predictor of Riviere et al. 2020, with relative positions so any window
    length works). ``cfg.shared``: one block for every step, then one (hidden -> K * enc_dim) map."""

    def __init__(self, hidden: int, enc_dim: int, cfg: PredictorConfig):
        super().__init__()
        self.steps, self.enc_dim, self.shared = cfg.steps, enc_dim, cfg.shared
        n = 1 if cfg.shared else cfg.steps
        self.blocks = nn.ModuleList(CausalTransformerBlock(hidden, cfg.heads, cfg.window, cfg.dropout) for _ in range(n))
        if cfg.shared:
            self.proj = nn.Linear(hidden, cfg.steps * enc_dim)
        else:
            self.out = nn.ModuleList(nn.Linear(hidden, enc_dim) for _ in range(cfg.steps))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.shared:
            b, t, _ = c.shape
            return self.proj(self.blocks[0](c)).view(b, t, self.steps, self.enc_dim)
        return torch.stack([out(block(c)) for block, out in zip(self.blocks, self.out)], dim=2)


def make_heads(hidden: int, enc_dim: int, cfg: PredictorConfig) -> nn.Module:
    cfg.validate()
    if cfg.kind == "linear":
        return LinearHeads(hidden, enc_dim, cfg.steps)
    return TransformerHeads(hidden, enc_dim, cfg)
