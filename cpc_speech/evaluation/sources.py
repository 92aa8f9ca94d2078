"""Where evaluated features come from: a folder of ``<id>.npy`` files, or a model (and the MFCC and
random-init baselines) run over a manifest through the probes' feature cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from cpc_speech.evaluation.feature_dir import feature_meta, load_features
from cpc_speech.types import PathLike


@dataclass
class FeatureSource:
    """One set of features to evaluate: ``name`` (model, mfcc, random_init, or the folder's),
    ``features`` {id: (frames, dim)}, the ``layer`` that produced them (None: unknown or MFCC) and
    where they are."""

    name: str
    features: Mapping[str, np.ndarray]
    layer: Optional[str]
    where: str


def from_folder(folder: PathLike, name: Optional[str] = None, ids: Optional[Iterable[str]] = None) -> FeatureSource:
    """``name`` defaults to the featuriser name in the folder's ``meta.json`` (model, mfcc, ...),
    else ``features``."""
    meta = feature_meta(folder)
    name = name or meta.get("name") or "features"
    layer = meta.get("layer")
    if meta.get("featurizer") == "mfcc":
        layer = None
    return FeatureSource(name, load_features(folder, ids), layer, str(folder))


def from_model(
    model: Any,
    manifest: PathLike,
    ids: Optional[Iterable[str]],
    cache_dir: PathLike,
    layer: str = "context",
    baselines: Sequence[str] = ("mfcc", "random_init"),
    device=None,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> List[FeatureSource]:
    """Features of the manifest rows listed in ``ids`` (all rows if None) for the model and the
    baselines, extracted into (or reused from) ``cache_dir/<featuriser>`` exactly as the probes do,
    so that a recipe's probes and ABX share one cache."""
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.probes.common import cache_subdir, cached_features, featurizers

    rows = read_manifest(manifest)
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r.id in wanted]
        if not rows:
            raise ValueError(f"{manifest}: none of the utterances to evaluate is in the manifest")
    out: List[FeatureSource] = []
    for feat in featurizers(model, layer, baselines, device=device, seed=seed):
        feats: Dict[str, np.ndarray] = cached_features(feat, rows, cache_dir, workers=workers, progress=progress, log=log)
        out.append(FeatureSource(feat.name, feats, None if feat.is_mfcc else feat.layer, str(Path(cache_dir) / cache_subdir(feat))))
    return out
