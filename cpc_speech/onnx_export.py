"""ONNX export of the feature model (encoder + context network), for onnxruntime and friends.

Offline graph (``export_onnx(run, "cpc.onnx")``)::

    waveform  float32 (batch, samples)       16 kHz, any length >= 465 samples
    features  float32 (batch, frames, dim)   frames = model.num_frames(samples); c_t or z_t

Streaming (``streaming=True``): the exact push/flush scheme of
:class:`cpc_speech.features.streaming.StreamingExtractor` with its state as explicit tensors, in a folder
of two graphs (onnxruntime's recurrent operators cannot take zero frames, and a push may complete
none, so the caller runs the context step only when the encoder step returned frames)::

    encoder_stream.onnx
      inputs   waveform (batch, samples) (any length, also 0), final int64 () (1 on the last call:
               adds the end padding), pending0..pending4 float32 (batch, C_in, n_i): each encoder
               layer's unconsumed input; start with zeros of that layer's padding length
      outputs  z (batch, new frames, channels), pending0_out..pending4_out
    context_step.onnx (layer "context")
      inputs   z (batch, frames >= 1, channels) and the context state: h (layers, batch, hidden)
               [c for an LSTM], or past0.. (batch, P_i, hidden) for a Transformer (each block's
               last window - 1 inputs; start with P_i = 0)
      outputs  features (batch, frames, hidden), h_out [c_out] or past0_out..
    streaming.json   the initial state shapes, opset, layer

Feed each call's ``*_out`` tensors as the next call's inputs (:func:`initial_streaming_state`
gives the first). The frames equal the offline ones for chunks of any length.

Exported with torch's TorchScript-based exporter (``dynamo=False``; no onnxscript needed) at
opset :data:`OPSET`; norms are written as plain ops (channel norm: mean/variance over channels;
batch norm folded into a per-channel scale and shift).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cpc_speech.runlock import locks_output
from cpc_speech.types import PathLike

OPSET = 17


class OnnxExportError(ValueError):
    """A model or option that cannot be exported; the message says why."""


class _Stage(nn.Module):
    """conv + frame-local norm + ReLU on (batch, channels, time), plain ops only."""

    def __init__(self, conv, norm, kind: str):
        super().__init__()
        self.stride, self.padding, self.kernel = conv.stride, conv.padding, conv.kernel_size
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.kind = kind
        if kind == "channel":
            self.eps = float(norm.eps)
            self.g = nn.Parameter(norm.weight.detach().view(1, -1, 1).clone(), requires_grad=False)
            self.b = nn.Parameter(norm.bias.detach().view(1, -1, 1).clone(), requires_grad=False)
        elif kind == "batch":  # eval mode: (x - mean) / sqrt(var + eps) * w + b = x * scale + shift
            scale = norm.weight.detach() / torch.sqrt(norm.running_var.detach() + norm.eps)
            self.g = nn.Parameter(scale.view(1, -1, 1).clone(), requires_grad=False)
            self.b = nn.Parameter((norm.bias.detach() - norm.running_mean.detach() * scale).view(1, -1, 1).clone(), requires_grad=False)
        elif kind == "instance":
            self.eps = float(norm.eps)
            self.g = nn.Parameter(norm.weight.detach().view(1, -1, 1).clone(), requires_grad=False)
            self.b = nn.Parameter(norm.bias.detach().view(1, -1, 1).clone(), requires_grad=False)

    def norm_relu(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "channel":
            mean = y.mean(dim=1, keepdim=True)
            d = y - mean
            y = d / torch.sqrt((d * d).mean(dim=1, keepdim=True) + self.eps) * self.g + self.b
        elif self.kind == "batch":
            y = y * self.g + self.b
        elif self.kind == "instance":
            mean = y.mean(dim=2, keepdim=True)
            d = y - mean
            y = d / torch.sqrt((d * d).mean(dim=2, keepdim=True) + self.eps) * self.g + self.b
        return torch.relu(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm_relu(F.conv1d(x, self.weight, self.bias, stride=self.stride, padding=self.padding))

    def push(self, pending: torch.Tensor, x: torch.Tensor, final: torch.Tensor):
        """(outputs, new pending): the outputs whose input window is complete (maybe none); on the
        final call the end padding is added first."""
        buf = torch.cat([pending, x, torch.zeros(x.shape[0], x.shape[1], self.padding, dtype=x.dtype)], dim=2)
        length = buf.shape[2] - self.padding + self.padding * final  # without / with the end padding
        count = torch.clamp(torch.div(length - self.kernel, self.stride, rounding_mode="floor") + 1, min=0)
        # kernel zeros more so the convolution always has an output (ONNX Conv refuses shorter inputs)
        extended = torch.cat([buf, torch.zeros(x.shape[0], x.shape[1], self.kernel, dtype=x.dtype)], dim=2)
        y = F.conv1d(extended, self.weight, self.bias, stride=self.stride)[:, :, :count]
        rest = buf[:, :, count * self.stride: buf.shape[2] - self.padding]
        return self.norm_relu(y), rest


class _Features(nn.Module):
    def __init__(self, model, layer: str):
        super().__init__()
        norm = model.cfg.encoder.norm
        self.stages = nn.ModuleList(_Stage(conv, norm_layer, norm) for conv, norm_layer, _ in model.encoder.blocks())
        self.layer = layer
        self.context = model.context

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for stage in self.stages:
            x = stage(x)
        return x.transpose(1, 2)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        z = self.encode(wav)
        return z if self.layer == "encoder" else self.context(z)[0]


class _StreamingEncoder(_Features):
    """Encoder push step: (waveform, final, pending0..) -> (z, pending0_out..)."""

    def forward(self, wav, final, *pending):
        x = wav.unsqueeze(1)
        new_pending = []
        for stage, p in zip(self.stages, pending):
            x, rest = stage.push(p, x, final)
            new_pending.append(rest)
        return (x.transpose(1, 2), *new_pending)


class _ContextStep(nn.Module):
    """Context step: (z, state...) -> (features, state_out...); z needs >= 1 frame. State: h [c]
    for a GRU/LSTM, each Transformer block's last ``window - 1`` inputs ``pastI`` otherwise."""

    def __init__(self, model):
        super().__init__()
        self.kind = model.cfg.context.kind
        self.context = model.context

    def forward(self, z, *state):
        if self.kind == "transformer":
            c, new = self.context(z, list(state))
            return (c, *new)
        y, out = self.context.rnn(z, (state[0], state[1]) if len(state) == 2 else state[0])
        return (y, *out) if isinstance(out, tuple) else (y, out)


