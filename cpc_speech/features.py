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

Long inputs are processed in chunks of ``chunk_seconds`` with bounded memory and the same result as
one pass: each encoder chunk starts on a multiple of 160 samples (so the frame grid is the global
one) and is extended by a margin of a few frames on both sides, more than the receptive field, whose
frames are dropped; the context network carries its streaming ``state`` from chunk to chunk. On
CPU the chunks are encoded on one Python thread per torch thread (one intra-op thread each) while the
context network runs through the finished ones in order (:func:`encode_in_order`); torch's thread
count, which is process-wide, is 1 during the call and restored after.
Encoders with instance norm normalise over the whole input and cannot be chunked: they are run in
one pass (memory then grows with the input length).

Corpus::

    extract_corpus(model, read_manifest("manifest.tsv"), "feats/", layer="context")
    feats = load_feature_dir("feats/")                                 # {id: memory-mapped array}

writes ``feats/<utt-id>.npy``, ``feats/features.tsv`` (``id  file  frames  dim``) and
``feats/meta.json`` (what produced them). A re-run with the same featuriser skips the files that
exist; a different model (weights), layer, mode or dtype invalidates the folder (its old feature
files are deleted and recomputed). ``model="mfcc"`` extracts the MFCC baseline (:mod:`cpc_speech.mfcc`)
through the same machinery.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cpc_speech.audio import SAMPLE_RATE, AudioError, load_waveform, read_audio
from cpc_speech.model.layers import check_layer, context_upto, layer_dim, parse_layer
from cpc_speech.model.threads import single_thread

# Inputs longer than this many seconds are processed in exact chunks, several at once on CPU (one
# per thread; :func:`encode_in_order`). 2.5 s keeps the largest intermediate of each (the first
# encoder layer's output: 8000 frames x 256 channels, 8 MB, for the default preset) small: as fast
# as 5 s and 10 s chunks, and a 1-hour file stays under 1 GB with two threads (benchmarks/NOTES.md).
CHUNK_SECONDS = 2.5

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


def encode_in_order(encode, tasks: Sequence[Any], device: torch.device) -> Iterator[Tuple[Any, torch.Tensor]]:
    """``(task, encode(task))`` in order, the calls spread over :func:`encoder_threads` threads
    with one intra-op thread each (torch's thread count is set to 1 meanwhile and restored after),
    without autograd."""
    workers = encoder_threads(device, len(tasks))

    def run(task):
        with torch.inference_mode():
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


def _from_encoder(model, z: torch.Tensor, layer: str, state: Any = None) -> Tuple[torch.Tensor, Any]:
    """Features of ``layer`` (:mod:`cpc_speech.model.layers`) from encoder frames z (batch,
    frames, enc_dim), and the context state to carry to the next chunk."""
    with_z, index = parse_layer(layer)
    if index is None:
        return z, None
    c, state = _run_context(model, z, state, index)
    return (torch.cat([z, c.to(z.dtype)], -1) if with_z else c), state


def _forward_one(model, wav: torch.Tensor, layer: str, chunk_frames: int) -> torch.Tensor:
    """Features (frames, dim) of one 16 kHz 1-D tensor, chunked when long."""
    enc = model.encoder
    total = enc.num_frames(wav.shape[-1])
    if total == 0:
        return torch.zeros(0, layer_dim(model.cfg, layer), device=wav.device)
    if total <= chunk_frames or not chunkable(model):
        return _from_encoder(model, enc(wav.unsqueeze(0)), layer)[0][0]
    return next(_forward_chunked(model, [wav], layer, chunk_frames))[1]


