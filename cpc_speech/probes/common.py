"""Shared probe plumbing: featurisers (model, MFCC, random init), cached extraction, result entries."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cpc_speech.corpora.labels import LabelFileError
from cpc_speech.corpora.manifest import Utterance, read_manifest
from cpc_speech.features.corpus import extract_corpus
from cpc_speech.features.featurizer import Featurizer, make_featurizer
from cpc_speech.features.store import load_feature_dir
from cpc_speech.results import PROBE_BASELINES as BASELINES
PathLike = Union[str, Path]


def parse_baselines(text: Optional[str]) -> Tuple[str, ...]:
    """``"mfcc,random_init"`` -> ('mfcc', 'random_init'); ``""``/``"none"`` -> ()."""
    if text is None:
        return BASELINES
    items = [t.strip() for t in text.split(",") if t.strip() and t.strip() != "none"]
    bad = [t for t in items if t not in BASELINES]
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}; choose from {', '.join(BASELINES)}")
    return tuple(dict.fromkeys(items))


def random_init_like(model, seed: int = 0):
    """A CPCModel with the same config and freshly seeded random weights (eval mode)."""
    from cpc_speech.model.cpc import CPCModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = CPCModel(model.cfg)
    from cpc_speech.features.models import model_device

    return fresh.to(model_device(model)).eval()


def featurizers(
    model: Any,
    layer: str,
    baselines: Sequence[str],
    mode: str = "frames",
    device=None,
    seed: int = 0,
) -> List[Featurizer]:
    """[model, then the requested baselines] in that order, as :class:`Featurizer` objects.
    ``model=None`` probes the baselines only (then ``random_init`` is impossible: no config)."""
    out: List[Featurizer] = []
    if model is not None:
        out.append(make_featurizer(model, layer, mode, device, name="model"))
    elif "random_init" in baselines:
        raise ValueError("the random_init baseline needs a model (its config); give a model or drop the baseline")
    for b in baselines:
        if b == "mfcc":
            out.append(make_featurizer("mfcc", mode=mode, name="mfcc"))
        elif b == "random_init":
            out.append(make_featurizer(random_init_like(out[0].model, seed), layer, mode, name="random_init"))
    if not out:
        raise ValueError("nothing to probe: no model and no baselines")
    return out


def model_path(feat: Featurizer, given: Any) -> Optional[str]:
    """The resolved checkpoint path of the probed model ("<in-memory model>" if it has none)."""
    if given is None:
        return None
    ckpt = feat.checkpoint or getattr(feat.model, "checkpoint_path", None)
    if ckpt:
        return str(Path(ckpt).resolve())
    return str(given) if isinstance(given, (str, Path)) else "<in-memory model>"


def cache_subdir(feat: Featurizer) -> str:
    """Folder name of a featuriser's cache under ``--cache-dir``."""
    parts = [feat.name]
    if not feat.is_mfcc:
        parts.append(feat.layer)
    if str(feat.mode) != "frames":
        parts.append(str(feat.mode).replace(":", ""))
    return "-".join(parts)


def cached_features(
    feat: Featurizer,
    rows: Sequence[Any],
    cache_dir: PathLike,
    workers: int = 2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, np.ndarray]:
    """Extract (or reuse) features of ``rows`` under ``cache_dir/<featuriser>``; {id: array}."""
    out_dir = Path(cache_dir) / cache_subdir(feat)
    res = extract_corpus(feat, rows, out_dir, workers=workers, progress=progress)
    log(f"{feat.name}: features in {out_dir} ({res.computed} computed, {res.cached} cached"
        + (f", {len(res.skipped)} skipped" if res.skipped else "") + ")")
    return load_feature_dir(out_dir, ids=res.ids)


def without_short(train: Sequence[str], test: Sequence[str], feats: Dict[str, np.ndarray], name: str,
                  unit: str) -> Tuple[List[str], List[str], List[str]]:
    """(train ids, test ids, short ids): the split ids whose features have at least one row, and
    those with none (clips shorter than one ``unit``, e.g. ``"frame's receptive field"`` or
    ``"128-frame window"``), left out with one warning for all of them (the result counts them as
    ``short_utterances``). A split left with nothing is an error."""
    short = [u for u in list(train) + list(test) if feats[u].shape[0] == 0]
    if short:
        warn(f"{name}: {len(short)} of {len(train) + len(test)} utterance(s) are shorter than one {unit} and give "
             f"no example (e.g. {short[0]!r}); left out, counted as short_utterances")
    dropped = set(short)
    kept = [[u for u in ids if u not in dropped] for ids in (train, test)]
    for what, ids in zip(("train", "test"), kept):
        if not ids:
            raise LabelFileError(f"{name}: every {what} utterance is shorter than one {unit}: nothing to probe")
    return kept[0], kept[1], short


def majority_baseline(train_labels: np.ndarray, test_labels: np.ndarray, names: Sequence[str]) -> Dict[str, Any]:
    """The always-the-most-frequent-train-class baseline: ``{"label": name, "accuracy": test
    accuracy}`` for integer class labels ``train_labels`` / ``test_labels`` (n,) into ``names``."""
    top = int(np.bincount(train_labels, minlength=len(names)).argmax())
    return {"label": names[top], "accuracy": float((test_labels == top).mean())}


def run_details(dev_fraction: float, dev_ids: Sequence[str], fit: Any, cache: Path, t0: float) -> Dict[str, Any]:
    """The entries every probe result file ends with: the dev carving, the fit settings, the
    feature cache and the seconds since ``t0`` (``time.time()``)."""
    from cpc_speech.settings import to_dict

    return {"dev_fraction": dev_fraction, "dev_ids": list(dev_ids), "fit_config": to_dict(fit), "cache_dir": str(cache),
            "seconds": round(time.time() - t0, 3)}


def manifest_rows(manifest: Union[PathLike, Sequence[Utterance]]) -> Tuple[List[Utterance], str]:
    """(rows, name for messages) of a manifest file or of rows given directly."""
    if isinstance(manifest, (str, Path)):
        return read_manifest(manifest), str(manifest)
    return list(manifest), "<rows>"


def default_cache_dir(out: Optional[PathLike]) -> Path:
    """``<out stem>.cache`` next to the result file (``probe-cache`` in the current folder without one)."""
    if out is None:
        return Path("probe-cache")
    out = Path(out)
    return out.with_name(out.stem + ".cache")


def write_json(path: PathLike, data: Dict[str, Any]) -> Path:
    from cpc_speech.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(data, indent=2))


def warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr)
