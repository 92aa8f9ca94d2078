"""Raw-waveform strided CNN encoder: (batch, samples) at 16 kHz -> (batch, frames, channels).

With the default kernels 10,8,4,4,4, strides 5,4,2,2,2 and paddings 3,2,1,1,1 the encoder emits
one frame per 160 samples (10 ms) and 20480 samples give exactly 128 frames; each frame sees 465
samples (its receptive field).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cpc_speech import kernels
from cpc_speech.config import EncoderConfig


class ChannelNorm(nn.Module):
    """Per-frame normalisation over channels with a learned per-channel affine (the channel norm of
    CPC_audio's encoder, in the biased-variance form of ``layer_norm``).

    Input and output (batch, frames, channels). Each frame is normalised on its own, so the result
    does not depend on the other frames (streaming-safe). The parameters keep the (1, channels, 1)
    shape of earlier checkpoints. CPC_audio divides by the *unbiased* variance over the C channels
    (``x.var(dim=1)``); since var_unbiased = var_biased * C / (C - 1), its layer equals this one with
    ``weight * sqrt((C - 1) / C)`` and ``eps * (C - 1) / C``, which is how checkpoints are imported
    (:mod:`cpc_speech.cpc_audio`).
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight.view(-1), self.bias.view(-1), self.eps)


class FrameBatchNorm(nn.BatchNorm1d):
    """Batch norm over all frames of all windows, for (batch, frames, channels) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        return super().forward(x.reshape(b * t, c)).view(b, t, c)


class FrameInstanceNorm(nn.InstanceNorm1d):
    """Instance norm (per window and channel, over frames), for (batch, frames, channels) input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def encoder_frames(cfg: EncoderConfig, num_samples: int) -> int:
    """Frames an encoder of config ``cfg`` yields for ``num_samples`` samples (0 if too short)."""
    n = int(num_samples)
    for k, s, p in zip(cfg.kernels, cfg.strides, cfg.paddings):
        n = (n + 2 * p - k) // s + 1
        if n <= 0:
            return 0
    return n


def make_norm(kind: str, channels: int, eps: float = 1e-5) -> nn.Module:
    """Normalisation layer for (batch, frames, channels) tensors."""
    if kind == "channel":
        return ChannelNorm(channels, eps)
    if kind == "batch":
        return FrameBatchNorm(channels, eps=eps)
    if kind == "instance":
        return FrameInstanceNorm(channels, eps=eps, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown encoder norm {kind!r}")


class Encoder(nn.Module):
    """Strided 1-D CNN: per layer a convolution, a norm and a ReLU (``layers``, flat, in that order).
    ``forward``: (batch, samples) -> (batch, frames, channels).

    Every layer works in (batch, time, channels) layout (:class:`cpc_speech.kernels.StridedConv1d`,
    an ``nn.Conv1d`` twin with its parameters), so no transposes are needed and the context network
    takes the output as it is."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        layers = []
        in_ch = 1
        for k, s, p in zip(cfg.kernels, cfg.strides, cfg.paddings):
            layers += [kernels.StridedConv1d(in_ch, cfg.channels, k, stride=s, padding=p), make_norm(cfg.norm, cfg.channels, cfg.norm_eps), nn.ReLU(inplace=True)]
            in_ch = cfg.channels
        self.layers = nn.Sequential(*layers)

    def blocks(self) -> List[Tuple[nn.Module, nn.Module, nn.Module]]:
        """(conv, norm, ReLU) of each layer, input side first."""
        layers = list(self.layers)
        return [(layers[i], layers[i + 1], layers[i + 2]) for i in range(0, len(layers), 3)]

    @property
    def dim(self) -> int:
        return self.cfg.channels

    @property
    def downsampling(self) -> int:
        """Samples per output frame (160 by default: 10 ms at 16 kHz)."""
        out = 1
        for s in self.cfg.strides:
            out *= s
        return out

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame (465 by default)."""
        rf, jump = 1, 1
        for k, s in zip(self.cfg.kernels, self.cfg.strides):
            rf += (k - 1) * jump
            jump *= s
        return rf

    @property
    def left_padding(self) -> int:
        """Samples of zero padding before sample 0 seen by frame 0 (153 by default): frame t covers
        samples [t * downsampling - left_padding, ... + receptive_field)."""
        pad, jump = 0, 1
        for p, s in zip(self.cfg.paddings, self.cfg.strides):
            pad += p * jump
            jump *= s
        return pad

    def num_frames(self, num_samples: int) -> int:
        """Exact number of frames the encoder yields for ``num_samples`` samples (0 if too short)."""
        return encoder_frames(self.cfg, num_samples)

    @property
    def min_samples(self) -> int:
        """Shortest accepted input in samples: one receptive field (465 samples, ~29 ms)."""
        return self.receptive_field

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"encoder input must be (batch, samples), got shape {tuple(wav.shape)}")
        if wav.shape[-1] < self.min_samples:
            raise ValueError(
                f"input of {wav.shape[-1]} samples is shorter than the encoder needs ({self.min_samples} samples "
                f"at 16 kHz; receptive field {self.receptive_field})"
            )
        x = wav.unsqueeze(-1)  # (batch, samples, 1)
        if kernels.enabled():
            return kernels.fused_encoder(self.blocks(), x)  # the same walk, ReLUs fused with padding
        for conv, norm, relu in self.blocks():
            x = relu(norm(conv(x)))
        return x
