"""``datasets`` objects in memory (``Dataset``, ``DatasetDict``, ``IterableDataset``,
``IterableDatasetDict``), recognised by type name so that ``datasets`` is never imported here."""

from __future__ import annotations

from typing import Dict, Optional

from cpc_speech.corpora.hf_files import require_pyarrow

_DATASET_TYPES = ("Dataset", "DatasetDict", "IterableDataset", "IterableDatasetDict")


def is_hf_dataset(obj) -> bool:
    """Whether ``obj`` is a ``datasets`` (IterableDataset)Dataset(Dict) object."""
    return type(obj).__name__ in _DATASET_TYPES and type(obj).__module__.startswith("datasets")


def dataset_splits(obj) -> Dict[Optional[str], object]:
    """``{split or None: dataset}`` of a datasets object."""
    if type(obj).__name__ in ("DatasetDict", "IterableDatasetDict"):
        return {str(name): ds for name, ds in obj.items()}
    return {None: obj}


def dataset_schema(ds, where: str):
    """The pyarrow schema of a dataset's features (the first row's when they are unknown, as for
    some streaming datasets)."""
    pa = require_pyarrow()
    if ds.features is not None:
        return ds.features.arrow_schema
    first = next(iter(undecoded(ds, None)), None)
    if first is None:
        raise ValueError(f"{where}: the dataset has no rows")
    return pa.schema([(k, pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if isinstance(v, dict) and "bytes" in v else pa.string()) for k, v in first.items()])


def undecoded(ds, audio_column: Optional[str]):
    """``ds`` with its Audio column(s) not decoded (datasets would decode with torchcodec)."""
    features = getattr(ds, "features", None)
    if not features:
        return ds
    for name, feature in features.items():
        if type(feature).__name__ == "Audio" and getattr(feature, "decode", False) and (audio_column is None or name == audio_column):
            ds = ds.cast_column(name, type(feature)(sampling_rate=getattr(feature, "sampling_rate", None), decode=False))
    return ds
