"""Hugging Face ``datasets`` data on local disk -> 16 kHz FLAC files + manifest rows.

Accepted sources:

* a ``Dataset.save_to_disk`` folder (``state.json``, ``dataset_info.json``, ``data-*.arrow``);
* a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` and one such folder per split);
* a folder of ``.parquet`` files (a hub snapshot: ``data/train-00000-of-00002.parquet`` or
  ``<config>/train/0000.parquet``), or of ``.arrow`` files, or one such file.

The files are read with pyarrow directly (no ``datasets`` import, no torchcodec): the audio column
is a struct ``{bytes, path}`` (encoded file bytes, decoded here with soundfile) or
``{array, sampling_rate}``. Every utterance is written as a 16 kHz mono FLAC into ``audio_dir``
(one sub-folder per split), since a manifest row needs a file.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile as sf

from cpc_speech.audio import SAMPLE_RATE, AudioError, audio_info, read_audio, resample, to_mono, validate, write_audio
from cpc_speech.corpora.manifest import parse_name_list, Utterance

SPEAKER_COLUMNS = ("speaker_id", "speaker", "client_id", "spk_id", "spk")
ID_COLUMNS = ("id", "utterance_id", "utt_id", "segment_id")
UNKNOWN_SPEAKER = "unknown"
_SHARD_RE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")
_CHUNK = 32

Warn = Optional[Callable[[str], None]]


class MissingDependencyError(ImportError, RuntimeError):
    """An optional package is not installed (the message says which and how to get it)."""


def _warner(on_warning: Warn) -> Callable[[str], None]:
    return on_warning if on_warning is not None else (lambda msg: warnings.warn(msg, stacklevel=3))


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "reading Hugging Face datasets needs pyarrow: pip install datasets (or pip install 'cpc_speech[hf]')"
        ) from None
    return pyarrow


# ---------------------------------------------------------------------------------------------
# finding the data files


def _saved_dataset_files(folder: Path) -> List[Path]:
    """Arrow shards of one ``save_to_disk`` folder, in the order ``state.json`` lists them."""
    state = folder / "state.json"
    if state.is_file():
        try:
            names = [d["filename"] for d in json.loads(state.read_text(encoding="utf-8")).get("_data_files", [])]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{state}: cannot read the list of data files ({exc})") from None
        files = [folder / n for n in names]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{state} lists {f.name}, which is missing")
        if files:
            return files
    return sorted(folder.glob("*.arrow"))


def _split_of(path: Path, source: Path) -> Optional[str]:
    m = _SHARD_RE.match(path.stem)
    if m:
        return m.group("split")
    if path.parent != source:
        return path.parent.name
    return None


def find_data_files(source: Union[str, Path]) -> Dict[Optional[str], List[Path]]:
    """``{split or None: [arrow or parquet files]}`` of a dataset on disk (see the module doc)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"Hugging Face dataset not found: {source}")
    if source.is_file():
        if source.suffix not in (".parquet", ".arrow"):
            raise ValueError(f"{source}: expected a .parquet or .arrow file, or a dataset folder")
        m = _SHARD_RE.match(source.stem)
        return {m.group("split") if m else None: [source]}
    dd = source / "dataset_dict.json"
    if dd.is_file():
        try:
            names = json.loads(dd.read_text(encoding="utf-8"))["splits"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{dd}: cannot read the list of splits ({exc})") from None
        out: Dict[Optional[str], List[Path]] = {}
        for name in names:
            if not (source / name).is_dir():
                raise FileNotFoundError(f"{dd} lists split {name!r}, but {source / name} is missing")
            out[name] = _saved_dataset_files(source / name)
        return out
    if (source / "state.json").is_file() or list(source.glob("*.arrow")):
        return {None: _saved_dataset_files(source)}
    out = {}
    for kind in ("parquet", "arrow"):
        files = sorted(p for p in source.rglob(f"*.{kind}") if not any(part.startswith(".") for part in p.relative_to(source).parts))
        for f in files:
            out.setdefault(_split_of(f, source), []).append(f)
        if out:
            return out
    raise FileNotFoundError(
        f"no Hugging Face dataset in {source}: expected a save_to_disk folder (state.json and .arrow files, "
        f"or dataset_dict.json), or .parquet / .arrow files"
    )


def _schema(path: Path):
    pa = _pyarrow()
    if path.suffix == ".parquet":
        return pa.parquet.ParquetFile(str(path)).schema_arrow
    with pa.memory_map(str(path)) as src:
        try:
            return pa.ipc.open_stream(src).schema
        except pa.ArrowInvalid:
            return pa.ipc.open_file(src).schema


def _batches(path: Path, columns: List[str]) -> Iterator:
    """Record batches of ``columns`` of one parquet / arrow (stream or file format) file."""
    pa = _pyarrow()
    try:
        if path.suffix == ".parquet":
            yield from pa.parquet.ParquetFile(str(path)).iter_batches(batch_size=_CHUNK, columns=columns)
            return
        with pa.memory_map(str(path)) as src:
            try:
                reader = pa.ipc.open_stream(src)
                batches = iter(reader)
            except pa.ArrowInvalid:
                src.seek(0)
                reader = pa.ipc.open_file(src)
                batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
            for batch in batches:
                batch = batch.select(columns)
                for start in range(0, batch.num_rows, _CHUNK):
                    yield batch.slice(start, _CHUNK)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None


# ---------------------------------------------------------------------------------------------
# columns


def _is_audio_type(t) -> bool:
    pa = _pyarrow()
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


# ---------------------------------------------------------------------------------------------
# decoding


def decode_audio_value(value, name: str = "input", base_dir: Optional[Path] = None) -> np.ndarray:
    """One audio cell (``{bytes, path}``, ``{array, sampling_rate}``, raw bytes or a path) as mono
    float32 at 16 kHz. Raises AudioError naming ``name``."""
    if value is None:
        raise AudioError(f"{name}: no audio (empty cell)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = {"bytes": bytes(value)}
    elif isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise AudioError(f"{name}: unsupported audio cell of type {type(value).__name__}")
    if value.get("bytes") is not None:
        try:
            wav, rate = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(f"{name}: cannot decode audio bytes ({str(exc).strip() or type(exc).__name__})") from None
        wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
        if wav.size and not np.all(np.isfinite(wav)):
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        return validate(resample(wav, rate), name)
    if value.get("array") is not None:
        rate = value.get("sampling_rate")
        if not rate:
            raise AudioError(f"{name}: audio array without sampling_rate")
        wav = to_mono(np.asarray(value["array"], dtype=np.float32), name)
        if wav.size and not np.all(np.isfinite(wav)):
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        return validate(resample(wav, int(rate)), name)
    if value.get("path"):
        p = Path(value["path"]).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return read_audio(p)
    raise AudioError(f"{name}: audio cell has neither bytes, array nor path")


def _safe_name(uid: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", uid).strip("._") or "utt"
    return name[:200]


def _clean(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ").strip()


def load_hf(
    source: Union[str, Path],
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

    ``splits`` selects splits (default: all). The speaker column defaults to the first of
    :data:`SPEAKER_COLUMNS` present (else ``unknown``, with a warning); the id column to the first
    of :data:`ID_COLUMNS` present, else the audio file name, else ``<split>-<row>``. Existing FLACs
    are reused unless ``overwrite``. Rows that do not decode are skipped with a warning each, then
    one with the count. Decoding runs in ``workers`` threads.
    """
    warn = _warner(on_warning)
    source = Path(source).expanduser()
    files = find_data_files(source)
    wanted = parse_name_list(splits)
    if wanted is not None:
        present = [s for s in files if s is not None]
        for s in wanted:
            if s not in files:
                raise ValueError(f"{source}: no split {s!r} (splits: {', '.join(present) or 'none: a single unnamed split'})")
        files = {s: files[s] for s in wanted}
    audio_dir = Path(audio_dir).expanduser().resolve()
    base_dir = source if source.is_dir() else source.parent

    rows: List[Utterance] = []
    ids_taken: set = set()
    names_taken: set = set()
    failed = total = renamed = 0
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
        for split, paths in files.items():
            if not paths:
                warn(f"{source}: split {split or '(unnamed)'} has no data files")
                continue
            cols = _pick_columns(_schema(paths[0]), paths[0], audio_column, speaker_column, id_column, warn)
            a_col, s_col, i_col = cols
            out_dir = audio_dir / _safe_name(split) if split else audio_dir
            index = 0
            for path in paths:
                wanted_cols = [c for c in dict.fromkeys(cols) if c is not None]
                schema_names = _schema(path).names
                for c in wanted_cols:
                    if c not in schema_names:
                        raise ValueError(f"{path}: no column {c!r} (columns: {', '.join(schema_names)})")
                for batch in _batches(path, wanted_cols):
                    audio = batch.column(a_col).to_pylist()
                    spks = batch.column(s_col).to_pylist() if s_col else [None] * len(audio)
                    given_ids = batch.column(i_col).to_pylist() if i_col else [None] * len(audio)
                    jobs, meta = [], []
                    for value, spk, gid in zip(audio, spks, given_ids):
                        where = f"{path.name} row {index}"
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
                        key = (str(out_dir), fname.lower())
                        n = 1
                        while key in names_taken:
                            fname = f"{_safe_name(uid)}-{n}"
                            key = (str(out_dir), fname.lower())
                            n += 1
                        names_taken.add(key)
                        out = out_dir / f"{fname}.flac"
                        jobs.append((uid, out, value, f"{source}: {where} (id {uid})"))
                        meta.append((uid, out, UNKNOWN_SPEAKER if spk is None or not _clean(spk) else _clean(spk)))
                        index += 1
                    for (uid, out, spk), result in zip(meta, pool.map(work, jobs)):
                        total += 1
                        if isinstance(result, Exception):
                            failed += 1
                            warn(f"skipping {result}")
                        else:
                            rows.append(Utterance(uid, str(out), spk, result, SAMPLE_RATE))
                    if bar is not None:
                        bar.update(len(jobs))
    if bar is not None:
        bar.close()
    if renamed:
        warn(f"{renamed} duplicate utterance id(s) were made unique with a -N suffix")
    if failed:
        warn(f"skipped {failed} of {total} row(s) whose audio could not be decoded")
    if not rows:
        raise ValueError(f"no usable audio rows in {source}")
    return rows
