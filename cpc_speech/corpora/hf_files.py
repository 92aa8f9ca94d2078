"""Hugging Face datasets saved on local disk: finding their arrow / parquet files and reading them.

Layouts: a ``Dataset.save_to_disk`` folder (``state.json``, ``dataset_info.json``, ``data-*.arrow``),
a ``DatasetDict.save_to_disk`` folder (``dataset_dict.json`` and one such folder per split), a folder
of ``.parquet`` files (a hub snapshot: ``data/train-00000-of-00002.parquet`` or
``<config>/train/0000.parquet``) or of ``.arrow`` files, or one such file. Read with pyarrow directly
(no ``datasets`` import).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Union

_SHARD_RE = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}$")
BATCH_ROWS = 32  # rows per block read from a file or a datasets object


class MissingDependencyError(ImportError, RuntimeError):
    """An optional package is not installed (the message says which and how to get it)."""


def require_pyarrow():
    """pyarrow with its ipc and parquet modules, or MissingDependencyError saying how to install it."""
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


def file_schema(path: Path):
    """The pyarrow schema of one parquet / arrow file."""
    pa = require_pyarrow()
    if path.suffix == ".parquet":
        return pa.parquet.ParquetFile(str(path)).schema_arrow
    with pa.memory_map(str(path)) as src:
        try:
            return pa.ipc.open_stream(src).schema
        except pa.ArrowInvalid:
            return pa.ipc.open_file(src).schema


def file_batches(path: Path, columns: List[str]) -> Iterator:
    """Record batches of ``columns`` of one parquet / arrow (stream or file format) file."""
    pa = require_pyarrow()
    try:
        if path.suffix == ".parquet":
            yield from pa.parquet.ParquetFile(str(path)).iter_batches(batch_size=BATCH_ROWS, columns=columns)
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
                for start in range(0, batch.num_rows, BATCH_ROWS):
                    yield batch.slice(start, BATCH_ROWS)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: cannot read ({exc})") from None
