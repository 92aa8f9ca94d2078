"""Frame-level phone probe: a linear classifier on frozen per-frame features.

Protocol: the TRAIN split's utterances are divided (deterministically, seeded) into *fit* (90%) and
*dev* (10%); hyper-parameters (weight decay, epochs) are chosen on dev, the probe is retrained on the
whole train split and evaluated once on the TEST split (frame accuracy). ``context_frames=N``
concatenates the N frames on each side of the current frame (still a linear probe). The same code
runs the model, the MFCC baseline (:mod:`cpc_speech.mfcc`) and the same architecture with random
weights (``random_init``), on features cached by :func:`cpc_speech.features.extract_corpus`.

Labels: an alignment file with one label per 10 ms (see :mod:`cpc_speech.corpora.labels`); a
one-frame difference between labels and features is trimmed, more is an error. Clips shorter than
the encoder's receptive field (465 samples; MFCC: 160) have no frame: they are left out before the
dev split is carved, with one warning per featuriser, and counted as ``short_utterances``; every
longer clip is used whole.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from cpc_speech.corpora.labels import FrameLabels, LabelFileError, PhoneSet, read_frame_labels
from cpc_speech.corpora.manifest import Utterance
from cpc_speech.probes.common import (
    BASELINES,
    cached_features,
    default_cache_dir,
    featurizers,
    majority_baseline,
    run_details,
    manifest_rows,
    model_path,
    stderr_log,
    warn,
    without_short,
)
from cpc_speech.probes.linear import (
    FitConfig,
    ProbeData,
    confusion_matrix,
    context_neighbors,
    per_class_accuracy,
    select_and_fit,
)
from cpc_speech.probes.splits import IdList, as_split, carve_dev, check_disjoint, known_ids, with_features
from cpc_speech.results import ProbeEntry, ProbeResult
from cpc_speech.runlock import locks_output

PathLike = Union[str, Path]


def frame_data(ids: Sequence[str], feats: Mapping[str, np.ndarray], ali: FrameLabels, context: int = 0) -> ProbeData:
    """Stack the frames of ``ids`` with their labels (one-frame differences trimmed)."""
    xs, ys, lengths = [], [], []
    for uid in ids:
        f = feats[uid]
        lab = ali.for_frames(uid, f.shape[0])
        xs.append(np.asarray(f[: lab.size], dtype=np.float32))
        ys.append(lab)
        lengths.append(lab.size)
    dim = feats[ids[0]].shape[1] if ids else 0
    X = np.concatenate(xs) if xs else np.zeros((0, dim), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    return ProbeData(X, y, context_neighbors(lengths, context))


def result_entry(outcome, test: ProbeData, names: Sequence[str], sizes: Dict[str, int], dim: int) -> ProbeEntry:
    """The record of one feature set's fitted probe; ``names``: the class names, in id order."""
    cm = confusion_matrix(test.y, outcome.predictions, len(names))
    return ProbeEntry(
        accuracy=outcome.accuracy, sizes=dict(sizes), feature_dim=dim, best=outcome.best,
        per_class_accuracy=per_class_accuracy(cm, names),
        extra={
            "per_class_count": {n: int(cm[i].sum()) for i, n in enumerate(names)},
            "confusion": cm.tolist(),
            "dev_curve": outcome.dev_curve,
            "seconds": round(outcome.seconds, 3),
        },
    )


