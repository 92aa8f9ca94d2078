"""Feature extraction from a trained (or random) CPC model, one file or a whole corpus.

Single input::

    feats = extract_features("utt.flac", model="runs/cpc")            # (frames, hidden) c_t
    z = extract_features(wav, sample_rate=8000, model=m, layer="encoder")

* ``wav``: a path, a numpy array or a torch tensor, 1-D or 2-D in either layout (channels are
  averaged); arrays need ``sample_rate`` and are resampled to 16 kHz
  (:func:`cpc_speech.audio.load_waveform`).
* ``model``: a :class:`~cpc_speech.model.cpc.CPCModel`, a checkpoint file or a run folder.
* Output: float32 numpy ``(model.encoder.num_frames(n_samples_16k), dim)``; frame ``t`` is the 10 ms
  step starting at sample ``160 t`` (its encoder receptive field is ``[160 t - 153, 160 t + 312)``).

Long inputs are processed in chunks of ``chunk_seconds`` (default 2.5 s in float32, 5 s in bf16) with bounded memory and the same result as
one pass: each encoder chunk starts on a multiple of 160 samples (so the frame grid is the global
one) and is extended by a margin of a few frames on both sides, more than the receptive field, whose
frames are dropped; the context network carries its streaming ``state`` from chunk to chunk. On
CPU the chunks are encoded on one Python thread per torch thread (one intra-op thread each) while the
context network runs through the finished ones in order (:func:`encode_in_order`); torch's thread
count, which is process-wide, is 1 during the call and restored after.
Encoders with instance norm normalise over the whole input and cannot be chunked: they are run in
one pass (memory then grows with the input length).

``precision="auto"`` (the default) runs the encoder's matrix products in bf16 where the CPU computes
bf16 fast (:mod:`cpc_speech.precision`; the recurrent context stays float32 on CPU), else in float32;
``"fp32"`` forces float32. Features are returned as float32 either way.

Corpus::

    extract_corpus(model, read_manifest("manifest.tsv"), "feats/", layer="context")
    feats = load_feature_dir("feats/")                                 # {id: memory-mapped array}

writes ``feats/<utt-id>.npy``, ``feats/features.tsv`` (``id  file  frames  dim  source``) and
``feats/meta.json`` (what produced them). A re-run with the same featuriser skips the files that
its index lists for the same audio (path, size, modification time); ``.npy`` files it did not write
are never adopted (a folder without ``meta.json`` holding ``<id>.npy`` files is refused); the folder
is locked while it is written (:mod:`cpc_speech.runlock`); a different model (weights), layer, mode or dtype invalidates the folder (its old feature
files are deleted and recomputed). ``model="mfcc"`` extracts the MFCC baseline (:mod:`cpc_speech.mfcc`)
through the same machinery. A clip shorter than the encoder's receptive field
(``model.encoder.min_samples``, 465 samples for the presets) gets a ``(0, dim)`` file (frames
``0`` in the index) instead of an error; MFCC gives 0 frames below 160 samples.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Sized, Tuple, Union

import numpy as np
import torch

from cpc_speech.atomic import atomic_open, atomic_write_text, remove_stale_temporaries
from cpc_speech.audio import SAMPLE_RATE, AudioError, load_waveform, read_audio
from cpc_speech.kernels import single_thread
from cpc_speech.model.layers import check_layer, context_upto, layer_dim, parse_layer
from cpc_speech.precision import Precision
from cpc_speech.precision import resolve as resolve_precision
from cpc_speech.runlock import hold_output

# Inputs longer than this many seconds are processed in exact chunks, several at once on CPU (one
# per thread; :func:`encode_in_order`). The largest intermediate of a chunk is the first encoder
# layer's output (2.5 s: 8000 frames x 256 channels, 8 MB in float32 for the default preset): 2.5 s
# float32 chunks and 5 s bf16 chunks (the same bytes) are the fastest measured, and keep a 1-hour
# file under 1 GB with two threads (benchmarks/NOTES.md). ``chunk_seconds=None`` takes the one of
# the precision that runs.
CHUNK_SECONDS = 2.5
BF16_CHUNK_SECONDS = 5.0


def chunk_seconds_for(precision: Precision, chunk_seconds: Optional[float] = None) -> float:
    """``chunk_seconds`` if given, else the default chunk length of ``precision``."""
    if chunk_seconds is not None:
        return float(chunk_seconds)
    return BF16_CHUNK_SECONDS if precision.name in ("bf16", "fp16") else CHUNK_SECONDS

LAYERS = ("context", "encoder")
INDEX_NAME = "features.tsv"
META_NAME = "meta.json"
META_VERSION = 1
PathLike = Union[str, Path]


class FeatureError(ValueError):
    """A problem with a feature request or a feature folder; the message names it."""


# ----------------------------------------------------------------------------------- the model


def resolve_model(model: Any, device: Optional[Union[str, torch.device]] = None):
    """A CPCModel from a model, checkpoint file or run folder, on ``device`` (default: where it is,
    CPU for files). ``None`` is an error."""
    from cpc_speech.model.cpc import CPCModel

    if model is None:
        raise FeatureError(
            "extract_features needs model=: a CPCModel, a checkpoint file (.pt) or a run folder "
            "(e.g. model='runs/cpc'); use cpc_speech.mfcc.mfcc_features for MFCC features"
        )
    if isinstance(model, (str, Path)):
        from cpc_speech.checkpoint import load_model

        return load_model(model, device=device)
    if isinstance(model, CPCModel):
        return model.to(device) if device is not None else model
    raise FeatureError(f"model must be a CPCModel, a checkpoint file or a run folder, got {type(model).__name__}")


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _check_layer(layer: str, model=None) -> str:
    """``layer``: one of :data:`LAYERS` or a name of :mod:`cpc_speech.model.layers` (``context.N``,
    ``encoder+context``), checked against the model's context layers when given."""
    try:
        return check_layer(layer, None if model is None else model.cfg)
    except ValueError as exc:
        raise FeatureError(str(exc)) from None


