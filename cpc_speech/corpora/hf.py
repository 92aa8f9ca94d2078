"""Hugging Face ``datasets`` data on local disk -> 16 kHz FLAC files + manifest rows.

Accepted sources:

* a ``Dataset.save_to_disk`` folder (``state.json``, ``dataset_info.json``, ``data-*.arrow``);
* a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` and one such folder per split);
* a folder of ``.parquet`` files (a hub snapshot: ``data/train-00000-of-00002.parquet`` or
  ``<config>/train/0000.parquet``), or of ``.arrow`` files, or one such file;
* a ``datasets.Dataset``, ``DatasetDict``, ``IterableDataset`` or ``IterableDatasetDict`` object
  (Python API): its audio column is read undecoded (``Audio(decode=False)``) and decoded here.

:func:`cpc_speech.features.datasets.extract_dataset` extracts features straight from such an object (also a streaming
``IterableDataset``), without writing audio files, in one pass into one feature folder (the layout
of :func:`cpc_speech.features.extract_corpus`).

The files are read with pyarrow directly (no ``datasets`` import, no torchcodec): the audio column
is a struct ``{bytes, path}`` (encoded file bytes, decoded with soundfile) or
``{array, sampling_rate}``. Every utterance is written as a 16 kHz mono FLAC into ``audio_dir``
(one sub-folder per split), since a manifest row needs a file.

This module picks the columns and gives every row a unique id; the files on disk are found and read
in :mod:`cpc_speech.corpora.hf_files`, ``datasets`` objects handled in
:mod:`cpc_speech.corpora.hf_objects`, audio cells decoded in :mod:`cpc_speech.corpora.hf_audio`.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.audio import SAMPLE_RATE, AudioError, audio_info, write_audio
from cpc_speech.corpora.hf_audio import decode_audio_value
from cpc_speech.corpora.hf_files import BATCH_ROWS, file_batches, file_schema, find_data_files, require_pyarrow
from cpc_speech.corpora.hf_objects import dataset_schema, dataset_splits, is_hf_dataset, undecoded
from cpc_speech.corpora.manifest import parse_name_list, Utterance
from cpc_speech.types import Warn, warner

SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id", "spk")
ID_COLUMNS = ("id", "utterance_id", "utt_id", "segment_id")
UNKNOWN_SPEAKER = "unknown"


# ---------------------------------------------------------------------------------------------
# columns


def _is_audio_type(t) -> bool:
    pa = require_pyarrow()
    if not pa.types.is_struct(t):
        return False
    names = {t.field(i).name for i in range(t.num_fields)}
    return "bytes" in names or "array" in names


def _pick_columns(schema, where: Path, audio_column, speaker_column, id_column, warn) -> Tuple[str, Optional[str], Optional[str]]:
    names = list(schema.names)
    listing = ", ".join(names)
    for label, col in (("audio", audio_column), ("speaker", speaker_column), ("id", id_column)):
        if col is not None and col not in names:
            raise ValueError(f"{where}: no {label} column {col!r} (columns: {listing})")
    if audio_column is None:
        if "audio" in names:
            audio_column = "audio"
        else:
            audio_column = next((n for n in names if _is_audio_type(schema.field(n).type)), None)
            if audio_column is None:
                raise ValueError(f"{where}: no audio column found (columns: {listing}); name it with audio_column / --audio-column")
    if speaker_column is None:
        speaker_column = next((c for c in SPEAKER_COLUMNS if c in names), None)
        if speaker_column is None:
            warn(f"{where}: no speaker column ({', '.join(SPEAKER_COLUMNS)}) among: {listing}; every speaker is '{UNKNOWN_SPEAKER}'")
    if id_column is None:
        id_column = next((c for c in ID_COLUMNS if c in names), None)
    return audio_column, speaker_column, id_column


def _has_data(item) -> bool:
    return bool(item) if isinstance(item, list) else True


def _column_batches(source, columns: List[str], audio_column: str) -> Iterator[Tuple[str, Dict[str, list]]]:
    """(label for messages, {column: values}) blocks of a list of arrow/parquet files or of a
    datasets object."""
    if isinstance(source, list):
        for path in source:
            schema_names = file_schema(path).names
            for c in columns:
                if c not in schema_names:
                    raise ValueError(f"{path}: no column {c!r} (columns: {', '.join(schema_names)})")
            for batch in file_batches(path, columns):
                yield path.name, {c: batch.column(c).to_pylist() for c in columns}
        return
    ds = undecoded(source, audio_column)
    for batch in ds.iter(batch_size=BATCH_ROWS):
        yield "dataset", {c: list(batch[c]) for c in columns}


def _safe_name(uid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", uid).strip("._") or "utt"
    return name[:200]


def _clean(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ").strip()


class _Cell(NamedTuple):
    uid: str
    split: Optional[str]
    fname: str  # file stem, unique per split folder (case-insensitive)
    value: object  # the audio cell
    where: str  # for messages
    speaker: str


def _cell_batches(files, source_name: str, audio_column, speaker_column, id_column, warn) -> Iterator[List[_Cell]]:
    """Blocks of rows of every split, with unique ids (see :func:`load_hf` for the rules)."""
    ids_taken: set = set()
    names_taken: set = set()
    renamed = 0
    for split, paths in files.items():
        if not _has_data(paths):
            warn(f"{source_name}: split {split or '(unnamed)'} has no data files")
            continue
        first = paths[0] if isinstance(paths, list) else paths
        schema_of = file_schema(first) if isinstance(first, Path) else dataset_schema(first, source_name)
        cols = _pick_columns(schema_of, first if isinstance(first, Path) else f"{source_name} split {split or '(unnamed)'}",
                             audio_column, speaker_column, id_column, warn)
        a_col, s_col, i_col = cols
        index = 0
        wanted_cols = [c for c in dict.fromkeys(cols) if c is not None]
        for label, batch in _column_batches(paths, wanted_cols, a_col):
            audio = batch[a_col]
            spks = batch[s_col] if s_col else [None] * len(audio)
            given_ids = batch[i_col] if i_col else [None] * len(audio)
            cells = []
            for value, spk, gid in zip(audio, spks, given_ids):
                where = f"{label} row {index}"
                if gid is not None and _clean(gid):
                    uid = _clean(gid)
                elif isinstance(value, dict) and value.get("path"):
                    uid = _clean(Path(str(value["path"])).stem) or f"{split or 'utt'}-{index:08d}"
                else:
                    uid = f"{split or 'utt'}-{index:08d}"
                if uid in ids_taken:
                    base, n = uid, 1
                    while uid in ids_taken:
                        uid = f"{base}-{n}"
                        n += 1
                    renamed += 1
                ids_taken.add(uid)
                fname = _safe_name(uid)
                folder = _safe_name(split) if split else None
                key = (folder, fname.lower())
                n = 1
                while key in names_taken:
                    fname = f"{_safe_name(uid)}-{n}"
                    key = (folder, fname.lower())
                    n += 1
                names_taken.add(key)
                speaker = UNKNOWN_SPEAKER if spk is None or not _clean(spk) else _clean(spk)
                cells.append(_Cell(uid, split, fname, value, f"{source_name}: {where} (id {uid})", speaker))
                index += 1
            yield cells
    if renamed:
        warn(f"{renamed} duplicate utterance id(s) were made unique with a -N suffix")


def load_hf(
    source: Union[str, Path, object],
    audio_dir: Union[str, Path],
    *,
    splits: Union[None, str, Sequence[str]] = None,
    audio_column: Optional[str] = None,
    speaker_column: Optional[str] = None,
    id_column: Optional[str] = None,
    workers: int = 4,
    overwrite: bool = False,
    progress: bool = False,
    on_warning: Warn = None,
) -> List[Utterance]:
    """Decode a local Hugging Face dataset, write 16 kHz FLACs into ``audio_dir`` and return rows.

    ``source``: a dataset on disk (see the module docstring) or a ``datasets`` object
    (``Dataset``, ``DatasetDict``, ``IterableDataset``, ``IterableDatasetDict``). ``splits`` selects splits (default: all). The speaker column defaults to the first of
    :data:`SPEAKER_COLUMNS` present (else ``unknown``, with a warning); the id column to the first
    of :data:`ID_COLUMNS` present, else the audio file name, else ``<split>-<row>``. Existing FLACs
    are reused unless ``overwrite``. Rows that do not decode are skipped with a warning each, then
    one with the count. Decoding runs in ``workers`` threads.
    """
    warn = warner(on_warning)
    if is_hf_dataset(source):
        files = dataset_splits(source)
        base_dir = None
        source_name = f"<{type(source).__name__}>"
    else:
        source = Path(source).expanduser()
        files = find_data_files(source)
        base_dir = source if source.is_dir() else source.parent
        source_name = str(source)
    wanted = parse_name_list(splits)
    if wanted is not None:
        present = [s for s in files if s is not None]
        for s in wanted:
            if s not in files:
                raise ValueError(f"{source_name}: no split {s!r} (splits: {', '.join(present) or 'none: a single unnamed split'})")
        files = {s: files[s] for s in wanted}
    audio_dir = Path(audio_dir).expanduser().resolve()

    rows: List[Utterance] = []
    failed = total = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="decoding audio", unit="utt")

    def work(job):
        uid, out, value, where = job
        if not overwrite and out.is_file():
            try:
                info = audio_info(out)
                if info.sample_rate == SAMPLE_RATE and info.frames > 0:
                    return info.frames
            except AudioError:
                pass
        try:
            wav = decode_audio_value(value, where, base_dir)
        except AudioError as exc:
            return exc
        write_audio(out, np.clip(wav, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        return int(wav.shape[0])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for cells in _cell_batches(files, source_name, audio_column, speaker_column, id_column, warn):
            jobs = [(c.uid, (audio_dir / _safe_name(c.split) if c.split else audio_dir) / f"{c.fname}.flac", c.value, c.where) for c in cells]
            for cell, job, result in zip(cells, jobs, pool.map(work, jobs)):
                total += 1
                if isinstance(result, Exception):
                    failed += 1
                    warn(f"skipping {result}")
                else:
                    rows.append(Utterance(cell.uid, str(job[1]), cell.speaker, result, SAMPLE_RATE))
            if bar is not None:
                bar.update(len(jobs))
    if bar is not None:
        bar.close()
    if failed:
        warn(f"skipped {failed} of {total} row(s) whose audio could not be decoded")
    if not rows:
        raise ValueError(f"no usable audio rows in {source_name}")
    return rows


# ---------------------------------------------------------------------------------------------
# features straight from a dataset object


def dataset_audio(source, *, splits=None, audio_column: Optional[str] = None, speaker_column: Optional[str] = None,
                  id_column: Optional[str] = None, on_warning: Warn = None) -> Iterator[Tuple[str, str, Any]]:
    """``(id, speaker, 16 kHz float32 waveform or AudioError)`` of each row of a datasets object
    (also a streaming ``IterableDataset``) or a dataset on disk, in order, decoded lazily."""
    warn = warner(on_warning)
    files = dataset_splits(source) if is_hf_dataset(source) else find_data_files(Path(source).expanduser())
    wanted = parse_name_list(splits)
    if wanted is not None:
        missing = [s for s in wanted if s not in files]
        if missing:
            raise ValueError(f"no split {missing[0]!r} (splits: {', '.join(str(s) for s in files)})")
        files = {s: files[s] for s in wanted}
    base_dir = None if is_hf_dataset(source) else (Path(source) if Path(source).is_dir() else Path(source).parent)
    name = f"<{type(source).__name__}>" if is_hf_dataset(source) else str(source)
    for cells in _cell_batches(files, name, audio_column, speaker_column, id_column, warn):
        for cell in cells:
            try:
                yield cell.uid, cell.speaker, decode_audio_value(cell.value, cell.where, base_dir)
            except AudioError as exc:
                yield cell.uid, cell.speaker, exc
