"""CTC heads on frame features: (batch, frames, in_dim) + lengths -> (batch, frames, classes) logits.

Kinds:

* ``linear``: one linear layer per frame;
* ``conv``: ``layers`` 1-D convolutions over frames (``hidden`` channels, ``kernel`` frames,
  centred, the first with ``stride``), each followed by ReLU, then a linear layer (receptive field
  ``kernel + (layers - 1) * (kernel - 1) * stride`` frames); with ``residual`` every conv after the
  first adds its output to its input, so the head starts as (and trains like) a one-layer head and
  grows into the deep one;
* ``conv-lstm`` / ``conv-gru``: the convolutions followed by a single-layer LSTM/GRU
  (optionally bidirectional), then a linear layer.

Every head first standardises its input with fixed per-dimension ``mean``/``std`` buffers
(identity unless set, e.g. from training-set statistics for MFCCs) and zeroes padded frames, so
a padded batch gives the same outputs on the valid frames as one utterance at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

HEAD_KINDS = ("linear", "conv", "conv-lstm", "conv-gru")


@dataclass
class HeadConfig:
    """Shape of a CTC head."""

    kind: str = "linear"
    hidden: int = 256  # conv channels and RNN size
    kernel: int = 5  # conv width in frames (odd)
    layers: int = 1  # conv layers (conv kinds)
    norm: bool = False  # layer norm over channels after each conv (before its ReLU)
    residual: bool = False  # convs after the first: x + conv_block(x)
    stride: int = 1  # the first conv's stride (conv kinds): the head outputs one frame per ``stride`` input frames
    dropout: float = 0.0
    bidirectional: bool = False  # RNN heads only

    def validate(self) -> "HeadConfig":
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind must be one of {', '.join(HEAD_KINDS)}, got {self.kind!r}")
        if self.hidden < 1:
            raise ValueError("head hidden size must be positive")
        if self.stride < 1 or (self.stride > 1 and self.kind == "linear"):
            raise ValueError(f"head stride must be 1 for a linear head and at least 1 otherwise, got {self.stride}")
        if self.layers < 1:
            raise ValueError(f"head layers must be at least 1, got {self.layers}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"head kernel must be a positive odd number of frames, got {self.kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("head dropout must be in [0, 1)")
        return self


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(batch, frames) bool, True on valid frames."""
    return torch.arange(frames, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class CTCHead(nn.Module):
    """See the module docstring. ``num_classes`` includes the blank."""

    def __init__(self, in_dim: int, num_classes: int, cfg: Optional[HeadConfig] = None):
        super().__init__()
        self.cfg = (cfg or HeadConfig()).validate()
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.drop = nn.Dropout(self.cfg.dropout)
        cfg = self.cfg
        self.conv: Optional[nn.Module] = None
        self.rnn: Optional[nn.Module] = None
        dim = in_dim
        if cfg.kind != "linear":
            self.conv = nn.Conv1d(in_dim, cfg.hidden, cfg.kernel, stride=cfg.stride, padding=cfg.kernel // 2)
            dim = cfg.hidden
        self.more_convs = nn.ModuleList(
            nn.Conv1d(dim, dim, cfg.kernel, padding=cfg.kernel // 2) for _ in range(cfg.layers - 1 if self.conv is not None else 0)
        )
        n_convs = (1 + len(self.more_convs)) if self.conv is not None else 0
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n_convs if cfg.norm else 0))
        if cfg.kind in ("conv-lstm", "conv-gru"):
            rnn = nn.LSTM if cfg.kind == "conv-lstm" else nn.GRU
            self.rnn = rnn(dim, cfg.hidden, batch_first=True, bidirectional=cfg.bidirectional)
            dim = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.out = nn.Linear(dim, num_classes)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Valid output frames for ``lengths`` valid input frames: ceil(lengths / stride)."""
        return (lengths + self.cfg.stride - 1) // self.cfg.stride

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std).clamp_min(1e-5))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None,
                keep: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x (batch, frames, in_dim), lengths (batch,) valid frames -> logits (batch, ceil(frames / stride),
        classes), valid on :meth:`output_lengths` frames.
        ``keep`` (batch, frames, in_dim): multiplies the standardised input (training-time masking,
        :mod:`cpc_speech.finetune.specaugment`)."""
        b, t, _ = x.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
        mask = frame_mask(lengths.to(x.device), t).unsqueeze(-1).to(x.dtype)
        x = (x - self.mean) / self.std * mask
        if keep is not None:
            x = x * keep.to(x)
        x = self.drop(x)
        if self.conv is not None:
            for i, conv in enumerate([self.conv, *self.more_convs]):
                skip = x
                x = conv(x.transpose(1, 2)).transpose(1, 2)
                if i == 0 and self.cfg.stride > 1:
                    lengths = self.output_lengths(lengths)
                    mask = frame_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
                if self.norms:
                    x = self.norms[i](x)
                x = self.drop(torch.relu(x) * mask) + (skip if i > 0 and self.cfg.residual else 0)
        if self.rnn is not None:
            packed = pack_padded_sequence(x, lengths.cpu().clamp_min(1), batch_first=True, enforce_sorted=False)
            y, _ = self.rnn(packed)
            x, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
            x = self.drop(x)
        return self.out(x)
