"""Causal context networks: (batch, frames, enc_dim) -> (batch, frames, hidden); c_t sees z_1..z_t.

Every context network takes and returns a streaming ``state`` so that running a long input in
chunks gives exactly the same output as one pass: the recurrent hidden state for GRU/LSTM, the
last ``window - 1`` inputs of each layer for the Transformer.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from cpc_speech import kernels
from cpc_speech.config import ContextConfig
from cpc_speech.model.transformer import CausalTransformerBlock


class RecurrentContext(nn.Module):
    """GRU or LSTM (unidirectional, batch_first).

    On CPU it runs through :func:`cpc_speech.kernels.cpu_recurrent` (training a GRU: a layer with a
    hand-written backward through time, the same parameters as ``nn.GRU``; thread and precision
    settings for the rest); the same values as ``nn.GRU`` / ``nn.LSTM``, which run on CUDA and with
    the kernels off.
    """

    def __init__(self, in_dim: int, cfg: ContextConfig):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.kind]
        self.rnn = rnn(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def forward(self, z: torch.Tensor, state: Optional[Any] = None) -> Tuple[torch.Tensor, Any]:
        """z (batch, frames, enc_dim) -> (c (batch, frames, hidden), state (layers, batch, hidden);
        for an LSTM the pair (h, c) of such tensors)."""
        if kernels.enabled() and not z.is_cuda:
            return kernels.cpu_recurrent(self.rnn, z, state)
        if z.is_cuda:
            self.rnn.flatten_parameters()
        return self.rnn(z, state)


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

    def forward(self, z: torch.Tensor, state: Optional[list] = None, blocks: Optional[int] = None) -> Tuple[torch.Tensor, list]:
        """``blocks``: run only the first ``blocks`` blocks and return their output without the final
        norm (:func:`cpc_speech.model.layers.context_upto`); default all, with the norm."""
        if blocks is not None and blocks >= len(self.blocks):
            blocks = None
        x = self.inp(z)
        new_state = []
        for i, block in enumerate(self.blocks[:blocks]):
            past = state[i] if state is not None else None
            full = x if past is None else torch.cat([past, x], dim=1)
            new_state.append(full[:, -(self.window - 1):].detach() if self.window > 1 else full[:, :0])
            x = block(x, past)
        return (self.norm(x) if blocks is None else x), new_state


def make_context(in_dim: int, cfg: ContextConfig) -> nn.Module:
    cfg.validate()
    if cfg.kind in ("gru", "lstm"):
        return RecurrentContext(in_dim, cfg)
    return TransformerContext(in_dim, cfg)