def _forward_chunked(model, wavs: Sequence[torch.Tensor], layer: str, chunk_frames: int) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(index, features (frames, dim))`` of each 16 kHz 1-D tensor in ``wavs`` (at least one
    frame each), in order. All inputs form one stream of encoder chunks (:func:`encode_in_order`),
    so the encoders of the next chunks, also of the next input, run while the context network
    works through the current one; the context state restarts with each input."""
    enc = model.encoder
    dim = layer_dim(model.cfg, layer)
    chunks = []
    for i, wav in enumerate(wavs):
        total = enc.num_frames(wav.shape[-1])
        chunks.extend((i, f0, min(total, f0 + chunk_frames), total) for f0 in range(0, total, chunk_frames))
    out, state = None, None
    device = wavs[0].device
    for (i, f0, f1, total), z in encode_in_order(lambda c: _encode_frames(model, wavs[c[0]], c[1], c[2]), chunks, device):
        if f0 == 0:
            out, state = None, None  # preallocated once the dtype is known: no list of chunks to concatenate
        c, state = _from_encoder(model, z.unsqueeze(0), layer, state)
        z = c[0]
        if out is None:
            out = torch.empty(total, dim, dtype=z.dtype, device=z.device)
        out[f0:f1] = z
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
    chunk_seconds: float = CHUNK_SECONDS,
) -> np.ndarray:
    """Per-frame features of one waveform: float32 ``(model.encoder.num_frames(n_16k), dim)``.

    ``layer="context"`` gives c_t (dim = context hidden size), ``"encoder"`` gives z_t (dim = encoder
    channels); ``"context.N"`` and ``"encoder+context"``: see :mod:`cpc_speech.model.layers`. Inputs longer than ``chunk_seconds`` are processed in exact chunks (see the module
    docstring). Runs on ``device`` if given, else where the model is (CUDA if the model is on CUDA).
    """
    model = resolve_model(model, device)
    _check_layer(layer, model)
    x = load_waveform(wav, sample_rate=sample_rate, min_samples=model.encoder.min_samples)
    dev = model_device(model)
    chunk_frames = max(1, int(round(chunk_seconds * SAMPLE_RATE / model.encoder.downsampling)))
    with torch.inference_mode(), _EvalMode(model):
        out = _forward_one(model, torch.from_numpy(x).to(dev), layer, chunk_frames)
    return out.float().cpu().numpy()


def extract_features_batch(
    wavs: Sequence[Any],
    model: Any,
    layer: str = "context",
    device: Optional[Union[str, torch.device]] = None,
    sample_rate: Optional[int] = None,
    batch_seconds: float = 40.0,
    chunk_seconds: float = CHUNK_SECONDS,
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
    return _batch_forward(model, arrays, layer, batch_seconds, chunk_seconds)


def _batch_forward(model, arrays: List[np.ndarray], layer: str, batch_seconds: float, chunk_seconds: float) -> List[np.ndarray]:
    enc = model.encoder
    dev = model_device(model)
    hop = enc.downsampling
    chunk_frames = max(1, int(round(chunk_seconds * SAMPLE_RATE / hop)))
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
                results[i] = _forward_one(model, torch.from_numpy(arrays[i]).to(dev), layer, chunk_frames).float().cpu().numpy()
        elif single:  # long inputs: one stream of chunks
            tensors = [torch.from_numpy(arrays[i]).to(dev) for i in single]
            for j, feats in _forward_chunked(model, tensors, layer, chunk_frames):
                results[single[j]] = feats.float().cpu().numpy()
        for batch, z in encode_in_order(encode, batches, dev):
            feats = _from_encoder(model, z, layer)[0]
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
    _fingerprint: Optional[str] = field(default=None, repr=False)

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

    def min_samples(self) -> int:
        if self.window_samples:  # shorter inputs just have no window
            return 1
        return 1 if self.is_mfcc else self.model.encoder.min_samples

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
            "fingerprint": self.fingerprint(),
        }
        if not self.is_mfcc:
            ckpt = self.checkpoint or getattr(self.model, "checkpoint_path", None)
            info["checkpoint"] = str(Path(ckpt).resolve()) if ckpt else None
            info["checkpoint_mtime"] = os.path.getmtime(ckpt) if ckpt and os.path.exists(ckpt) else None
            info["model_config"] = to_dict(self.model.cfg)
        return info

    def same_features(self, old: Dict[str, Any], dtype: str) -> bool:
        """Whether a folder's meta.json describes features this featuriser would produce."""
        new = self.meta(dtype)
        keys = ("meta_version", "featurizer", "layer", "mode", "dtype", "fingerprint")
        return all(old.get(k) == new.get(k) for k in keys)


def make_featurizer(model: Any, layer: str = "context", mode: str = "frames", device=None, name: Optional[str] = None) -> Featurizer:
    """``model``: a CPCModel, a checkpoint file / run folder, or ``"mfcc"``."""
    if isinstance(model, str) and model == "mfcc":
        f = Featurizer(None, layer="mfcc", mode=mode, name=name or "mfcc")
    else:
        ckpt = None
        if isinstance(model, (str, Path)):
            from cpc_speech.checkpoint import resolve_checkpoint

            ckpt = str(resolve_checkpoint(model))
        m = resolve_model(model, device)
        f = Featurizer(m, layer=_check_layer(layer, m), mode=mode, name=name or "model", checkpoint=ckpt)
    f.window_samples  # validate mode
    return f


