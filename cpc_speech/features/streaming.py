"""Streaming feature extraction: push audio as it arrives, get the new 10 ms frames.

    stream = cpc_speech.StreamingExtractor(model)           # layer="context" (c_t) or "encoder"
    for chunk in microphone():                               # 16 kHz float samples, any length
        frames = stream.push(chunk)                         # (new frames, dim), maybe 0 rows
    frames = stream.flush()                                  # the last frames (they see the end)

The concatenation of every ``push`` and the final ``flush`` equals ``extract_features(...,
precision="fp32")`` on the whole signal (to float rounding), for any chunk sizes: streaming runs in
float32 (its small per-chunk products gain little from bf16). Each encoder layer keeps the tail of its
input that its next outputs still need (and the zero padding at the start, then at the end on
``flush``), computes only outputs whose input window is complete, and passes them through its norm
and ReLU to the next layer; the context network carries its streaming state (GRU/LSTM hidden
state, the Transformer's last ``window - 1`` inputs). A frame ``t`` is returned as soon as sample
``160 t + 312`` has been pushed (its receptive field; default geometry).

Not streamable: instance norm in the encoder (it normalises each channel over the whole input) is
refused. Batch norm is used in eval mode (running statistics), which is frame-local.
"""

from __future__ import annotations

from typing import Any, List

import numpy as np
import torch
import torch.nn.functional as F

from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.features.models import resolve_model, validate_layer
from cpc_speech.kernels import single_thread


class StreamingError(ValueError):
    """A model or input that cannot be streamed; the message says why."""


class _StreamingConv:
    """One conv + norm + ReLU stage on a growing (frames, channels) input. Batch norm (eval mode)
    is folded into the convolution's matrix and bias; channel norm runs as ``layer_norm``."""

    def __init__(self, conv, norm):
        from cpc_speech.model.encoder import ChannelNorm, FrameBatchNorm

        self.kernel, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        w = conv.weight.detach()
        matrix = w.reshape(w.shape[0], -1).t()  # (C_in * k, C_out), unfold order
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(w.shape[0])
        self.layer_norm = None
        if isinstance(norm, FrameBatchNorm):  # (y - mean) / sqrt(var + eps) * w + b = y * scale + shift
            scale = norm.weight.detach() / torch.sqrt(norm.running_var.detach() + norm.eps)
            matrix, bias = matrix * scale, (bias - norm.running_mean.detach()) * scale + norm.bias.detach()
        elif isinstance(norm, ChannelNorm):
            self.layer_norm = (norm.weight.detach().reshape(-1), norm.bias.detach().reshape(-1), norm.eps)
        elif not isinstance(norm, torch.nn.Identity):
            raise StreamingError(f"encoder norm {type(norm).__name__} is not frame-local: it cannot be streamed")
        self.matrix, self.bias = matrix.contiguous(), bias.contiguous()
        self.in_channels = w.shape[1]
        self.reset()

    def reset(self) -> None:
        # input not yet consumed, starting at the next output's first position (padded coordinates)
        self.pending = torch.zeros(self.padding, self.in_channels)

    def push(self, x: torch.Tensor, final: bool = False) -> torch.Tensor:
        """New input frames x (n, C_in) -> the new outputs (m, C_out) after norm and ReLU."""
        parts = [self.pending, x]
        if final:
            parts.append(x.new_zeros(self.padding, self.in_channels))
        buf = torch.cat(parts)
        k, s = self.kernel, self.stride
        count = (buf.shape[0] - k) // s + 1 if buf.shape[0] >= k else 0
        self.pending = buf[count * s:]
        if count == 0:
            return buf.new_zeros(0, self.matrix.shape[1])
        cols = buf[: (count - 1) * s + k].unfold(0, k, s).reshape(count, -1)  # (m, C_in * k)
        y = torch.addmm(self.bias, cols, self.matrix)
        if self.layer_norm is not None:
            weight, bias, eps = self.layer_norm
            y = F.layer_norm(y, (y.shape[1],), weight, bias, eps)
        return torch.relu_(y)


