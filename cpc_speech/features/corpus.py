"""Features of a whole corpus into a feature folder (:mod:`cpc_speech.features.store`), resumable.

    extract_corpus(model, read_manifest("manifest.tsv"), "feats/", layer="context")
    feats = load_feature_dir("feats/")                                 # {id: memory-mapped array}

writes ``feats/<utt-id>.npy``, ``feats/features.tsv`` and ``feats/meta.json``. A re-run with the
same featuriser skips the files that its index lists for the same audio; the folder is locked while
it is written (:mod:`cpc_speech.runlock`); a different model (weights), layer, mode or dtype
invalidates the folder (its old feature files are deleted and recomputed). ``model="mfcc"``
extracts the MFCC baseline (:mod:`cpc_speech.features.mfcc`) through the same machinery. A clip
shorter than the encoder's receptive field (``model.encoder.min_samples``, 465 samples for the
presets) gets a ``(0, dim)`` file (frames ``0`` in the index) instead of an error; MFCC gives 0
frames below 160 samples.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cpc_speech.atomic import remove_stale_temporaries
from cpc_speech.audio import SAMPLE_RATE, AudioError, load_waveform, read_audio
from cpc_speech.features import store
from cpc_speech.features.featurizer import FRAMES, FeatureMode, Featurizer, featurizer_from_spec, make_featurizer
from cpc_speech.features.inference import chunk_frames_for, forward_chunked
from cpc_speech.features.models import EvalMode, FeatureError, chunkable, model_device
from cpc_speech.features.pipeline import ordered_map
from cpc_speech.features.store import IndexRow, PathLike, feature_file_name, load_feature_dir
from cpc_speech.runlock import hold_output

INDEX_EVERY_SECONDS = 10.0  # how often a running corpus extraction rewrites features.tsv


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


def check_extract_settings(dtype: str, batch_seconds: float, chunk_seconds: Optional[float], processes: int) -> None:
    """FeatureError naming the first extraction setting out of range."""
    if dtype not in ("float32", "float16"):
        raise FeatureError(f"dtype must be float32 or float16, got {dtype!r}")
    if not (batch_seconds > 0 and (chunk_seconds is None or chunk_seconds > 0)):
        raise FeatureError(f"batch_seconds and chunk_seconds must be > 0, got {batch_seconds} and {chunk_seconds}")
    if processes < 1:
        raise FeatureError(f"processes must be >= 1, got {processes}")


def extract_corpus(
    model: Any,
    rows: Iterable[Any],
    out_dir: PathLike,
    layer: str = "context",
    workers: int = 2,
    progress: bool = True,
    dtype: str = "float32",
    device: Optional[Union[str, torch.device]] = None,
    mode: Union[str, FeatureMode] = FRAMES,
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
    receptive field, ``model.encoder.min_samples`` samples) or, in a ``windows:N`` mode, for one
    window gets features of 0 frames, silently: the result's ``empty`` lists them, callers warn.
    ``dtype``: ``"float32"`` or ``"float16"`` on disk; ``precision``: the model's arithmetic
    (``auto``, ``fp32``, ``bf16``; ignored when ``model`` is a :class:`Featurizer`).
    """
    check_extract_settings(dtype, batch_seconds, chunk_seconds, processes)
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
        feature_file_name(uid)

    old_index, old_sources = store.begin_writing(out_dir, [u for u, _ in items], feat.meta(dtype),
                                                 lambda old: feat.same_features(old, dtype))

    index: Dict[str, IndexRow] = {}
    sources = {uid: store.source_of(path) for uid, path in items}
    todo: List[Tuple[str, str]] = []
    for uid, path in items:
        fname = feature_file_name(uid)
        listed = old_index.get(uid)
        # a cached file counts only when our index lists it with its shape and the same audio
        shape = store.npy_shape(out_dir / fname) if listed is not None and listed[1] == fname else None
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
        store.write_index(out_dir, [index[u] for u, _ in items if u in index] + list(keep.values()), sources)

    def done(rows: Sequence[IndexRow], skips: Sequence[Tuple[str, str]], files: int) -> None:
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
            audio_seconds = extract_in_processes(feat, todo, out_dir, np_dtype, processes, workers, batch_seconds,
                                                  chunk_seconds, done)
        else:
            audio_seconds = extract_items(feat, todo, out_dir, np_dtype, workers, batch_seconds, chunk_seconds, done)
    finally:
        if bar is not None:
            bar.close()
        write_index()
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(items)} file(s) (see the warnings above)", stacklevel=2)
    ids = [u for u, _ in items if u in index]
    return CorpusFeatures(out_dir, ids, len(index) - cached, cached, skipped, time.time() - t_start, audio_seconds,
                          [u for u in ids if index[u][2] == 0])


