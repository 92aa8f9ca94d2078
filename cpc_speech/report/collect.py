"""Condense a run folder's inputs (:mod:`cpc_speech.report.inputs`) into the ``report.json`` dict.

Layout of the dict: see :mod:`cpc_speech.report`. Nothing here draws or formats; the Markdown
(:mod:`cpc_speech.report.markdown`) and the plots (:mod:`cpc_speech.report.plots`) only read the
dict built here plus the raw result files kept in :class:`Collected`. The sections come from
:mod:`~cpc_speech.report.pretraining`, :mod:`~cpc_speech.report.result_sections`,
:mod:`~cpc_speech.report.evaluations` and :mod:`~cpc_speech.report.paper_table`.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from cpc_speech.report.inputs import PROBE_SECTIONS, Inputs, ReportError, read_json, shown_path, split_run_name
from cpc_speech.report.pretraining import checkpoint_config, log_series, pretraining_section, read_log
from cpc_speech.report.result_sections import finetune_section, probe_section


def data_section(manifests: Path, run_dir: Path) -> Dict[str, Any]:
    """Utterances, hours and speakers of the manifests named in ``manifests.json``."""
    from cpc_speech.corpora.manifest import read_manifest

    try:
        listed = json.loads(manifests.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{manifests}: not valid JSON ({exc})") from None
    if not isinstance(listed, dict):
        raise ReportError(f"{manifests}: expected a JSON object {{'train': path, 'valid': path}}")
    out: Dict[str, Any] = {}
    for split, where in listed.items():
        if split.endswith("_sha256"):  # content hash of the manifest a split was trained on
            continue
        if not where:
            out[split] = None
            continue
        p = Path(where)
        if not p.is_absolute() and not p.is_file():
            p = run_dir / p
        entry: Dict[str, Any] = {"manifest": str(where)}
        if listed.get(f"{split}_sha256"):
            entry["sha256"] = listed[f"{split}_sha256"]
        try:
            rows = read_manifest(p)
        except Exception as exc:  # a moved or deleted manifest: keep the path, say why
            entry["error"] = str(exc)
        else:
            entry.update({
                "utterances": len(rows),
                "hours": sum(r.duration for r in rows) / 3600.0,
                "speakers": len({r.speaker for r in rows}),
            })
        out[split] = entry
    return out


def _dist_version(module: str) -> Optional[str]:
    """A package's version without importing it (importing torch costs seconds)."""
    loaded = sys.modules.get(module)
    if loaded is not None and isinstance(getattr(loaded, "__version__", None), str):
        return loaded.__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def versions() -> Dict[str, Optional[str]]:
    """Versions of the environment writing the report."""
    from cpc_speech import __version__

    return {
        "cpc_speech": __version__,
        "torch": _dist_version("torch"),
        "numpy": _dist_version("numpy"),
        "matplotlib": _dist_version("matplotlib"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def clean(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (``report.json`` is strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------------ the report


@dataclass
class Collected:
    """The report dict plus the raw inputs the plots need."""

    report: Dict[str, Any]
    inputs: Inputs
    series: Dict[str, List[Dict[str, Any]]]
    raw: Dict[str, Dict[str, Any]]  # section -> raw result file contents (probes, finetune:<name>)


def collect(inputs: Inputs) -> Collected:
    """Read every input of ``inputs`` and build the report dict."""
    run = inputs.run_dir
    try:
        config = yaml.safe_load(inputs.config.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ReportError(f"{inputs.config}: not valid YAML ({exc})") from None
    if not isinstance(config, dict):
        raise ReportError(f"{inputs.config}: expected a mapping")
    config, config_source = checkpoint_config(run, config, inputs.config)
    events, bad = read_log(inputs.log)
    if bad:
        print(f"warning: {inputs.log}: skipped {bad} unreadable line(s)", file=sys.stderr)
    missing = dict(inputs.missing)
    report: Dict[str, Any] = {
        "format_version": 1,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(run.resolve()),
        "pretraining": pretraining_section(events, bad, config),
    }
    raw: Dict[str, Dict[str, Any]] = {}
    details: Dict[str, Any] = {}
    sources: Dict[str, Any] = {"config": config_source, "log": str(inputs.log)}
    if not report["pretraining"]["train_events"]:
        missing["pretraining"] = f"{shown_path(inputs.log, run)} holds no train events yet"
    if not report["pretraining"]["valid_events"]:
        missing["validation"] = "no validation events in log.jsonl (pretrained without --valid-manifest?)"

    for section in PROBE_SECTIONS:
        path = inputs.probes.get(section)
        if path is None:
            continue
        data = read_json(path)
        report[section], details[section] = probe_section(data, path, section)
        raw[section] = data
        sources[section] = str(path)

    from cpc_speech.report.evaluations import evaluation_sections

    ev_report, ev_details, ev_sources = evaluation_sections(inputs.evaluations)
    report.update(ev_report)
    details.update(ev_details)
    sources.update(ev_sources)

    if len(inputs.finetune) == 1:
        name, path = inputs.finetune[0]
        data = read_json(path)
        report["finetune"], det = finetune_section(data, path)
        det.update(zip(("locale", "budget"), split_run_name(name) if name else (None, None)))
        details["finetune"] = det
        raw["finetune"] = data
        sources["finetune"] = str(path)
    elif inputs.finetune:
        report["finetune_by_locale"], details["finetune_by_locale"] = {}, {}
        sources["finetune_by_locale"] = {}
        for name, path in inputs.finetune:
            data = read_json(path)
            report["finetune_by_locale"][name], det = finetune_section(data, path)
            det.update(zip(("locale", "budget"), split_run_name(name)))
            details["finetune_by_locale"][name] = det
            raw[f"finetune:{name}"] = data
            sources["finetune_by_locale"][name] = str(path)

    if inputs.label_budgets:
        from cpc_speech.report.paper_table import paper_table_section

        report["commonvoice_table"] = paper_table_section(inputs.label_budgets, report | {"details": details})
        sources["label_budgets"] = {loc: str(p) for loc, p in inputs.label_budgets.items()}

    if inputs.manifests is not None:
        report["data"] = data_section(inputs.manifests, run)
        sources["manifests"] = str(inputs.manifests)
        unread = [k for k, v in report["data"].items() if isinstance(v, dict) and "error" in v]
        if unread:
            missing["data"] = "; ".join(f"{k} manifest unreadable: {report['data'][k]['error']}" for k in unread)

    seeds: Dict[str, Any] = {"pretrain": (config.get("train") or {}).get("seed") if isinstance(config.get("train"), dict) else None}
    for section in PROBE_SECTIONS:
        if section in details:
            seeds[section] = details[section].get("seed")
    if "finetune" in details:
        seeds["finetune"] = details["finetune"].get("seed")
    if "finetune_by_locale" in details:
        seeds["finetune_by_locale"] = {n: d.get("seed") for n, d in details["finetune_by_locale"].items()}
    report.update({
        "config": config,
        "versions": versions(),
        "seeds": seeds,
        "details": details,
        "sources": sources,
        "missing": missing,
        "plots": {},
    })
    series = log_series(events)
    return Collected(clean(report), inputs, series, raw)
