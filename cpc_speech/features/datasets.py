"""Features of a Hugging Face ``datasets`` object (or a dataset on disk) without writing its audio:
rows decoded in blocks (:func:`cpc_speech.corpora.hf.dataset_audio`) go through corpus extraction
(:func:`cpc_speech.features.corpus.extract_corpus`) into one feature folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

from cpc_speech.corpora.hf import dataset_audio
from cpc_speech.features.corpus import CorpusFeatures, extract_corpus
from cpc_speech.features.featurizer import Featurizer, make_featurizer
from cpc_speech.runlock import hold_output
from cpc_speech.types import Warn, warner


def extract_dataset(model, source, out_dir, *, layer: str = "context", block_rows: int = 64, splits=None,
                    audio_column: Optional[str] = None, speaker_column: Optional[str] = None, id_column: Optional[str] = None,
                    on_warning: Warn = None, **extract_kwargs):
    """Features of every row of a datasets object (or a dataset on disk) into the feature folder
    ``out_dir`` (layout of :func:`cpc_speech.features.extract_corpus`), without writing audio:
    rows are decoded in blocks of ``block_rows`` (bounded memory, also for a streaming
    ``IterableDataset``). Returns the :class:`~cpc_speech.features.CorpusFeatures` of all blocks."""
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    t0 = time.time()
    feat = model if isinstance(model, Featurizer) else make_featurizer(
        model, layer, extract_kwargs.pop("mode", "frames"), extract_kwargs.pop("device", None),
        precision=extract_kwargs.pop("precision", "auto"))
    extract_kwargs.setdefault("progress", False)
    extract_kwargs.setdefault("workers", 0)
    ids: List[str] = []
    computed = cached = 0
    skipped: List[Tuple[str, str]] = []
    empty: List[str] = []
    audio_seconds = 0.0
    block: List[Tuple[str, Any]] = []

    def run_block() -> None:
        nonlocal computed, cached, audio_seconds
        good = [(u, w) for u, w in block if not isinstance(w, Exception)]
        for u, w in block:
            if isinstance(w, Exception):
                skipped.append((u, str(w)))
                warner(on_warning)(f"skipping {w}")
        if good:
            res = extract_corpus(feat, good, out_dir, **extract_kwargs)
            ids.extend(res.ids)
            computed += res.computed
            cached += res.cached
            skipped.extend(res.skipped)
            empty.extend(res.empty)
            audio_seconds += res.audio_seconds
        block.clear()

    with hold_output(out_dir, "extract"):  # one owner for all blocks (extract_corpus re-enters the lock)
        for uid, _speaker, wav in dataset_audio(source, splits=splits, audio_column=audio_column,
                                                speaker_column=speaker_column, id_column=id_column, on_warning=on_warning):
            block.append((uid, wav))
            if len(block) >= block_rows:
                run_block()
        run_block()
    if not ids and not skipped:
        raise ValueError("the dataset has no rows")
    return CorpusFeatures(Path(out_dir), ids, computed, cached, skipped, time.time() - t0, audio_seconds, empty)
