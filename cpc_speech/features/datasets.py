"""Features of a Hugging Face ``datasets`` object (or a dataset on disk) without writing its audio,
in one pass: rows are decoded one after another (:func:`cpc_speech.corpora.hf.dataset_audio`) and
stream through corpus extraction's compute-and-save loop into one feature folder (the layout, cache
rules and lock of :func:`cpc_speech.features.corpus.extract_corpus`)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from cpc_speech.atomic import remove_stale_temporaries
from cpc_speech.corpora.hf import dataset_audio
from cpc_speech.features import store
from cpc_speech.features.corpus import (INDEX_EVERY_SECONDS, CorpusFeatures, extract_in_processes, extract_items,
                                        check_extract_settings)
from cpc_speech.features.featurizer import Featurizer, make_featurizer
from cpc_speech.features.models import FeatureError
from cpc_speech.features.store import IndexRow, feature_file_name
from cpc_speech.runlock import hold_output
from cpc_speech.types import Warn, warner


def extract_dataset(model, source, out_dir, *, layer: str = "context", block_rows: int = 64, splits=None,
                    audio_column: Optional[str] = None, speaker_column: Optional[str] = None, id_column: Optional[str] = None,
                    on_warning: Warn = None, dtype: str = "float32", batch_seconds: float = 40.0,
                    chunk_seconds: Optional[float] = None, workers: int = 0, processes: int = 1, progress: bool = False,
                    mode: str = "frames", device=None, precision: str = "auto", name: Optional[str] = None) -> CorpusFeatures:
    """Features of every row of a datasets object (or a dataset on disk) into the feature folder
    ``out_dir`` (layout of :func:`cpc_speech.features.extract_corpus`, whose settings the keyword
    arguments are), without writing audio. One pass over the rows, decoded as they are needed
    (bounded memory, also for a streaming ``IterableDataset``); ``block_rows`` rows go to a worker
    process at a time when ``processes`` > 1. A re-run reuses the features its index lists for the
    same audio. Undecodable rows are skipped with a warning each (``on_warning``)."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    check_extract_settings(dtype, batch_seconds, chunk_seconds, processes)
    t0 = time.time()
    feat = model if isinstance(model, Featurizer) else make_featurizer(model, layer, mode, device, name, precision)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FeatureError(f"{out_dir} is a file, not a folder for features")
    warn = warner(on_warning)
    with hold_output(out_dir, "extract"):
        remove_stale_temporaries(out_dir)
        fresh = not (out_dir / store.META_NAME).is_file() and not (out_dir / store.INDEX_NAME).is_file()
        old_index, old_sources = store.begin_writing(out_dir, [], feat.meta(dtype), lambda old: feat.same_features(old, dtype))
        run = _DatasetRun(out_dir, old_index, old_sources, fresh, progress)
        rows = dataset_audio(source, splits=splits, audio_column=audio_column, speaker_column=speaker_column,
                             id_column=id_column, on_warning=on_warning)
        np_dtype = np.float16 if dtype == "float16" else np.float32
        audio_seconds = 0.0
        try:
            todo = run.to_compute(rows, warn)
            if processes > 1:
                for block in _blocks(todo, block_rows):
                    audio_seconds += extract_in_processes(feat, block, out_dir, np_dtype, processes, workers, batch_seconds,
                                                           chunk_seconds, run.done)
            else:
                audio_seconds = extract_items(feat, todo, out_dir, np_dtype, workers, batch_seconds, chunk_seconds, run.done)
        finally:
            run.close()
    if not run.ids and not run.skipped:
        raise ValueError("the dataset has no rows")
    if run.failed:
        warnings.warn(f"skipped {run.failed} of {len(run.ids)} row(s) whose features failed (see the warnings above)", stacklevel=2)
    ids = [u for u in run.ids if u in run.index]
    return CorpusFeatures(out_dir, ids, len(run.index) - run.cached, run.cached, run.skipped, time.time() - t0, audio_seconds,
                          [u for u in ids if run.index[u][2] == 0])


def _blocks(items: Iterator[Tuple[str, Any]], size: int) -> Iterator[List[Tuple[str, Any]]]:
    block: List[Tuple[str, Any]] = []
    for item in items:
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


class _DatasetRun:
    """The bookkeeping of one extraction over a stream of rows: which rows the old index serves,
    the new index (rewritten every ``INDEX_EVERY_SECONDS`` and at the end) and the skipped rows."""

    def __init__(self, out_dir: Path, old_index: Dict[str, IndexRow], old_sources: Dict[str, str], fresh: bool, progress: bool):
        self.out_dir, self.old_index, self.old_sources, self.fresh = out_dir, old_index, old_sources, fresh
        self.every = INDEX_EVERY_SECONDS
        self.ids: List[str] = []  # every row's id, in dataset order
        self.index: Dict[str, IndexRow] = {}
        self.sources: Dict[str, str] = {}
        self.skipped: List[Tuple[str, str]] = []
        self.cached = self.failed = 0
        self.last_write = time.time()
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(desc="extract", unit="row")

    def to_compute(self, rows, warn) -> Iterator[Tuple[str, np.ndarray]]:
        """(id, waveform) of the rows whose features are not in the folder yet, as they come; an
        undecodable row is skipped (with a warning), a cached one counted."""
        for uid, _speaker, wav in rows:
            if uid in self.sources:
                raise FeatureError(f"duplicate utterance id {uid!r} in the rows to extract")
            fname = feature_file_name(uid)
            self.ids.append(uid)
            if isinstance(wav, Exception):
                self.skipped.append((uid, str(wav)))
                self.sources[uid] = ""
                warn(f"skipping {wav}")
                self._tick(1)
                continue
            self.sources[uid] = store.source_of(wav)
            listed = self.old_index.get(uid)
            shape = store.npy_shape(self.out_dir / fname) if listed is not None and listed[1] == fname else None
            if shape is not None and shape == (listed[2], listed[3]) and self.old_sources.get(uid, self.sources[uid]) == self.sources[uid]:
                self.index[uid] = (uid, fname, shape[0], shape[1])
                self.cached += 1
                self._tick(1)
                continue
            if self.fresh and (self.out_dir / fname).exists() and listed is None:
                raise FeatureError(f"{self.out_dir} already holds {fname} not written by cpc-speech extract "
                                   f"(no {store.META_NAME}); use an empty or new output folder")
            yield uid, wav

    def done(self, rows: Sequence[IndexRow], skips: Sequence[Tuple[str, str]], files: int) -> None:
        """Finished rows (the callback of the compute loop); rewrites the index every few seconds."""
        for row in rows:
            self.index[row[0]] = row
        self.skipped.extend(skips)
        self.failed += len(skips)
        self._tick(files)
        if time.time() - self.last_write > self.every:
            self.write_index()

    def _tick(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write_index(self) -> None:
        """``features.tsv``: this run's rows in dataset order, then the still valid rows of other ids."""
        keep = {u: r for u, r in self.old_index.items() if u not in self.index and u not in self.sources
                and (self.out_dir / r[1]).is_file()}
        sources = {**{u: self.old_sources[u] for u in keep if u in self.old_sources}, **self.sources}
        store.write_index(self.out_dir, [self.index[u] for u in self.ids if u in self.index] + list(keep.values()), sources)
        self.last_write = time.time()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.write_index()
