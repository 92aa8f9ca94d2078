"""Speaker probe: a linear classifier over speakers on frozen features, held-out utterances of the
same speakers.

Protocols:

* ``utterance`` (default): one example per utterance, the mean of its per-frame features (c_t, or
  z_t with ``layer="encoder"``; the MFCC baseline uses the mean of its 39-dim frames).
* ``window`` (CPC paper, for comparability): every utterance is cut into non-overlapping windows of
  ``window_frames`` frames (128 = 1.28 s = 20480 samples); each window is run through the model on
  its own and classified from its last c_t (the mean over the window for the encoder layer and for
  MFCC). Windows of one utterance always stay in the same split.

Utterances that give no example (shorter than one window; in the utterance protocol, shorter than
the encoder's receptive field, 465 samples) are left out before the dev split is carved, with one
warning per featuriser, and counted in each result entry as ``short_utterances``.

Splits: the given train/test split files (test utterances of speakers absent from train are dropped
with a warning and counted), or a deterministic per-speaker hold-out of ``holdout_fraction`` of each
speaker's utterances. The dev split for model selection is carved per speaker from the train split
(never from test), as in :mod:`cpc_speech.probes.phone`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.corpora.labels import LabelFileError
from cpc_speech.corpora.manifest import Utterance
from cpc_speech.probes.common import (BASELINES, cached_features, default_cache_dir, featurizers, majority_baseline,
                                      manifest_rows, model_path, run_details, stderr_log, warn, without_short)
from cpc_speech.probes.linear import FitConfig, ProbeData, select_and_fit
from cpc_speech.probes.phone import result_entry
from cpc_speech.probes.splits import IdList, as_split, carve_dev, check_disjoint, holdout_per_group, known_ids, with_features
from cpc_speech.results import ProbeEntry, ProbeResult
from cpc_speech.runlock import locks_output

PathLike = Union[str, Path]
PROTOCOLS = ("utterance", "window")


def speaker_fit_config(seed: int = 0) -> FitConfig:
    """Defaults for the (small) utterance/window-level problem: full-batch L-BFGS, stronger weight
    decay grid (few examples per class); with ``--optimizer adam``: batches of 32, 40 epochs."""
    return FitConfig(optimizer="lbfgs", batch_size=32, lr_decay=0.9, max_epochs=10, weight_decays=(1e-4, 1e-3, 1e-2), seed=seed)


def _examples(ids: Sequence[str], feats: Mapping[str, np.ndarray], protocol: str, cls: Mapping[str, int],
              speaker: Mapping[str, str]) -> Tuple[ProbeData, int]:
    """(data, frames covered)."""
    xs, ys, frames = [], [], 0
    for uid in ids:
        f = np.asarray(feats[uid], dtype=np.float32)
        if protocol == "utterance":
            if f.shape[0] == 0:
                continue
            xs.append(f.mean(axis=0, keepdims=True))
            frames += f.shape[0]
        else:
            xs.append(f)
            frames += 0  # filled by the caller (windows x window_frames)
        ys.append(np.full(xs[-1].shape[0], cls[speaker[uid]], dtype=np.int64))
    dim = next(iter(feats.values())).shape[1] if feats else 0
    X = np.concatenate(xs) if xs else np.zeros((0, dim), np.float32)
    y = np.concatenate(ys) if ys else np.zeros(0, np.int64)
    return ProbeData(X, y), frames


@locks_output("out", "probe", kind="file")
def run_speaker_probe(
    model: Any,
    manifest: Union[PathLike, Sequence[Utterance]],
    train_split: Optional[Union[PathLike, IdList, Sequence[str]]] = None,
    test_split: Optional[Union[PathLike, IdList, Sequence[str]]] = None,
    out: Optional[PathLike] = None,
    cache_dir: Optional[PathLike] = None,
    layer: str = "context",
    protocol: str = "utterance",
    window_frames: int = 128,
    holdout_fraction: float = 0.2,
    baselines: Sequence[str] = BASELINES,
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
    """Run the speaker probe for the model and the baselines; returns (and writes to ``out``) the
    result dict (layout in :mod:`cpc_speech.probes`)."""
    t0 = time.time()
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if window_frames < 4:
        raise ValueError("window_frames must be at least 4")
    fit = fit or speaker_fit_config(seed)
    rows, manifest_name = manifest_rows(manifest)
    by_id = {r.id: r for r in rows}
    speaker = {r.id: r.speaker for r in rows}

    if (train_split is None) != (test_split is None):
        raise ValueError("give both a train and a test split, or neither (per-speaker hold-out)")
    if train_split is not None:
        train = as_split(train_split, "train split")
        test = as_split(test_split, "test split")
        check_disjoint(train, test)
        train_ids = known_ids(train, by_id.keys(), manifest_name, None, skip_missing, warn)
        test_ids = known_ids(test, by_id.keys(), manifest_name, None, skip_missing, warn)
        split_desc = {"train_split": str(train.path), "test_split": str(test.path)}
    else:
        all_ids = [r.id for r in rows]
        train_ids, test_ids = holdout_per_group(all_ids, speaker, holdout_fraction, seed)
        if not test_ids:
            raise LabelFileError(f"{manifest_name}: no speaker has 2 or more utterances: cannot hold out test utterances")
        train = IdList.from_ids(train_ids, "per-speaker hold-out: train")
        test = IdList.from_ids(test_ids, "per-speaker hold-out: test")
        split_desc = {"split": f"per-speaker hold-out of {holdout_fraction:g} (seed {seed})"}

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(out)
    mode = "frames" if protocol == "utterance" else f"windows:{window_frames * 160}"
    feats_list = featurizers(model, layer, baselines, mode=mode, device=device, seed=seed)
    needed = [by_id[u] for u in dict.fromkeys(train_ids + test_ids)]
    results: Dict[str, ProbeEntry] = {}
    names: List[str] = []
    dropped_unseen = 0
    majority = None
    dev_ids_first: List[str] = []
    for feat in feats_list:
        feats = cached_features(feat, needed, cache, workers=workers, progress=progress, log=log)
        tr = with_features(train_ids, feats, train, feat.name, skip_missing, warn)
        te = with_features(test_ids, feats, test, feat.name, skip_missing, warn)
        unit = f"{window_frames}-frame window" if protocol == "window" else "frame's receptive field"
        tr, te, short = without_short(tr, te, feats, feat.name, unit)
        train_speakers = sorted({speaker[u] for u in tr})
        cls = {s: i for i, s in enumerate(train_speakers)}
        unseen = [u for u in te if speaker[u] not in cls]
        if unseen:
            warn(f"{test.path}: dropping {len(unseen)} test utterance(s) of speakers with no train utterance "
                 f"(e.g. {unseen[0]!r}, speaker {speaker[unseen[0]]!r})")
            te = [u for u in te if speaker[u] in cls]
            if not te:
                raise LabelFileError(f"{test.path}: no test utterance has a speaker seen in training")
        dropped_unseen = len(unseen)
        names = train_speakers
        fit_ids, dev_ids = carve_dev(tr, dev_fraction, seed, groups=speaker)
        if not dev_ids:
            raise LabelFileError(f"{train.path}: no speaker has 2 or more train utterances: cannot carve a dev split")
        fit_d, fit_fr = _examples(fit_ids, feats, protocol, cls, speaker)
        dev_d, dev_fr = _examples(dev_ids, feats, protocol, cls, speaker)
        test_d, test_fr = _examples(te, feats, protocol, cls, speaker)
        if protocol == "window":
            fit_fr, dev_fr, test_fr = (len(d) * window_frames for d in (fit_d, dev_d, test_d))
        for what, d in (("train (fit)", fit_d), ("dev", dev_d), ("test", test_d)):
            if len(d) == 0:
                raise LabelFileError(f"the {what} split has no {protocol} examples"
                                 + (f" (utterances shorter than {window_frames} frames have no window)" if protocol == "window" else ""))
        log(f"{feat.name}: fitting the speaker probe ({protocol}) on {len(fit_d)} examples of {len(cls)} speakers, "
            f"dev {len(dev_d)}, test {len(test_d)}")
        outcome = select_and_fit(fit_d, dev_d, test_d, len(cls), fit, refit=refit)
        sizes = {
            "train_utterances": len(tr), "train_frames": fit_fr + dev_fr, "train_examples": len(fit_d) + len(dev_d),
            "fit_utterances": len(fit_ids), "fit_frames": fit_fr, "fit_examples": len(fit_d),
            "dev_utterances": len(dev_ids), "dev_frames": dev_fr, "dev_examples": len(dev_d),
            "test_utterances": len(te), "test_frames": test_fr, "test_examples": len(test_d),
            "short_utterances": len(short),
            "speakers": len(cls),
        }
        results[feat.name] = result_entry(outcome, test_d, names, sizes, int(fit_d.X.shape[1]))
        log(f"{feat.name}: test speaker accuracy {outcome.accuracy:.4f} (best {outcome.best})")
        if not dev_ids_first:
            dev_ids_first = list(dev_ids)
        if majority is None:
            majority = majority_baseline(np.concatenate([fit_d.y, dev_d.y]), test_d.y, names)
    record = ProbeResult(
        task="speaker",
        protocol=protocol,
        layer=layer,
        results=results,
        labels=names,
        majority=majority,
        model_path=model_path(feats_list[0], model),
        seed=seed,
        extra={
            "window_frames": window_frames if protocol == "window" else None,
            "test_dropped_unseen_speakers": dropped_unseen,
            "manifest": manifest_name,
            **split_desc,
            **run_details(dev_fraction, dev_ids_first, fit, cache, t0),
        },
    )
    if out is not None:
        record.write(out)
    return record.to_dict()