def _readable(feat: Featurizer, todo: Sequence[Tuple[str, str]], workers: int, done) -> Iterator[Tuple[str, np.ndarray]]:
    """(id, 16 kHz waveform) of the readable files of ``todo``, read ahead by ``workers`` threads;
    an unreadable or empty file is reported to ``done`` with one warning and left out."""
    for uid, wav in _read_ahead(todo, 1, workers, ahead=max(4, 4 * max(1, workers))):
        if isinstance(wav, Exception):
            warnings.warn(f"skipping {uid}: {wav}", stacklevel=3)
            done((), [(uid, str(wav))], 1)
            continue
        yield uid, wav


def extract_items(feat: Featurizer, todo: Sequence[Tuple[str, str]], out_dir: Path, np_dtype, workers: int,
                   batch_seconds: float, chunk_seconds: float, done) -> float:
    """Compute and save the features of ``todo`` ((id, path) pairs) into ``out_dir``; ``done(rows,
    skipped, files)`` is called as files finish. Returns the seconds of audio read.

    Frame features of a chunkable CPC model are computed as one stream of encoder chunks over the
    whole list (:func:`~cpc_speech.features.inference.forward_chunked`: the cores stay busy across file boundaries); MFCC, the
    window protocol and instance-norm encoders go in groups of at most ``batch_seconds`` of audio.
    A clip shorter than ``feat.min_samples()`` (the encoder's receptive field) gets features with
    no frame, (0, dim), without running the model."""
    audio = [0.0]
    need = feat.min_samples()

    def save(uid: str, f: np.ndarray) -> None:
        fname = feature_file_name(uid)
        store.save_npy(out_dir / fname, np.ascontiguousarray(f.astype(np_dtype, copy=False)))
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
        chunk_frames = chunk_frames_for(model, precision, chunk_seconds)
        tensors = ((uid, torch.from_numpy(wav).to(dev)) for uid, wav in stream)
        with torch.inference_mode(), EvalMode(model):
            for uid, f in forward_chunked(model, tensors, feat.layer, chunk_frames, precision, errors="yield"):
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
            outs: List[Any] = feat.features([w for _, w in group], batch_seconds, chunk_seconds)
        except Exception:  # e.g. out of memory on one huge batch: retry one by one
            outs = []
            for _, w in group:
                try:
                    outs.append(feat.features([w], batch_seconds, chunk_seconds)[0])
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


def _init_worker(spec: Dict[str, Any], threads: int) -> None:
    torch.set_num_threads(max(1, threads))
    _WORKER["feat"] = featurizer_from_spec(spec)


def _worker_shard(todo: List[Tuple[str, str]], out_dir: str, np_dtype, workers: int, batch_seconds: float,
                  chunk_seconds: float):
    rows: List[IndexRow] = []
    skips: List[Tuple[str, str]] = []

    def done(r, s, _files):
        rows.extend(r)
        skips.extend(s)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the parent warns once per skipped file
        audio = extract_items(_WORKER["feat"], todo, Path(out_dir), np_dtype, workers, batch_seconds, chunk_seconds, done)
    return rows, skips, audio


def extract_in_processes(feat: Featurizer, todo: Sequence[Tuple[str, str]], out_dir: Path, np_dtype, processes: int,
                          workers: int, batch_seconds: float, chunk_seconds: float, done) -> float:
    """:func:`extract_items` over ``processes`` worker processes (spawned), each with
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
                             initargs=(feat.spec(), threads)) as pool:
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