class StreamingExtractor:
    """Exact incremental features of one 16 kHz stream (see the module docstring).

    ``model``: a CPCModel, checkpoint file, run folder or bundle (moved to the CPU and put in eval
    mode; the encoder weights are copied here, so later changes to the model are not seen). ``layer``:
    ``"context"`` (c_t, dim = context hidden size) or ``"encoder"`` (z_t). ``push`` and ``flush``
    return float32 numpy arrays (new frames, dim).
    """

    def __init__(self, model: Any, layer: str = "context"):
        self.layer = validate_layer(layer)
        self.model = resolve_model(model, "cpu").eval()
        enc = self.model.encoder
        if self.model.cfg.encoder.norm == "instance":
            raise StreamingError(
                "an encoder with instance norm cannot be streamed: it normalises each channel over the whole "
                "input (use extract_features on the complete signal)"
            )
        self.stages = [_StreamingConv(conv, norm) for conv, norm, _ in enc.blocks()]
        self.dim = self.model.cfg.context.hidden if layer == "context" else enc.dim
        ctx = self.model.context
        # GRU/LSTM: the torch module itself (the context wrapper's training-path checks cost more
        # than a two-frame step); Transformer: the context network with its streaming state
        self._context = ctx.rnn if isinstance(getattr(ctx, "rnn", None), (torch.nn.GRU, torch.nn.LSTM)) else ctx
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        for stage in self.stages:
            stage.reset()
        self.state: Any = None
        self.samples = 0
        self.frames = 0
        self._head: List[torch.Tensor] = []  # samples held back until one receptive field arrived
        self._finished = False

    def _run(self, wav: torch.Tensor, final: bool) -> np.ndarray:
        with torch.inference_mode(), single_thread():
            x = wav.unsqueeze(1)
            for stage in self.stages:
                x = stage.push(x, final)
            if x.shape[0] and self.layer == "context":
                c, self.state = self._context(x.unsqueeze(0), self.state)
                x = c[0]
        self.frames += x.shape[0]
        return x.float().numpy() if x.shape[0] else np.zeros((0, self.dim), np.float32)

    def push(self, samples: Any) -> np.ndarray:
        """Feed 16 kHz samples (1-D numpy array or tensor, any length); returns the frames that
        became complete, (new frames, dim)."""
        if self._finished:
            raise StreamingError("push after flush: call reset() to start a new stream")
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32) if not isinstance(samples, torch.Tensor) else samples)
        if x.dim() != 1:
            raise StreamingError(f"push takes 1-D 16 kHz mono samples, got shape {tuple(x.shape)}")
        x = x.detach().to("cpu", torch.float32)
        if x.numel() and not torch.isfinite(x).all():
            raise StreamingError("pushed samples contain NaN or infinite values")
        self.samples += x.numel()
        if self._head is not None:  # like extract_features, nothing before one receptive field
            self._head.append(x)
            if self.samples < self.model.encoder.min_samples:
                return np.zeros((0, self.dim), np.float32)
            x, self._head = torch.cat(self._head), None
        return self._run(x, final=False)

    def flush(self) -> np.ndarray:
        """End of stream: the last frames, whose receptive fields reach the end padding. A stream
        shorter than the encoder's receptive field (465 samples) yields no frames at all."""
        if self._finished:
            return np.zeros((0, self.dim), np.float32)
        self._finished = True
        if self._head is not None:
            return np.zeros((0, self.dim), np.float32)
        return self._run(torch.zeros(0), final=True)

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE


def stream_features(model: Any, chunks, layer: str = "context") -> np.ndarray:
    """All frames of an iterable of sample chunks, through a :class:`StreamingExtractor`."""
    stream = StreamingExtractor(model, layer)
    out = [stream.push(c) for c in chunks] + [stream.flush()]
    return np.concatenate(out) if out else np.zeros((0, stream.dim), np.float32)


__all__ = ["StreamingExtractor", "StreamingError", "stream_features"]