def _featurize(feat: Featurizer, arrays: List[np.ndarray], batch_seconds: float, chunk_seconds: float) -> List[np.ndarray]:
    from cpc_speech.mfcc import mfcc_features

    win = feat.window_samples
    if feat.is_mfcc:
        out = []
        for a in arrays:
            f = mfcc_features(a)
            if win:
                per = win // 160
                k = f.shape[0] // per
                f = f[: k * per].reshape(k, per, -1).mean(axis=1)
            out.append(f.astype(np.float32))
        return out
    if not win:
        return _batch_forward(feat.model, arrays, feat.layer, batch_seconds, chunk_seconds)
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
    with torch.inference_mode(), _EvalMode(model):
        for s in range(0, len(windows), per_batch):
            x = torch.from_numpy(np.stack(windows[s:s + per_batch])).to(dev)
            z = enc(x)
            if feat.layer != "encoder":  # the last frame of the window (for encoder+context: of both)
                vecs.append(_from_encoder(model, z, feat.layer)[0][:, -1].float().cpu().numpy())
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
    ``computed`` / ``cached`` counts and the ``skipped`` (id, reason) pairs."""

    out_dir: Path
    ids: List[str]
    computed: int
    cached: int
    skipped: List[Tuple[str, str]]
    seconds: float
    audio_seconds: float

    def load(self, mmap: bool = True) -> Dict[str, np.ndarray]:
        return load_feature_dir(self.out_dir, mmap=mmap)


def _row_fields(row: Any) -> Tuple[str, str]:
    if hasattr(row, "id") and hasattr(row, "path"):
        return str(row.id), str(row.path)
    uid, path = row[0], row[1]
    return str(uid), str(path)


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


def _write_index(out_dir: Path, rows: List[Tuple[str, str, int, int]]) -> None:
    tmp = out_dir / (INDEX_NAME + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("id\tfile\tframes\tdim\n")
        for uid, name, frames, dim in rows:
            f.write(f"{uid}\t{name}\t{frames}\t{dim}\n")
    tmp.replace(out_dir / INDEX_NAME)


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    with open(tmp, "wb") as f:
        np.save(f, array)
    tmp.replace(path)


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
    chunk_seconds: float = CHUNK_SECONDS,
    name: Optional[str] = None,
) -> CorpusFeatures:
    """Extract features for manifest ``rows`` (:class:`~cpc_speech.corpora.manifest.Utterance` or
    ``(id, path)`` pairs) into ``out_dir`` (see the module docstring for the layout and caching).

    ``model``: a CPCModel, a checkpoint file or run folder, ``"mfcc"``, or a :class:`Featurizer`.
    ``workers`` threads decode audio ahead of the model (0: read in the main thread). Unreadable or
    too short files are skipped with one warning each and a summary warning at the end.
    ``dtype``: ``"float32"`` or ``"float16"`` on disk.
    """
    t_start = time.time()
    if dtype not in ("float32", "float16"):
        raise FeatureError(f"dtype must be float32 or float16, got {dtype!r}")
    feat = model if isinstance(model, Featurizer) else make_featurizer(model, layer, mode, device, name)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    todo: List[Tuple[str, str]] = []
    for uid, path in items:
        fname = _safe_name(uid)
        shape = _npy_shape(out_dir / fname) if (out_dir / fname).is_file() else None
        if shape is not None and len(shape) == 2:
            index[uid] = (uid, fname, shape[0], shape[1])
        else:
            todo.append((uid, path))
    cached = len(index)

    skipped: List[Tuple[str, str]] = []
    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"extract {feat.name}", unit="file")
    audio_seconds = 0.0
    batch_ids: List[str] = []
    batch_wavs: List[np.ndarray] = []
    batch_total = 0
    max_batch = int(batch_seconds * SAMPLE_RATE)
    np_dtype = np.float16 if dtype == "float16" else np.float32

    def flush() -> None:
        nonlocal batch_ids, batch_wavs, batch_total
        if not batch_ids:
            return
        try:
            outs = _featurize(feat, batch_wavs, batch_seconds, chunk_seconds)
        except Exception:  # e.g. out of memory on one huge batch: retry one by one
            outs = []
            for uid, w in zip(batch_ids, batch_wavs):
                try:
                    outs.append(_featurize(feat, [w], batch_seconds, chunk_seconds)[0])
                except Exception as exc1:
                    outs.append(exc1)
        for uid, f in zip(batch_ids, outs):
            if isinstance(f, Exception):
                skipped.append((uid, f"{type(f).__name__}: {f}"))
                warnings.warn(f"skipping {uid}: feature extraction failed ({f})", stacklevel=3)
                continue
            fname = _safe_name(uid)
            _save_npy(out_dir / fname, f.astype(np_dtype, copy=False))
            index[uid] = (uid, fname, int(f.shape[0]), int(f.shape[1]))
        if bar is not None:
            bar.update(len(batch_ids))
        batch_ids, batch_wavs, batch_total = [], [], 0

    try:
        for uid, wav in _read_ahead(todo, feat.min_samples(), workers, ahead=max(4, 4 * max(1, workers))):
            if isinstance(wav, Exception):
                skipped.append((uid, str(wav)))
                warnings.warn(f"skipping {uid}: {wav}", stacklevel=2)
                if bar is not None:
                    bar.update(1)
                continue
            audio_seconds += wav.size / SAMPLE_RATE
            if batch_ids and batch_total + wav.size > max_batch:
                flush()
            batch_ids.append(uid)
            batch_wavs.append(wav)
            batch_total += wav.size
        flush()
    finally:
        if bar is not None:
            bar.close()
        # keep rows of other ids that are still valid (e.g. a previous run on a bigger manifest)
        keep = {u: r for u, r in old_index.items() if u not in index and u not in seen and (out_dir / r[1]).is_file()}
        _write_index(out_dir, [index[u] for u, _ in items if u in index] + list(keep.values()))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(items)} file(s) (see the warnings above)", stacklevel=2)
    return CorpusFeatures(out_dir, [u for u, _ in items if u in index], len(index) - cached, cached, skipped,
                          time.time() - t_start, audio_seconds)


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
