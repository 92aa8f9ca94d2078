"""Exact model inference on long and on many inputs: the same features as one pass of the model.

Long inputs are processed in chunks of ``chunk_seconds`` (default 2.5 s in float32, 5 s in bf16)
with bounded memory and the same result as one pass: each encoder chunk starts on a multiple of 160
samples (so the frame grid is the global one) and is extended by a margin of a few frames on both
sides, more than the receptive field, whose frames are dropped; the context network carries its
streaming ``state`` from chunk to chunk. On CPU the chunks are encoded on one Python thread per
torch thread (one intra-op thread each) while the context network runs through the finished ones in
order (:func:`~cpc_speech.features.pipeline.encode_in_order`); torch's thread count, which is
process-wide, is 1 during the call and restored after. Encoders with instance norm normalise over
the whole input and cannot be chunked: they are run in one pass (memory then grows with the input
length).

Many short inputs are padded into batches (:func:`batch_forward`); the last encoder frames of each
input, which see the padding, are recomputed exactly from its own tail.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.features.models import EvalMode, chunkable, model_device
from cpc_speech.features.pipeline import encode_in_order
from cpc_speech.model.layers import context_upto, layer_dim, parse_layer
from cpc_speech.engine.precision import Precision

# Inputs longer than this many seconds are processed in exact chunks, several at once on CPU (one
# per thread; :func:`encode_in_order`). The largest intermediate of a chunk is the first encoder
# layer's output (2.5 s: 8000 frames x 256 channels, 8 MB in float32 for the default preset): 2.5 s
# float32 chunks and 5 s bf16 chunks (the same bytes) are the fastest measured, and keep a 1-hour
# file under 1 GB with two threads (benchmarks/NOTES.md). ``chunk_seconds=None`` takes the one of
# the precision that runs.
CHUNK_SECONDS = 2.5
BF16_CHUNK_SECONDS = 5.0
CONTEXT_PIECE = 1024  # frames given to the context network at once (the state carries across)


def chunk_seconds_for(precision: Precision, chunk_seconds: Optional[float] = None) -> float:
    """``chunk_seconds`` if given, else the default chunk length of ``precision``."""
    if chunk_seconds is not None:
        return float(chunk_seconds)
    return BF16_CHUNK_SECONDS if precision.name in ("bf16", "fp16") else CHUNK_SECONDS


def chunk_frames_for(model, precision: Precision, chunk_seconds: Optional[float] = None) -> int:
    """Encoder frames per chunk (at least 1) for ``chunk_seconds`` (default: that of ``precision``)."""
    seconds = chunk_seconds_for(precision, chunk_seconds)
    return max(1, int(round(seconds * SAMPLE_RATE / model.encoder.downsampling)))


def _margin_frames(encoder) -> int:
    """Frames of overlap on each side of an encoder chunk: more than one receptive field."""
    return int(math.ceil(encoder.receptive_field / encoder.downsampling)) + 2


def _encode_frames(model, wav: torch.Tensor, f0: int, f1: int) -> torch.Tensor:
    """Exact encoder frames [f0, f1) of the 1-D waveform ``wav`` (16 kHz tensor on the model's
    device), computed from a window aligned to the frame grid with a margin on both sides:
    (f1 - f0, enc_dim)."""
    enc = model.encoder
    hop, margin = enc.downsampling, _margin_frames(enc)
    n = wav.shape[-1]
    a = max(0, f0 - margin) * hop
    b = min(n, (f1 + margin) * hop + enc.receptive_field)
    z = enc(wav[a:b].unsqueeze(0))[0]
    first = f0 - a // hop
    out = z[first:first + (f1 - f0)]
    if out.shape[0] != f1 - f0:  # cannot happen for valid f0 < f1 <= num_frames(n)
        raise RuntimeError(f"internal error: chunk [{f0}, {f1}) gave {out.shape[0]} frames")
    return out


def _run_context(model, z: torch.Tensor, state: Any = None, index: int = -1) -> Tuple[torch.Tensor, Any]:
    """Context network (up to layer ``index``; -1: all) over (batch, frames, dim) in pieces of at
    most CONTEXT_PIECE frames: the same result as one call (exact streaming), with memory linear in
    the length (the Transformer context builds a (frames x frames) attention bias in one call)."""
    if z.shape[1] <= CONTEXT_PIECE:
        return context_upto(model.context, z, state, index)
    outs = []
    for s in range(0, z.shape[1], CONTEXT_PIECE):
        c, state = context_upto(model.context, z[:, s:s + CONTEXT_PIECE], state, index)
        outs.append(c)
    return torch.cat(outs, 1), state


def from_encoder(model, z: torch.Tensor, layer: str, state: Any = None) -> Tuple[torch.Tensor, Any]:
    """Features of ``layer`` (:mod:`cpc_speech.model.layers`) from encoder frames z (batch,
    frames, enc_dim), and the context state to carry to the next chunk."""
    with_z, index = parse_layer(layer)
    if index is None:
        return z, None
    c, state = _run_context(model, z, state, index)
    return (torch.cat([z.float(), c.float()], -1) if with_z else c), state


def forward_one(model, wav: torch.Tensor, layer: str, chunk_frames: int, precision: Precision) -> torch.Tensor:
    """Features (frames, dim) of one 16 kHz 1-D tensor, chunked when long."""
    enc = model.encoder
    total = enc.num_frames(wav.shape[-1])
    if total == 0:
        return torch.zeros(0, layer_dim(model.cfg, layer), device=wav.device)
    if total <= chunk_frames or not chunkable(model):
        with precision.autocast(wav.device):
            return from_encoder(model, enc(wav.unsqueeze(0)), layer)[0][0]
    return next(forward_chunked(model, [(0, wav)], layer, chunk_frames, precision))[1]


def forward_chunked(model, wavs: Iterable[Tuple[Any, torch.Tensor]], layer: str, chunk_frames: int,
                    precision: Precision, errors: str = "raise") -> Iterator[Tuple[Any, Any]]:
    """``(key, features (frames, dim))`` of each ``(key, 16 kHz 1-D tensor)`` in ``wavs`` (at
    least one frame each), in order. All inputs form one stream of encoder chunks
    (:func:`encode_in_order`), so the encoders of the next chunks, also of the next input, run
    while the context network works through the current one; the context state restarts with each
    input. ``wavs`` may be a lazy iterable (a corpus read ahead): it is consumed a few chunks
    ahead of the context network. ``errors="yield"``: an input whose computation fails gives
    ``(key, exception)`` and the stream goes on with the next input (``"raise"``: it stops)."""
    enc = model.encoder
    dim = layer_dim(model.cfg, layer)
    device = model_device(model)

    def chunks():
        for key, wav in wavs:
            total = enc.num_frames(wav.shape[-1])
            for f0 in range(0, total, chunk_frames):
                yield key, wav, f0, min(total, f0 + chunk_frames), total

    def encode(c):
        try:
            return _encode_frames(model, c[1], c[2], c[3])
        except Exception as exc:  # noqa: BLE001 - handed to the caller with its input's key
            if errors == "raise":
                raise
            return exc

    out, state, failed = None, None, False
    for (i, _, f0, f1, total), z in encode_in_order(encode, chunks(), device, precision):
        if f0 == 0:
            out, state, failed = None, None, False  # preallocated once the first chunk is there
        if failed:
            continue  # the rest of an input that already failed
        try:
            if isinstance(z, Exception):
                raise z
            with precision.autocast(device):
                c, state = from_encoder(model, z.unsqueeze(0), layer, state)
            z = c[0]
            if out is None:
                out = torch.empty(total, dim, dtype=torch.float32, device=z.device)
            out[f0:f1] = z
        except Exception as exc:  # noqa: BLE001
            if errors == "raise":
                raise
            failed = True
            yield i, exc
            continue
        if f1 == total:
            yield i, out


def batch_forward(model, arrays: List[np.ndarray], layer: str, batch_seconds: float, chunk_seconds: Optional[float],
                  precision: Precision) -> List[np.ndarray]:
    """Float32 features (frames, dim) of 16 kHz 1-D arrays, each equal to one pass on it alone (to
    float rounding): sorted by length and padded into batches of at most ``batch_seconds`` of
    padded audio, tails recomputed; inputs longer than a chunk and instance-norm encoders go one
    by one."""
    enc = model.encoder
    dev = model_device(model)
    chunk_frames = chunk_frames_for(model, precision, chunk_seconds)
    results: List[Optional[np.ndarray]] = [None] * len(arrays)
    single = [i for i, a in enumerate(arrays) if enc.num_frames(a.size) > chunk_frames or not chunkable(model)]
    single_set = set(single)
    rest = sorted((i for i in range(len(arrays)) if i not in single_set), key=lambda i: arrays[i].size)
    max_samples = int(batch_seconds * SAMPLE_RATE)
    tail = _margin_frames(enc) + 2  # frames at the end of each input that may see padding
    batches: List[List[int]] = []
    for i in rest:  # sorted by length: a batch is at most max_samples of padded audio
        if not batches or (len(batches[-1]) + 1) * arrays[i].size > max_samples:
            batches.append([])
        batches[-1].append(i)

    def encode(batch: List[int]) -> torch.Tensor:
        """Encoder frames (batch, frames, dim) of the padded batch, tails recomputed exactly."""
        longest = max(arrays[i].size for i in batch)
        x = torch.zeros(len(batch), longest)
        for row, i in enumerate(batch):
            x[row, :arrays[i].size] = torch.from_numpy(arrays[i])
        x = x.to(dev)
        z = enc(x)
        for row, i in enumerate(batch):
            n = arrays[i].size
            total = enc.num_frames(n)
            if n < longest:
                f0 = max(0, total - tail)
                z[row, f0:total] = _encode_frames(model, x[row, :n], f0, total)
        return z

    with torch.inference_mode(), EvalMode(model):
        if not chunkable(model):  # instance norm: every input in one pass
            for i in single:
                results[i] = forward_one(model, torch.from_numpy(arrays[i]).to(dev), layer, chunk_frames,
                                         precision).float().cpu().numpy()
        elif single:  # long inputs: one stream of chunks
            tensors = [(i, torch.from_numpy(arrays[i]).to(dev)) for i in single]
            for i, feats in forward_chunked(model, tensors, layer, chunk_frames, precision):
                results[i] = feats.float().cpu().numpy()
        for batch, z in encode_in_order(encode, batches, dev, precision):
            with precision.autocast(dev):
                feats = from_encoder(model, z, layer)[0]
            feats = feats.float().cpu().numpy()
            for row, i in enumerate(batch):
                results[i] = np.ascontiguousarray(feats[row, :enc.num_frames(arrays[i].size)])
    return results  # type: ignore[return-value]