def state_names(model) -> List[str]:
    """The encoder push graph's state inputs (outputs: the same names with ``_out``)."""
    return [f"pending{i}" for i in range(len(model.cfg.encoder.kernels))]


def recurrent_names(model) -> List[str]:
    """The context step graph's state inputs (outputs: the same names with ``_out``): ``h`` [``c``]
    for a GRU/LSTM, ``past0``.. (one per block) for a Transformer."""
    ctx = model.cfg.context
    if ctx.kind == "transformer":
        return [f"past{i}" for i in range(ctx.layers)]
    return ["h", "c"] if ctx.kind == "lstm" else ["h"]


def initial_streaming_state(model, batch: int = 1) -> Dict[str, np.ndarray]:
    """Zero state for the first call of the streaming graphs (numpy float32): each encoder
    layer's start padding (``pendingI``) and the recurrent state (``h``, ``c``)."""
    enc = model.cfg.encoder
    out: Dict[str, np.ndarray] = {}
    c_in = 1
    for i, p in enumerate(enc.paddings):
        out[f"pending{i}"] = np.zeros((batch, c_in, p), np.float32)
        c_in = enc.channels
    ctx = model.cfg.context
    for name in recurrent_names(model):
        shape = (batch, 0, ctx.hidden) if ctx.kind == "transformer" else (ctx.layers, batch, ctx.hidden)
        out[name] = np.zeros(shape, np.float32)
    return out


