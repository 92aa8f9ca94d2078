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


class single_thread:
    """Run a block with one intra-op thread on CPU.

    A GRU/LSTM step multiplies tiny matrices; with several OpenMP threads each of the thousands of
    steps pays a barrier, and when another process holds a core the barrier waits for a time slice:
    measured 0.036 s (1 thread) against 4.9 s (2 threads, other core busy) for 1000 steps of a
    128-unit GRU. One thread is never slower here (benchmarks/NOTES.md).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.enabled and self.saved > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.enabled and self.saved > 1:
            torch.set_num_threads(self.saved)


class RecurrentContext(nn.Module):
    """GRU or LSTM (unidirectional, batch_first)."""

    def __init__(self, in_dim: int, cfg: ContextConfig):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.kind]
        self.rnn = rnn(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def forward(self, z: torch.Tensor, state: Optional[Any] = None) -> Tuple[torch.Tensor, Any]:
        if z.is_cuda:
            self.rnn.flatten_parameters()
        with single_thread(not z.is_cuda):
            c, state = self.rnn(z, state)
        if not z.is_cuda and c.requires_grad and z.requires_grad and torch.get_num_threads() > 1:
            # the recurrent backward runs between the gradient of c and the gradient of z
            threads = torch.get_num_threads()
            c.register_hook(lambda g: (torch.set_num_threads(1), g)[1])
            z.register_hook(lambda g: (torch.set_num_threads(threads), g)[1])
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