def chunkable(model) -> bool:
    """Whether the encoder can run in chunks exactly (not with instance norm)."""
    return model.cfg.encoder.norm != "instance"


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


_END = object()


def ordered_map(fn, items: Iterable[Any], workers: int, ahead: int) -> Iterator[Tuple[Any, Any]]:
    """``(item, fn(item))`` in the order of ``items``. With ``workers`` > 0 the calls run on that
    many threads, at most ``ahead`` items in advance (bounded memory); an exception in a call is
    raised when its item comes up."""
    if workers <= 0:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: collections.deque = collections.deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= ahead:
                break
        while pending:
            item, fut = pending.popleft()
            nxt = next(it, _END)
            if nxt is not _END:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, fut.result()


def encoder_threads(device: torch.device, tasks: int) -> int:
    """How many encoder tasks (chunks or batches) run at once, each on one intra-op thread: torch's
    thread count on CPU when there are at least two tasks, else 0 (one task at a time with all
    threads). On CPU the encoder then keeps every core busy while the context network, which runs
    its recurrent steps on one thread, works through the previous task (benchmarks/NOTES.md)."""
    threads = torch.get_num_threads()
    return threads if device.type == "cpu" and threads > 1 and tasks > 1 else 0


def encode_in_order(encode, tasks: Iterable[Any], device: torch.device,
                    precision: Optional[Precision] = None) -> Iterator[Tuple[Any, torch.Tensor]]:
    """``(task, encode(task))`` in order, the calls spread over :func:`encoder_threads` threads
    with one intra-op thread each (torch's thread count is set to 1 meanwhile and restored after),
    without autograd, in ``precision`` (autocast is per thread: it is entered in each worker).
    ``tasks`` may be a lazy iterable (then taken to hold several tasks): it is consumed at most
    a few tasks ahead."""
    workers = encoder_threads(device, len(tasks) if isinstance(tasks, Sized) else 2)
    autocast = precision.autocast if precision is not None else (lambda _device: contextlib.nullcontext())

    def run(task):
        with torch.inference_mode(), autocast(device):
            return encode(task)

    with single_thread(workers > 0):
        yield from ordered_map(run, tasks, workers, ahead=workers + 1)


CONTEXT_PIECE = 1024  # frames given to the context network at once (the state carries across)


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


def _forward_one(model, wav: torch.Tensor, layer: str, chunk_frames: int, precision: Precision) -> torch.Tensor:
    """Features (frames, dim) of one 16 kHz 1-D tensor, chunked when long."""
    enc = model.encoder
    total = enc.num_frames(wav.shape[-1])
    if total == 0:
        return torch.zeros(0, layer_dim(model.cfg, layer), device=wav.device)
    if total <= chunk_frames or not chunkable(model):
        with precision.autocast(wav.device):
            return from_encoder(model, enc(wav.unsqueeze(0)), layer)[0][0]
    return next(_forward_chunked(model, [(0, wav)], layer, chunk_frames, precision))[1]


