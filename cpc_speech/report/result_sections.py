"""The report's probe and fine-tuning sections, read through the result records of
:mod:`cpc_speech.results` (:class:`~cpc_speech.results.ProbeResult`,
:class:`~cpc_speech.results.FinetuneResult`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

from cpc_speech.report.inputs import ReportError
from cpc_speech.results import BEST_KEYS, SPLITS, ConditionResult, FinetuneResult, ProbeResult, ResultError, finite

PROBE_TASK = {"phone_probe": "phone", "speaker_probe": "speaker", "speaker_probe_window": "speaker"}


def probe_section(data: Dict[str, Any], path: Path, section: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(section dict name -> entry, details) of a probe result file (:class:`cpc_speech.results.ProbeResult`)."""
    want = PROBE_TASK[section]
    try:
        result = ProbeResult.from_dict(data, str(path), task=want)
    except ResultError as exc:
        raise ReportError(f"{exc}{' for ' + section if 'expected a' in str(exc) else ''}") from None
    out: Dict[str, Any] = {}
    for name, entry in result.results.items():
        item: Dict[str, Any] = {"accuracy": entry.accuracy, **entry.sizes}
        if entry.feature_dim is not None:
            item["feature_dim"] = entry.feature_dim
        if entry.best is not None:
            item["best"] = {k: entry.best[k] for k in BEST_KEYS if k in entry.best}
        if want == "phone" and entry.per_class_accuracy is not None:
            item["per_class_accuracy"] = entry.per_class_accuracy
        out[name] = item
    details = {
        "file": str(path),
        "task": result.task,
        "protocol": result.protocol,
        "layer": result.layer,
        "classes": len(result.labels) if result.labels is not None else None,
        "majority": result.majority,
        "model_path": result.model_path,
        "seed": result.seed,
    }
    if section != "phone_probe":
        details["window_frames"] = result.extra.get("window_frames")
        details["test_dropped_unseen_speakers"] = result.extra.get("test_dropped_unseen_speakers")
    return out, details


def finetune_section(data: Dict[str, Any], path: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(condition -> summary, details) of a ``cpc-speech finetune`` result file (:class:`cpc_speech.results.FinetuneResult`)."""
    try:
        result = FinetuneResult.from_dict(data, str(path))
    except ResultError as exc:
        raise ReportError(str(exc)) from None
    out: Dict[str, Any] = {}
    for name, rec in result.conditions.items():
        item = {k: finite(getattr(rec, k)) for k in ConditionResult.NUMBERS}
        item.update({k: getattr(rec, k) for k in ConditionResult.OTHERS})
        item["curve"] = [{k: (finite(r.get(k)) if k != "epoch" else r.get(k)) for k in ConditionResult.CURVE_KEYS if k in r}
                         for r in rec.curve or []]
        out[name] = item
    cfg, ddata = result.config or {}, result.data or {}
    too_short = result.skipped_too_short()

    def split_info(key):
        s = ddata.get(key)
        if not isinstance(s, dict):
            return None
        info = {k: s[k] for k in ("used", "hours", "phones", "speakers", "pool_utterances") if k in s}
        if too_short[key] is not None:
            info["too_short_for_ctc"] = too_short[key]
        return info

    details = {
        "file": str(path),
        "phones": len(result.phones) if result.phones is not None else None,
        "hours_limit": cfg.get("hours"),
        "head": cfg.get("head"),
        "head_layers": cfg.get("head_layers"),
        "head_residual": cfg.get("head_residual"),
        "decode": cfg.get("decode"),
        "lm_order": cfg.get("lm_order"),
        "features": cfg.get("features"),
        "seed": cfg.get("seed"),
        "model": cfg.get("model"),
        "data": {k: split_info(k) for k in SPLITS},
        "seconds": result.seconds,
    }
    return out, details
