"""The CPC model: encoder -> context network -> prediction heads."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from cpc_speech.config import CPCConfig
from cpc_speech.model.context import make_context
from cpc_speech.model.encoder import Encoder
from cpc_speech.model.heads import make_heads


class CPCOutput(NamedTuple):
    z: torch.Tensor  # (batch, frames, enc_dim) encoder features
    c: torch.Tensor  # (batch, frames, hidden) context features
    predictions: Optional[torch.Tensor]  # (batch, frames, K, enc_dim) or None
    state: Any  # context network streaming state
    z_target: Optional[torch.Tensor] = None  # encoder features of target_wav, when given


class CPCModel(nn.Module):
    """Contrastive Predictive Coding network on 16 kHz waveform.

    ``forward(wav)``: wav (batch, samples) -> :class:`CPCOutput` with z (batch, frames, enc_dim),
    c (batch, frames, hidden) and predictions (batch, frames, K, enc_dim); one frame per 10 ms.
    """

    def __init__(self, cfg: CPCConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.encoder = Encoder(cfg.encoder)
        self.context = make_context(cfg.encoder.channels, cfg.context)
        self.heads = make_heads(cfg.context.hidden, cfg.encoder.channels, cfg.predictor)

    @property
    def frame_rate(self) -> float:
        """Frames per second (100 by default)."""
        return self.cfg.sample_rate / self.encoder.downsampling

    def num_frames(self, num_samples: int) -> int:
        return self.encoder.num_frames(num_samples)

    def forward(self, wav: torch.Tensor, state: Any = None, predict: bool = True,
                target_wav: Optional[torch.Tensor] = None) -> CPCOutput:
        """``target_wav`` (batch, samples): another version of the windows (e.g. clean when ``wav``
        is augmented) whose encoder features are the frames to predict (``z_target``)."""
        z = self.encoder(wav)
        c, state = self.context(z, state)
        z_target = self.encoder(target_wav) if target_wav is not None else None
        return CPCOutput(z, c, self.heads(c) if predict else None, state, z_target)

    @staticmethod
    def targets(out: CPCOutput) -> torch.Tensor:
        """The frames the predictions are scored against: ``z_target`` when given, else ``z``."""
        return out.z_target if out.z_target is not None else out.z
