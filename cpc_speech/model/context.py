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
from cpc_speech.kernels.gru import gru_layer
from cpc_speech.kernels.threads import single_thread
from cpc_speech.model.transformer import CausalTransformerBlock


def _cpu_autocast_dtype() -> Optional[torch.dtype]:
    """The dtype CPU autocast runs matrix products in, or None when it is off."""
    try:
        on = torch.is_autocast_enabled("cpu")
        return torch.get_autocast_dtype("cpu") if on else None
    except TypeError:  # torch < 2.4
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


class RecurrentContext(nn.Module):
    """GRU or LSTM (unidirectional, batch_first).

    Training a GRU on CPU runs :func:`cpc_speech.model.gru.gru_layer` (hand-written backward through
    time, the same parameters as ``nn.GRU``; under bf16 autocast its large products run in bf16 and
    the recurrence in float32); inference, LSTMs and CUDA run ``nn.GRU`` / ``nn.LSTM``, on CPU in
    float32 also under autocast.
    """

    def __init__(self, in_dim: int, cfg: ContextConfig):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cfg.kind]
        self.rnn = rnn(in_dim, cfg.hidden, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)

    def _cpu_gru_training(self, z: torch.Tensor) -> bool:
        return (
            isinstance(self.rnn, nn.GRU)
            and not z.is_cuda
            and torch.is_grad_enabled()
            and z.dtype in (torch.float32, torch.float64, torch.bfloat16)
            and _cpu_autocast_dtype() in (None, torch.bfloat16)
            # torch.compile traces nn.GRU as one operation; tracing this layer would unroll its steps
            and not _compiling()
            and (z.requires_grad or self.rnn.weight_hh_l0.requires_grad)
        )

    def _gru_layers(self, z: torch.Tensor, state: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        rnn = self.rnn
        b = z.shape[0]
        low = _cpu_autocast_dtype()
        # the state's dtype: the weights' under autocast or for bf16 input, else the input's (float64 tests)
        dtype = rnn.weight_hh_l0.dtype if low is not None or z.dtype == torch.bfloat16 else z.dtype
        x, last = z, []
        for layer in range(rnn.num_layers):
            h0 = state[layer] if state is not None else z.new_zeros(b, rnn.hidden_size, dtype=dtype)
            weights = [getattr(rnn, f"{name}_l{layer}").to(dtype) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            x, h = gru_layer(x, h0, *weights, low=low)
            last.append(h)
            if layer < rnn.num_layers - 1 and rnn.dropout > 0:
                x = nn.functional.dropout(x, rnn.dropout, self.training)
        return x, torch.stack(last)

    def forward(self, z: torch.Tensor, state: Optional[Any] = None) -> Tuple[torch.Tensor, Any]:
        if self._cpu_gru_training(z):
            return self._gru_layers(z, state)  # threads: set inside (one for the steps)
        if z.is_cuda:
            self.rnn.flatten_parameters()
        if not z.is_cuda and _cpu_autocast_dtype() is not None:
            # torch's bf16 recurrent kernels on CPU are slower than float32 (batch-1 extraction:
            # 2-3x); the recurrence runs in float32 (benchmarks/NOTES.md)
            with torch.autocast("cpu", enabled=False):
                return self.forward(z.float(), state)
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
