"""Causal context networks: (batch, frames, enc_dim) -> (batch, frames, hidden); c_t sees z_1..z_t.

Every context network takes and returns a streaming ``state`` so that running a long input in
chunks gives exactly the same output as one pass: the recurrent hidden state for GRU/LSTM, the
last ``window - 1`` inputs of each layer for the Transformer.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from cpc_speech.config import ContextConfig
from cpc_speech.model.transformer import CausalTransformerBlock


class RecurrentContext(nn.Module):
    """GRU or LSTM (unidirectional, batch_first)."""

    def __init__(self, in_dim: int, cfg: ContextConfig):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.kind]
        self.rnn = rnn(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def forward(self, z: torch.Tensor, state: Optional[Any] = None) -> Tuple[torch.Tensor, Any]:
        self.rnn.flatten_parameters() if z.is_cuda else None
        c, state = self.rnn(z, state)
        return c, state


class TransformerContext(nn.Module):
    """Input projection + causal Transformer blocks with a bounded attention span."""

    def __init__(self, in_dim: int, cfg: ContextConfig):
        super().__init__()
        self.window = cfg.window
        self.inp = nn.Linear(in_dim, cfg.hidden)
        self.blocks = nn.ModuleList(
            CausalTransformerBlock(cfg.hidden, cfg.heads, cfg.window, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, z: torch.Tensor, state: Optional[list] = None) -> Tuple[torch.Tensor, list]:
        x = self.inp(z)
        new_state = []
        for i, block in enumerate(self.blocks):
            past = state[i] if state is not None else None
            full = x if past is None else torch.cat([past, x], dim=1)
            new_state.append(full[:, -(self.window - 1):].detach() if self.window > 1 else full[:, :0])
            x = block(x, past)
        return self.norm(x), new_state


def make_context(in_dim: int, cfg: ContextConfig) -> nn.Module:
    cfg.validate()
    if cfg.kind in ("gru", "lstm"):
        return RecurrentContext(in_dim, cfg)
    return TransformerContext(in_dim, cfg)