@locks_output("out", "probe", kind="file")
def run_phone_probe(
    model: Any,
    manifest: Union[PathLike, Sequence[Utterance]],
    alignments: Union[PathLike, FrameLabels],
    train_split: Union[PathLike, IdList, Sequence[str]],
    test_split: Union[PathLike, IdList, Sequence[str]],
    phones: Optional[Union[PathLike, PhoneSet, Mapping[int, str]]] = None,
    out: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    layer: str = "context",
    baselines: Sequence[str] = BASELINES,
    context_frames: int = 0,
    dev_fraction: float = 0.1,
    seed: int = 0,
    fit: Optional[FitConfig] = None,
    device=None,
    workers: int = 2,
    progress: bool = True,
    skip_missing: bool = False,
    refit: bool = False,
    log: Callable[[str], None] = stderr_log,
) -> Dict[str, Any]:
    """Run the phone probe for the model and the baselines; returns (and writes to ``out``) the
    result dict (layout in :mod:`cpc_speech.probes`)."""
    t0 = time.time()
    fit = fit or FitConfig(seed=seed)
    if context_frames < 0:
        raise ValueError("context_frames must be >= 0")
    rows, manifest_name = manifest_rows(manifest)
    by_id = {r.id: r for r in rows}
    ali = alignments if isinstance(alignments, FrameLabels) else read_frame_labels(alignments)
    train = as_split(train_split, "train split")
    test = as_split(test_split, "test split")
    check_disjoint(train, test)
    train_ids = known_ids(train, by_id.keys(), manifest_name, ali, skip_missing, warn)
    test_ids = known_ids(test, by_id.keys(), manifest_name, ali, skip_missing, warn)

    phone_set = None
    if phones is not None:
        if isinstance(phones, PhoneSet):
            phone_set = phones
        elif isinstance(phones, Mapping):
            phone_set = PhoneSet.from_mapping(phones)
        else:
            phone_set = PhoneSet.read(phones)
    used = train_ids + test_ids
    n_classes = max(int(ali.labels[u].max()) for u in used) + 1
    if phone_set is not None:
        unknown = sorted({int(v) for u in used for v in np.unique(ali.labels[u])} - set(phone_set.ids))
        if unknown:
            u = next(u for u in used if np.isin(ali.labels[u], unknown).any())
            raise LabelFileError(f"{ali.where(u)}: label(s) {unknown[:10]} are not in the phone inventory {phone_set.source}")
        n_classes = max(n_classes, phone_set.ids[-1] + 1)
    names = phone_set.names_for(n_classes) if phone_set is not None else [str(i) for i in range(n_classes)]

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out)
    feats_list = featurizers(model, layer, baselines, device=device, seed=seed)
    needed = [by_id[u] for u in dict.fromkeys(used)]
    results: Dict[str, ProbeEntry] = {}
    majority = None
    dev_ids_first: List[str] = []
    for feat in feats_list:
        feats = cached_features(feat, needed, cache, workers=workers, progress=progress, log=log)
        tr = with_features(train_ids, feats, train, feat.name, skip_missing, warn)
        te = with_features(test_ids, feats, test, feat.name, skip_missing, warn)
        tr, te, short = without_short(tr, te, feats, feat.name, "frame's receptive field")
        fit_ids, dev_ids = carve_dev(tr, dev_fraction, seed)
        if not dev_ids:
            raise LabelFileError(f"{train.path}: the train split needs at least 2 utterances to carve a dev split from it")
        fit_d = frame_data(fit_ids, feats, ali, context_frames)
        dev_d = frame_data(dev_ids, feats, ali, context_frames)
        test_d = frame_data(te, feats, ali, context_frames)
        log(f"{feat.name}: fitting the phone probe on {len(fit_d)} frames ({len(fit_ids)} utterances), "
            f"dev {len(dev_d)}, test {len(test_d)}")
        outcome = select_and_fit(fit_d, dev_d, test_d, n_classes, fit, refit=refit)
        sizes = {
            "train_utterances": len(tr), "train_frames": len(fit_d) + len(dev_d),
            "fit_utterances": len(fit_ids), "fit_frames": len(fit_d),
            "dev_utterances": len(dev_ids), "dev_frames": len(dev_d),
            "test_utterances": len(te), "test_frames": len(test_d),
            "short_utterances": len(short),
        }
        results[feat.name] = result_entry(outcome, test_d, names, sizes, int(fit_d.X.shape[1]))
        log(f"{feat.name}: test frame accuracy {outcome.accuracy:.4f} (best {outcome.best})")
        if not dev_ids_first:
            dev_ids_first = list(dev_ids)
        if majority is None:
            majority = majority_baseline(np.concatenate([fit_d.y, dev_d.y]), test_d.y, names)
    model_feat = feats_list[0]
    record = ProbeResult(
        task="phone",
        protocol="frame" if context_frames == 0 else f"frame+-{context_frames}",
        layer=layer,
        results=results,
        labels=names,
        majority=majority,
        model_path=model_path(model_feat, model),
        seed=seed,
        extra={
            "context_frames": context_frames,
            "manifest": manifest_name,
            "alignments": str(ali.path),
            "train_split": str(train.path),
            "test_split": str(test.path),
            **run_details(dev_fraction, dev_ids_first, fit, cache, t0),
        },
    )
    if out is not None:
        record.write(out)
    return record.to_dict()