def _forward_chunked(model, wavs: Iterable[Tuple[Any, torch.Tensor]], layer: str, chunk_frames: int,
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


class _EvalMode:
    """Put a model in eval mode for a block and restore its previous mode."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        self.model.train(self.was_training)
        return False


def extract_features(
    wav: Any,
    sample_rate: Optional[int] = None,
    model: Any = None,
    layer: str = "context",
    device: Optional[Union[str, torch.device]] = None,
    chunk_seconds: Optional[float] = None,
    precision: str = "auto",
) -> np.ndarray:
    """Per-frame features of one waveform: float32 ``(model.encoder.num_frames(n_16k), dim)``.

    ``layer="context"`` gives c_t (dim = context hidden size), ``"encoder"`` gives z_t (dim = encoder
    channels); ``"context.N"`` and ``"encoder+context"``: see :mod:`cpc_speech.model.layers`. Inputs longer than ``chunk_seconds`` are processed in exact chunks (see the module
    docstring). Runs on ``device`` if given, else where the model is (CUDA if the model is on CUDA).
    ``precision``: ``auto``, ``fp32`` or ``bf16`` (module docstring).
    """
    model = resolve_model(model, device)
    _check_layer(layer, model)
    x = load_waveform(wav, sample_rate=sample_rate, min_samples=model.encoder.min_samples)
    dev = model_device(model)
    prec = resolve_precision(precision, dev, key="precision")
    chunk_seconds = chunk_seconds_for(prec, chunk_seconds)
    chunk_frames = max(1, int(round(chunk_seconds * SAMPLE_RATE / model.encoder.downsampling)))
    with torch.inference_mode(), _EvalMode(model):
        out = _forward_one(model, torch.from_numpy(x).to(dev), layer, chunk_frames, prec)
    return out.float().cpu().numpy()


def extract_features_batch(
    wavs: Sequence[Any],
    model: Any,
    layer: str = "context",
    device: Optional[Union[str, torch.device]] = None,
    sample_rate: Optional[int] = None,
    batch_seconds: float = 40.0,
    chunk_seconds: Optional[float] = None,
    precision: str = "auto",
) -> List[np.ndarray]:
    """Features of many waveforms (paths, arrays at ``sample_rate``, or tensors), batched.

    Same result as :func:`extract_features` on each input (to float rounding): inputs are sorted by
    length and padded into batches of at most ``batch_seconds`` of padded audio; the last encoder
    frames of each input, which see the padding, are recomputed exactly from its own tail before
    the (causal) context network runs. Inputs longer than ``chunk_seconds`` and instance-norm
    encoders go one by one.
    """
    model = resolve_model(model, device)
    _check_layer(layer, model)
    arrays = [load_waveform(w, sample_rate=None if isinstance(w, (str, Path)) else sample_rate,
                            min_samples=model.encoder.min_samples, name=f"input {i}") for i, w in enumerate(wavs)]
    prec = resolve_precision(precision, model_device(model), key="precision")
    return _batch_forward(model, arrays, layer, batch_seconds, chunk_seconds, prec)


def _batch_forward(model, arrays: List[np.ndarray], layer: str, batch_seconds: float, chunk_seconds: Optional[float],
                   precision: Precision) -> List[np.ndarray]:
    enc = model.encoder
    dev = model_device(model)
    hop = enc.downsampling
    chunk_frames = max(1, int(round(chunk_seconds_for(precision, chunk_seconds) * SAMPLE_RATE / hop)))
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

    with torch.inference_mode(), _EvalMode(model):
        if not chunkable(model):  # instance norm: every input in one pass
            for i in single:
                results[i] = _forward_one(model, torch.from_numpy(arrays[i]).to(dev), layer, chunk_frames,
                                          precision).float().cpu().numpy()
        elif single:  # long inputs: one stream of chunks
            tensors = [(i, torch.from_numpy(arrays[i]).to(dev)) for i in single]
            for i, feats in _forward_chunked(model, tensors, layer, chunk_frames, precision):
                results[i] = feats.float().cpu().numpy()
        for batch, z in encode_in_order(encode, batches, dev, precision):
            with precision.autocast(dev):
                feats = from_encoder(model, z, layer)[0]
            feats = feats.float().cpu().numpy()
            for row, i in enumerate(batch):
                results[i] = np.ascontiguousarray(feats[row, :enc.num_frames(arrays[i].size)])
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------- featurisers


@dataclass
class Featurizer:
    """What turns audio into features for :func:`extract_corpus`: a CPC model (at ``layer``) or
    MFCC (``model is None``). ``mode`` is ``"frames"`` (one vector per 10 ms frame) or
    ``"windows:N"`` (one vector per non-overlapping N-sample window, each window run through the
    model on its own: the last c_t of the window for ``layer="context"``, the mean over the window
    for the encoder layer and for MFCC)."""

    model: Any = None
    layer: str = "context"
    mode: str = "frames"
    name: str = "model"
    checkpoint: Optional[str] = None
    precision: str = "auto"  # auto | fp32 | bf16 (resolved on the model's device)
    _fingerprint: Optional[str] = field(default=None, repr=False)
    _precision: Optional[Precision] = field(default=None, repr=False)

    @property
    def is_mfcc(self) -> bool:
        return self.model is None

    @property
    def window_samples(self) -> Optional[int]:
        if self.mode == "frames":
            return None
        if self.mode.startswith("windows:"):
            return int(self.mode.split(":", 1)[1])
        raise FeatureError(f"unknown feature mode {self.mode!r} (frames or windows:N)")

    def resolved_precision(self) -> Precision:
        """The precision the model runs in (float32 for MFCC)."""
        if self._precision is None:
            if self.is_mfcc:
                self._precision = Precision("fp32", "MFCC")
            else:
                self._precision = resolve_precision(self.precision, model_device(self.model), key="precision")
        return self._precision

    def min_samples(self) -> int:
        """Shortest clip (samples) that gives a frame; shorter ones get empty features in
        :func:`extract_corpus`."""
        if self.window_samples:  # shorter inputs just have no window
            return 1
        return 1 if self.is_mfcc else self.model.encoder.min_samples

    @property
    def dim(self) -> int:
        """Feature dimension."""
        from cpc_speech.mfcc import DIM

        return DIM if self.is_mfcc else layer_dim(self.model.cfg, self.layer)

    def fingerprint(self) -> str:
        """Hash of the weights (or 'mfcc'): identifies the featuriser for the cache."""
        if self._fingerprint is None:
            if self.is_mfcc:
                self._fingerprint = "mfcc-v1"
            else:
                h = hashlib.sha1()
                for k, v in sorted(self.model.state_dict().items()):
                    h.update(k.encode())
                    t = v.detach().cpu().contiguous()
                    h.update(str(t.dtype).encode())
                    h.update(str(tuple(t.shape)).encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
                self._fingerprint = h.hexdigest()
        return self._fingerprint

    def meta(self, dtype: str) -> Dict[str, Any]:
        from cpc_speech.config import to_dict

        info: Dict[str, Any] = {
            "meta_version": META_VERSION,
            "featurizer": "mfcc" if self.is_mfcc else "cpc",
            "name": self.name,
            "layer": None if self.is_mfcc else self.layer,
            "mode": self.mode,
            "dtype": dtype,
            "precision": self.resolved_precision().name,
            "fingerprint": self.fingerprint(),
        }
        if not self.is_mfcc:
            ckpt = self.checkpoint or getattr(self.model, "checkpoint_path", None)
            info["checkpoint"] = str(Path(ckpt).resolve()) if ckpt else None
            info["checkpoint_mtime"] = os.path.getmtime(ckpt) if ckpt and os.path.exists(ckpt) else None
            info["model_config"] = to_dict(self.model.cfg)
        return info

    def features(self, arrays: List[np.ndarray], batch_seconds: float = 40.0,
                 chunk_seconds: Optional[float] = None) -> List[np.ndarray]:
        """Float32 features of 16 kHz 1-D arrays (each at least :meth:`min_samples` long), in
        order: (frames, dim) per array, or (windows, dim) in a ``windows:N`` mode."""
        return _featurize(self, arrays, batch_seconds, chunk_seconds)

    def same_features(self, old: Dict[str, Any], dtype: str) -> bool:
        """Whether a folder's meta.json describes features this featuriser would produce."""
        new = self.meta(dtype)
        keys = ("meta_version", "featurizer", "layer", "mode", "dtype", "fingerprint")
        # folders written before the precision was recorded hold float32 features
        return all(old.get(k) == new.get(k) for k in keys) and old.get("precision", "fp32") == new["precision"]


def make_featurizer(model: Any, layer: str = "context", mode: str = "frames", device=None, name: Optional[str] = None,
                    precision: str = "auto") -> Featurizer:
    """``model``: a CPCModel, a checkpoint file / run folder, or ``"mfcc"``; ``precision``: auto,
    fp32 or bf16 (see the module docstring)."""
    if isinstance(model, str) and model == "mfcc":
        f = Featurizer(None, layer="mfcc", mode=mode, name=name or "mfcc")
    else:
        ckpt = None
        if isinstance(model, (str, Path)):
            from cpc_speech.checkpoint import resolve_checkpoint

            ckpt = str(resolve_checkpoint(model))
        m = resolve_model(model, device)
        f = Featurizer(m, layer=_check_layer(layer, m), mode=mode, name=name or "model", checkpoint=ckpt, precision=precision)
    f.window_samples  # validate mode
    f.resolved_precision()  # validate precision
    return f


def _featurize(feat: Featurizer, arrays: List[np.ndarray], batch_seconds: float,
               chunk_seconds: Optional[float]) -> List[np.ndarray]:
    from cpc_speech.mfcc import mfcc_features

    win = feat.window_samples
    if feat.is_mfcc:
        out = []
        for a in arrays:
            f = mfcc_features(a)
            if win:
                per = win // 160
                k = f.shape[0] // per
                f = f[: k * per].reshape(k, per, f.shape[1]).mean(axis=1)  # (0, dim) for a clip shorter than a window
            out.append(f.astype(np.float32))
        return out
    precision = feat.resolved_precision()
    if not win:
        return _batch_forward(feat.model, arrays, feat.layer, batch_seconds, chunk_seconds, precision)
    # window protocol: every window is an independent input of the same length (one batch each)
    windows, owner = [], []
    for j, a in enumerate(arrays):
        k = a.size // win if win >= feat.model.encoder.min_samples else 0
        windows.extend(a[i * win:(i + 1) * win] for i in range(k))
        owner.extend([j] * k)
    model, enc = feat.model, feat.model.encoder
    dev = model_device(model)
    per_batch = max(1, int(batch_seconds * SAMPLE_RATE) // win)
    vecs = []
    with torch.inference_mode(), _EvalMode(model), precision.autocast(dev):
        for s in range(0, len(windows), per_batch):
            x = torch.from_numpy(np.stack(windows[s:s + per_batch])).to(dev)
            z = enc(x)
            if feat.layer != "encoder":  # the last frame of the window (for encoder+context: of both)
                vecs.append(from_encoder(model, z, feat.layer)[0][:, -1].float().cpu().numpy())
            else:
                vecs.append(z.mean(dim=1).float().cpu().numpy())
    dim = layer_dim(model.cfg, feat.layer)
    allv = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    owner_a = np.asarray(owner, dtype=np.int64)
    return [np.ascontiguousarray(allv[owner_a == j]) for j in range(len(arrays))]


# ------------------------------------------------------------------------------------ corpora


@dataclass
class CorpusFeatures:
    """What :func:`extract_corpus` did: ``ids`` with features in ``out_dir`` (manifest order),
    ``computed`` / ``cached`` counts, the ``skipped`` (id, reason) pairs and the ``empty`` ids
    (in ``ids`` too: clips too short for one frame or window, whose features have 0 rows)."""

    out_dir: Path
    ids: List[str]
    computed: int
    cached: int
    skipped: List[Tuple[str, str]]
    seconds: float
    audio_seconds: float
    empty: List[str] = field(default_factory=list)

    def load(self, mmap: bool = True) -> Dict[str, np.ndarray]:
        return load_feature_dir(self.out_dir, mmap=mmap)


def _row_fields(row: Any) -> Tuple[str, Any]:
    """(id, path), or (id, 16 kHz float32 numpy waveform) for rows that carry decoded audio."""
    if hasattr(row, "id") and hasattr(row, "path"):
        return str(row.id), str(row.path)
    uid, path = row[0], row[1]
    return str(uid), path if isinstance(path, np.ndarray) else str(path)


def _safe_name(uid: str) -> str:
    if not uid or "/" in uid or "\\" in uid or uid in (".", "..") or "\t" in uid or "\n" in uid:
        raise FeatureError(f"utterance id {uid!r} cannot be used as a file name")
    return uid + ".npy"


def read_index(out_dir: PathLike) -> List[Tuple[str, str, int, int]]:
    """Rows (id, file, frames, dim) of ``out_dir/features.tsv``."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        raise FeatureError(f"{out_dir}: no {INDEX_NAME} (not a feature folder written by extract_corpus)")
    rows = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:4] != ["id", "file", "frames", "dim"]:
            raise FeatureError(f"{path}: line 1: expected header id<TAB>file<TAB>frames<TAB>dim")
        for lineno, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                if line.strip():
                    raise FeatureError(f"{path}: line {lineno}: expected 4 tab-separated fields")
                continue
            try:
                rows.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
            except ValueError:
                raise FeatureError(f"{path}: line {lineno}: frames and dim must be integers") from None
    return rows


def _write_index(out_dir: Path, rows: List[Tuple[str, str, int, int]], sources: Dict[str, str]) -> None:
    """``features.tsv``; the optional 5th column ``source`` identifies the audio each row came from."""
    with atomic_open(out_dir / INDEX_NAME, "w") as f:
        f.write("id\tfile\tframes\tdim\tsource\n")
        for uid, name, frames, dim in rows:
            f.write(f"{uid}\t{name}\t{frames}\t{dim}\t{sources.get(uid, '')}\n")


def _index_sources(out_dir: Path) -> Dict[str, str]:
    """``{id: source}`` of the 5th column of ``features.tsv`` (empty for folders of older versions)."""
    out: Dict[str, str] = {}
    try:
        with open(out_dir / INDEX_NAME, encoding="utf-8") as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 5 and parts[4]:
                    out[parts[0]] = parts[4]
    except OSError:
        pass
    return out


def _source_of(path: Any) -> str:
    """The audio a feature file came from: resolved path, size and modification time; for decoded
    audio carried by the row itself, its length and a hash of its samples."""
    if isinstance(path, np.ndarray):
        data = np.ascontiguousarray(path, dtype=np.float32)
        return f"array|{data.size}|{hashlib.sha1(data.tobytes()).hexdigest()}"
    try:
        st = os.stat(path)
        return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}".replace("\t", " ")
    except OSError:
        return ""


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def _npy_shape(path: Path) -> Optional[Tuple[int, ...]]:
    try:
        return tuple(np.load(path, mmap_mode="r").shape)
    except Exception:
        return None


def _read_ahead(items: Sequence[Tuple[str, str]], min_samples: int, workers: int, ahead: int) -> Iterator[Tuple[str, Any]]:
    """(id, waveform or AudioError) in order, read by ``workers`` threads at most ``ahead`` files
    in advance (bounded memory)."""

    def read(item):
        uid, path = item
        try:
            if isinstance(path, np.ndarray):  # decoded already (e.g. a datasets row)
                return load_waveform(path, sample_rate=SAMPLE_RATE, min_samples=min_samples, name=uid)
            return read_audio(path, min_samples=min_samples)
        except AudioError as exc:
            return exc
        except Exception as exc:  # never crash half-way on one bad file
            return AudioError(f"{path}: {type(exc).__name__}: {exc}")

    for (uid, _), wav in ordered_map(read, items, workers, ahead):
        yield uid, wav


def extract_corpus(
    model: Any,
    rows: Iterable[Any],
    out_dir: PathLike,
    layer: str = "context",
    workers: int = 2,
    progress: bool = True,
    dtype: str = "float32",
    device: Optional[Union[str, torch.device]] = None,
    mode: str = "frames",
    batch_seconds: float = 40.0,
    chunk_seconds: Optional[float] = None,
    name: Optional[str] = None,
    precision: str = "auto",
    processes: int = 1,
) -> CorpusFeatures:
    """Extract features for manifest ``rows`` (:class:`~cpc_speech.corpora.manifest.Utterance` or
    ``(id, path)`` pairs) into ``out_dir`` (see the module docstring for the layout and caching).

    ``model``: a CPCModel, a checkpoint file or run folder, ``"mfcc"``, or a :class:`Featurizer`.
    A row may carry a decoded 16 kHz waveform instead of a path: ``(id, numpy array)``.
    ``workers`` threads decode audio ahead of the model (0: read in the main thread);
    ``processes`` > 1 spreads the files over that many worker processes, each with its share of
    torch's threads. Features are saved file by file and the index every few seconds, so a killed
    run resumes where it stopped. Unreadable or empty files are skipped with one warning each and
    a summary warning at the end; a clip too short for one frame (shorter than the encoder's
    receptive field, ``model.encoder.min_samples`` samples) or, in ``windows:N`` mode, for one
    window gets features of 0 frames, silently: the result's ``empty`` lists them, callers warn.
    ``dtype``: ``"float32"`` or ``"float16"`` on disk; ``precision``: the model's arithmetic
    (``auto``, ``fp32``, ``bf16``; ignored when ``model`` is a :class:`Featurizer`).
    """
    if dtype not in ("float32", "float16"):
        raise FeatureError(f"dtype must be float32 or float16, got {dtype!r}")
    if not (batch_seconds > 0 and (chunk_seconds is None or chunk_seconds > 0)):
        raise FeatureError(f"batch_seconds and chunk_seconds must be > 0, got {batch_seconds} and {chunk_seconds}")
    if processes < 1:
        raise FeatureError(f"processes must be >= 1, got {processes}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FeatureError(f"{out_dir} is a file, not a folder for features")
    with hold_output(out_dir, "extract"):
        return _extract_corpus(model, rows, out_dir, layer, workers, progress, dtype, device, mode, batch_seconds,
                               chunk_seconds, name, precision, processes)


def _extract_corpus(model, rows, out_dir: Path, layer, workers, progress, dtype, device, mode, batch_seconds,
                    chunk_seconds, name, precision, processes) -> CorpusFeatures:
    t_start = time.time()
    feat = model if isinstance(model, Featurizer) else make_featurizer(model, layer, mode, device, name, precision)
    remove_stale_temporaries(out_dir)
    items = [_row_fields(r) for r in rows]
    seen = set()
    for uid, _ in items:
        if uid in seen:
            raise FeatureError(f"duplicate utterance id {uid!r} in the rows to extract")
        seen.add(uid)
        _safe_name(uid)

    meta_path = out_dir / META_NAME
    old_meta = None
    if meta_path.is_file():
        try:
            old_meta = json.loads(meta_path.read_text())
        except ValueError:
            old_meta = None
    old_index: Dict[str, Tuple[str, str, int, int]] = {}
    if (out_dir / INDEX_NAME).is_file():
        try:
            old_index = {r[0]: r for r in read_index(out_dir)}
        except FeatureError:
            old_index = {}
    valid_cache = old_meta is not None and feat.same_features(old_meta, dtype)
    if old_meta is None and not old_index:
        # not a folder this function wrote: never adopt (nor overwrite) files that are already there
        foreign = sorted(_safe_name(u) for u, _ in items if (out_dir / _safe_name(u)).exists())
        if foreign:
            raise FeatureError(
                f"{out_dir} already holds {foreign[0]}" + (f" and {len(foreign) - 1} more .npy file(s)" if len(foreign) > 1 else "")
                + f" not written by cpc-speech extract (no {META_NAME}); use an empty or new output folder"
            )
    if not valid_cache and (old_meta is not None or old_index):
        # different featuriser: remove the old feature files (only ours: listed or named after ids)
        stale = {out_dir / r[1] for r in old_index.values()} | {out_dir / _safe_name(u) for u, _ in items}
        for p in stale:
            if p.suffix == ".npy" and p.parent == out_dir and p.is_file():
                p.unlink()
        if (out_dir / INDEX_NAME).is_file():
            (out_dir / INDEX_NAME).unlink()
        old_index = {}
    meta = feat.meta(dtype)
    meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    _write_json(meta_path, meta)

    index: Dict[str, Tuple[str, str, int, int]] = {}
    old_sources = _index_sources(out_dir) if old_index else {}
    sources = {uid: _source_of(path) for uid, path in items}
    todo: List[Tuple[str, str]] = []
    for uid, path in items:
        fname = _safe_name(uid)
        listed = old_index.get(uid)
        # a cached file counts only when our index lists it with its shape and the same audio
        shape = _npy_shape(out_dir / fname) if listed is not None and listed[1] == fname else None
        same_audio = old_sources.get(uid, sources[uid]) == sources[uid]
        if shape is not None and shape == (listed[2], listed[3]) and same_audio:
            index[uid] = (uid, fname, shape[0], shape[1])
        else:
            todo.append((uid, path))
    cached = len(index)

    skipped: List[Tuple[str, str]] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"extract {feat.name}", unit="file")
    np_dtype = np.float16 if dtype == "float16" else np.float32
    last_index_write = time.time()

    def write_index() -> None:
        # keep rows of other ids that are still valid (e.g. a previous run on a bigger manifest)
        keep = {u: r for u, r in old_index.items() if u not in index and u not in seen and (out_dir / r[1]).is_file()}
        sources.update({u: old_sources[u] for u in keep if u in old_sources})
        _write_index(out_dir, [index[u] for u, _ in items if u in index] + list(keep.values()), sources)

    def done(rows: Sequence[Tuple[str, str, int, int]], skips: Sequence[Tuple[str, str]], files: int) -> None:
        """Bookkeeping of finished files; the index is rewritten every few seconds, so a killed run
        loses at most those (their .npy files are found again on resume: the index lists them)."""
        nonlocal last_index_write
        for row in rows:
            index[row[0]] = row
        skipped.extend(skips)
        if bar is not None:
            bar.update(files)
        if time.time() - last_index_write > INDEX_EVERY_SECONDS:
            write_index()
            last_index_write = time.time()

    audio_seconds = 0.0
    try:
        if processes > 1 and len(todo) > 1:
            audio_seconds = _extract_in_processes(feat, todo, out_dir, np_dtype, processes, workers, batch_seconds,
                                                  chunk_seconds, done)
        else:
            audio_seconds = _extract_items(feat, todo, out_dir, np_dtype, workers, batch_seconds, chunk_seconds, done)
    finally:
        if bar is not None:
            bar.close()
        write_index()
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(items)} file(s) (see the warnings above)", stacklevel=2)
    ids = [u for u, _ in items if u in index]
    return CorpusFeatures(out_dir, ids, len(index) - cached, cached, skipped, time.time() - t_start, audio_seconds,
                          [u for u in ids if index[u][2] == 0])


INDEX_EVERY_SECONDS = 10.0  # how often a running corpus extraction rewrites features.tsv


def _readable(feat: Featurizer, todo: Sequence[Tuple[str, str]], workers: int, done) -> Iterator[Tuple[str, np.ndarray]]:
    """(id, 16 kHz waveform) of the readable files of ``todo``, read ahead by ``workers`` threads;
    an unreadable or empty file is reported to ``done`` with one warning and left out."""
    for uid, wav in _read_ahead(todo, 1, workers, ahead=max(4, 4 * max(1, workers))):
        if isinstance(wav, Exception):
            warnings.warn(f"skipping {uid}: {wav}", stacklevel=3)
            done((), [(uid, str(wav))], 1)
            continue
        yield uid, wav


def _extract_items(feat: Featurizer, todo: Sequence[Tuple[str, str]], out_dir: Path, np_dtype, workers: int,
                   batch_seconds: float, chunk_seconds: float, done) -> float:
    """Compute and save the features of ``todo`` ((id, path) pairs) into ``out_dir``; ``done(rows,
    skipped, files)`` is called as files finish. Returns the seconds of audio read.

    Frame features of a chunkable CPC model are computed as one stream of encoder chunks over the
    whole list (:func:`_forward_chunked`: the cores stay busy across file boundaries); MFCC, the
    window protocol and instance-norm encoders go in groups of at most ``batch_seconds`` of audio.
    A clip shorter than ``feat.min_samples()`` (the encoder's receptive field) gets features with
    no frame, (0, dim), without running the model."""
    audio = [0.0]
    need = feat.min_samples()

    def save(uid: str, f: np.ndarray) -> None:
        fname = _safe_name(uid)
        _save_npy(out_dir / fname, np.ascontiguousarray(f.astype(np_dtype, copy=False)))
        done([(uid, fname, int(f.shape[0]), int(f.shape[1]))], (), 1)

    def counted(stream):
        for uid, wav in stream:
            audio[0] += wav.size / SAMPLE_RATE
            if wav.size < need:
                save(uid, np.zeros((0, feat.dim), np.float32))
                continue
            yield uid, wav

    stream = counted(_readable(feat, todo, workers, done))
    if not feat.is_mfcc and not feat.window_samples and chunkable(feat.model):
        model, precision = feat.model, feat.resolved_precision()
        dev = model_device(model)
        chunk_frames = max(1, int(round(chunk_seconds_for(precision, chunk_seconds) * SAMPLE_RATE / model.encoder.downsampling)))
        tensors = ((uid, torch.from_numpy(wav).to(dev)) for uid, wav in stream)
        with torch.inference_mode(), _EvalMode(model):
            for uid, f in _forward_chunked(model, tensors, feat.layer, chunk_frames, precision, errors="yield"):
                if isinstance(f, Exception):
                    warnings.warn(f"skipping {uid}: feature extraction failed ({type(f).__name__}: {f})", stacklevel=3)
                    done((), [(uid, f"{type(f).__name__}: {f}")], 1)
                else:
                    save(uid, f.float().cpu().numpy())
        return audio[0]

    max_batch = int(batch_seconds * SAMPLE_RATE)
    group: List[Tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not group:
            return
        try:
            outs: List[Any] = _featurize(feat, [w for _, w in group], batch_seconds, chunk_seconds)
        except Exception:  # e.g. out of memory on one huge batch: retry one by one
            outs = []
            for _, w in group:
                try:
                    outs.append(_featurize(feat, [w], batch_seconds, chunk_seconds)[0])
                except Exception as exc1:
                    outs.append(exc1)
        for (uid, _), f in zip(group, outs):
            if isinstance(f, Exception):
                warnings.warn(f"skipping {uid}: feature extraction failed ({f})", stacklevel=3)
                done((), [(uid, f"{type(f).__name__}: {f}")], 1)
            else:
                save(uid, f)
        group.clear()

    for uid, wav in stream:
        if group and sum(w.size for _, w in group) + wav.size > max_batch:
            flush()
        group.append((uid, wav))
    flush()
    return audio[0]


# A worker process's featuriser, built once by _init_worker.
_WORKER: Dict[str, Any] = {}


def _featurizer_spec(feat: Featurizer) -> Dict[str, Any]:
    """What a worker process needs to rebuild ``feat`` (with the parent's resolved precision, so
    that every process computes the same features)."""
    spec: Dict[str, Any] = {"layer": feat.layer, "mode": feat.mode, "name": feat.name,
                            "precision": feat.resolved_precision().name}
    if feat.is_mfcc:
        spec["model"] = "mfcc"
    else:
        from cpc_speech.config import to_dict

        spec["model_config"] = to_dict(feat.model.cfg)
        spec["state_dict"] = {k: v.detach().cpu() for k, v in feat.model.state_dict().items()}
        spec["device"] = str(model_device(feat.model))
    return spec


def _init_worker(spec: Dict[str, Any], threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    if spec.get("model") == "mfcc":
        _WORKER["feat"] = Featurizer(None, layer="mfcc", mode=spec["mode"], name=spec["name"])
        return
    from cpc_speech.config import CPCConfig, from_dict
    from cpc_speech.model.cpc import CPCModel

    model = CPCModel(from_dict(CPCConfig, spec["model_config"]).validate()).eval()
    model.load_state_dict(spec["state_dict"], strict=True)
    model.to(spec["device"])
    _WORKER["feat"] = Featurizer(model, layer=spec["layer"], mode=spec["mode"], name=spec["name"], precision=spec["precision"])


def _worker_shard(todo: List[Tuple[str, str]], out_dir: str, np_dtype, workers: int, batch_seconds: float,
                  chunk_seconds: float):
    rows: List[Tuple[str, str, int, int]] = []
    skips: List[Tuple[str, str]] = []

    def done(r, s, _files):
        rows.extend(r)
        skips.extend(s)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent warns once per skipped file
        audio = _extract_items(_WORKER["feat"], todo, Path(out_dir), np_dtype, workers, batch_seconds, chunk_seconds, done)
    return rows, skips, audio


def _extract_in_processes(feat: Featurizer, todo: Sequence[Tuple[str, str]], out_dir: Path, np_dtype, processes: int,
                          workers: int, batch_seconds: float, chunk_seconds: float, done) -> float:
    """:func:`_extract_items` over ``processes`` worker processes (spawned), each with
    ``threads // processes`` torch threads, on shards of the file list; finished shards are
    reported to ``done`` as they come."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // processes)
    per_shard = max(1, min(64, math.ceil(len(todo) / (4 * processes))))
    shards = [list(todo[i:i + per_shard]) for i in range(0, len(todo), per_shard)]
    audio = 0.0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=ctx, initializer=_init_worker,
                             initargs=(_featurizer_spec(feat), threads)) as pool:
        futures = {pool.submit(_worker_shard, shard, str(out_dir), np_dtype, workers, batch_seconds, chunk_seconds): shard
                   for shard in shards}
        try:
            for fut in as_completed(futures):
                rows, skips, seconds = fut.result()
                for uid, reason in skips:
                    warnings.warn(f"skipping {uid}: {reason}", stacklevel=3)
                done(rows, skips, len(futures[fut]))
                audio += seconds
        except BaseException:  # a worker died or the run was interrupted: start no further shard
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return audio


def load_feature_dir(out_dir: PathLike, mmap: bool = True, ids: Optional[Iterable[str]] = None) -> Dict[str, np.ndarray]:
    """``{id: array (frames, dim)}`` for a folder written by :func:`extract_corpus` (memory-mapped
    by default). ``ids`` restricts to those ids (missing ones are an error)."""
    out_dir = Path(out_dir)
    rows = {r[0]: r for r in read_index(out_dir)}
    wanted = list(rows) if ids is None else list(ids)
    out: Dict[str, np.ndarray] = {}
    for uid in wanted:
        if uid not in rows:
            raise FeatureError(f"{out_dir / INDEX_NAME}: no features for utterance {uid!r}")
        path = out_dir / rows[uid][1]
        try:
            out[uid] = np.load(path, mmap_mode="r" if mmap else None)
        except Exception as exc:
            raise FeatureError(f"{path}: cannot read features ({exc})") from None
    return out


def read_meta(out_dir: PathLike) -> Dict[str, Any]:
    path = Path(out_dir) / META_NAME
    if not path.is_file():
        raise FeatureError(f"{out_dir}: no {META_NAME}")
    return json.loads(path.read_text())