def _export(net: nn.Module, args: tuple, path: Path, inputs: List[str], outputs: List[str], dynamic: Dict[str, Dict[int, str]], opset: int, what: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(net.eval(), args, str(tmp), input_names=inputs, output_names=outputs,
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        os.replace(tmp, path)
    except Exception as exc:
        raise OnnxExportError(f"ONNX export of {what} failed: {str(exc).splitlines()[0][:300]}") from None
    finally:
        if tmp.exists():
            tmp.unlink()


@locks_output("out", "export", kind="beside")
def export_onnx(source: Any, out: PathLike, layer: str = "context", streaming: bool = False, opset: int = OPSET,
                overwrite: bool = False) -> Path:
    """Write the ONNX graph(s) of a model (a CPCModel, run folder, checkpoint, bundle or CPC_audio
    checkpoint): the offline graph to the file ``out``, or with ``streaming`` the folder ``out``
    (see the module docstring). Files are written atomically."""
    import json

    from cpc_speech.features.models import resolve_model, validate_layer

    validate_layer(layer)
    out = Path(out)
    if out.exists() and not overwrite:
        raise OnnxExportError(f"{out} exists (use --overwrite to replace it)")
    model = resolve_model(source, "cpu").eval()
    kind, norm = model.cfg.context.kind, model.cfg.encoder.norm
    if streaming and norm == "instance":
        raise OnnxExportError("an encoder with instance norm cannot be streamed (it normalises over the whole input)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise OnnxExportError("ONNX export needs the onnx package: pip install 'cpc_speech[onnx]'") from None

    wav = torch.randn(1, max(model.encoder.min_samples, 4000)) * 0.1
    what = f"the {kind} context with {norm} norm"
    if not streaming:
        out.parent.mkdir(parents=True, exist_ok=True)
        _export(_Features(model, layer), (wav,), out, ["waveform"], ["features"],
                {"waveform": {0: "batch", 1: "samples"}, "features": {0: "batch", 1: "frames"}}, opset, what)
        return out

    out.mkdir(parents=True, exist_ok=True)
    init = {k: torch.from_numpy(v) for k, v in initial_streaming_state(model).items()}
    names = state_names(model)
    dynamic = {"waveform": {0: "batch", 1: "samples"}, "z": {0: "batch", 1: "frames"}}
    for k in names:
        dynamic[k] = {0: "batch", 2: f"{k}_len"}
        dynamic[f"{k}_out"] = {0: "batch", 2: f"{k}_out_len"}
    _export(_StreamingEncoder(model, layer), (wav, torch.tensor(0, dtype=torch.int64), *[init[k] for k in names]),
            out / ENCODER_GRAPH, ["waveform", "final", *names], ["z", *[f"{k}_out" for k in names]], dynamic, opset, what)
    info: Dict[str, Any] = {
        "format": "cpc_speech-onnx-streaming", "format_version": 1, "opset": opset, "layer": layer,
        "encoder_graph": ENCODER_GRAPH, "context_graph": None,
        "initial_state": {k: list(v.shape) for k, v in initial_streaming_state(model).items()},
        "samples_per_frame": model.encoder.downsampling, "min_samples": model.encoder.min_samples,
    }
    if layer == "context":
        rec = recurrent_names(model)
        z = torch.randn(1, 5, model.cfg.encoder.channels)
        dyn = {"z": {0: "batch", 1: "frames"}, "features": {0: "batch", 1: "frames"}}
        if kind == "transformer":  # (batch, past frames, hidden); traced with a non-empty past
            example = [torch.randn(1, max(1, model.cfg.context.window - 1), model.cfg.context.hidden) for _ in rec]
            for k in rec:
                dyn[k] = {0: "batch", 1: f"{k}_len"}
                dyn[f"{k}_out"] = {0: "batch", 1: f"{k}_out_len"}
        else:  # (layers, batch, hidden)
            example = [init[k] for k in rec]
            for k in rec:
                dyn[k] = {1: "batch"}
                dyn[f"{k}_out"] = {1: "batch"}
        _export(_ContextStep(model), (z, *example), out / CONTEXT_GRAPH, ["z", *rec], ["features", *[f"{k}_out" for k in rec]],
                dyn, opset, what)
        info["context_graph"] = CONTEXT_GRAPH
    tmp = out / "streaming.json.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(out / "streaming.json")
    return out


ENCODER_GRAPH = "encoder_stream.onnx"
CONTEXT_GRAPH = "context_step.onnx"

__all__ = ["OPSET", "OnnxExportError", "export_onnx", "initial_streaming_state", "state_names", "recurrent_names"]
