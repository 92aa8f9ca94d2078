"""Find and read a run folder's inputs and condense them into the ``report.json`` dict.

Layout of the dict: see :mod:`cpc_speech.report`. Nothing here draws or formats; the Markdown
(:mod:`cpc_speech.report.markdown`) and the plots (:mod:`cpc_speech.report.plots`) only read the
dict built here plus the raw result files kept in :class:`Inputs`.
"""

from __future__ import annotations

import datetime
import json
import math
import platform
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from cpc_speech.audio import missing_file
from cpc_speech.results import (
    ConditionResult,
    FinetuneResult,
    ProbeResult,
    ResultError,
    finite,
    read_result_json,
)
from cpc_speech.types import PathLike


PROBE_SECTIONS = ("phone_probe", "speaker_probe", "speaker_probe_window")
PROBE_TASK = {"phone_probe": "phone", "speaker_probe": "speaker", "speaker_probe_window": "speaker"}
BEST_KEYS = ("weight_decay", "epochs", "dev_accuracy", "optimizer")
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?)(h|min|m|s)$|^allh?$", re.IGNORECASE)


class ReportError(ValueError):
    """A run folder or result file that cannot be reported on; the message names the file."""


# ------------------------------------------------------------------------------------ inputs


@dataclass
class Inputs:
    """The files of one report. ``None``: absent (its section is omitted; ``missing`` says why)."""

    run_dir: Path
    config: Path
    log: Path
    manifests: Optional[Path]
    results_dir: Path
    probes: Dict[str, Optional[Path]]  # section -> file
    finetune: List[Tuple[str, Path]]  # (name, file); name "" for a single results/finetune.json
    missing: Dict[str, str] = field(default_factory=dict)
    evaluations: Dict[str, Any] = field(default_factory=dict)  # ABX and unit files (report/evaluations.py)
    label_budgets: Dict[str, Path] = field(default_factory=dict)  # locale -> plan (report/paper_table.py)


def _existing(path: Optional[PathLike], what: str) -> Optional[Path]:
    """An explicitly given file: it must exist."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what}: " + missing_file("file", p))
    return p


def finetune_name(path: Path) -> str:
    """``finetune.json`` -> ``""``; ``finetune_fr_1h.json`` -> ``"fr_1h"``; any other stem as is."""
    stem = path.stem
    if stem == "finetune":
        return ""
    return stem[len("finetune_"):] if stem.startswith("finetune_") and len(stem) > len("finetune_") else stem


def split_run_name(name: str) -> Tuple[Optional[str], Optional[str]]:
    """``"fr_1h"`` -> ("fr", "1h"); ``"zh-CN_0.5h"`` -> ("zh-CN", "0.5h"); ``"fr"`` -> ("fr", None);
    ``"10min"`` -> (None, "10min"). The budget is the last ``_``-separated part that looks like one."""
    parts = [p for p in name.split("_") if p]
    budget = next((p for p in reversed(parts) if _BUDGET.match(p)), None)
    rest = [p for p in parts if p != budget]
    return ("_".join(rest) or None), budget


def _budget_hours(budget: Optional[str]) -> float:
    if not budget:
        return math.inf
    m = _BUDGET.match(budget)
    if not m or not m.group(1):
        return math.inf
    value = float(m.group(1))
    return value * {"h": 1.0, "min": 1 / 60, "m": 1 / 60, "s": 1 / 3600}[m.group(2).lower()]


def _run_sort_key(name: str):
    locale, budget = split_run_name(name)
    return (locale or "", _budget_hours(budget), name)


def find_inputs(
    run_dir: PathLike,
    results: Optional[PathLike] = None,
    phone_probe: Optional[PathLike] = None,
    speaker_probe: Optional[PathLike] = None,
    speaker_probe_window: Optional[PathLike] = None,
    finetune: Optional[Sequence[PathLike]] = None,
) -> Inputs:
    """Locate the inputs of ``run_dir``. Result files default to ``<results>/phone_probe.json``,
    ``speaker_probe.json``, ``speaker_probe_window.json``, ``finetune.json`` and
    ``finetune_*.json`` with ``results`` = ``RUN_DIR/results``; explicit files must exist."""
    run = Path(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"run folder not found: {run}")
    if not run.is_dir():
        raise ReportError(f"{run} is not a folder (give the pretraining run folder, the --output-dir of cpc-speech pretrain)")
    for name in ("config.yaml", "log.jsonl"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: no {name}: not a pretraining run folder (or the run has not started logging yet)")
    if results is not None:
        res_dir = Path(results)
        if not res_dir.is_dir():
            raise FileNotFoundError(f"--results: folder not found: {res_dir}")
    else:
        res_dir = run / "results"
    missing: Dict[str, str] = {}
    manifests = run / "manifests.json"
    if not manifests.is_file():
        manifests = None
        missing["data"] = f"no manifests.json in {run}"

    given = {"phone_probe": phone_probe, "speaker_probe": speaker_probe, "speaker_probe_window": speaker_probe_window}
    probes: Dict[str, Optional[Path]] = {}
    for section, path in given.items():
        flag = "--" + section.replace("_", "-")
        if path is not None:
            probes[section] = _existing(path, flag)
            continue
        default = res_dir / f"{section}.json"
        probes[section] = default if default.is_file() else None
        if probes[section] is None:
            missing[section] = f"no {_show(default, run)} (or {flag} FILE)"

    ft: List[Tuple[str, Path]] = []
    if finetune:
        for p in finetune:
            path = _existing(p, "--finetune")
            ft.append((finetune_name(path), path))
    else:
        files = sorted(res_dir.glob("finetune_*.json")) + ([res_dir / "finetune.json"] if (res_dir / "finetune.json").is_file() else [])
        ft = [(finetune_name(p), p) for p in files if p.is_file() and not p.name.startswith(".")]
    names = [n for n, _ in ft]
    if len(ft) > 1:
        # several runs: every run needs a distinct, non-empty name
        ft = [(n or "default", p) for n, p in ft]
        names = [n for n, _ in ft]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ReportError(f"several fine-tuning result files map to the same name {dup[0]!r}: "
                              + ", ".join(str(p) for n, p in ft if n == dup[0]))
        ft.sort(key=lambda item: _run_sort_key(item[0]))
    if not ft:
        missing["finetune"] = f"no {_show(res_dir / 'finetune.json', run)} or finetune_*.json (or --finetune FILE)"
    from cpc_speech.report.evaluations import find_evaluation_files
    from cpc_speech.report.paper_table import find_plans

    return Inputs(run, run / "config.yaml", run / "log.jsonl", manifests, res_dir, probes, ft, missing,
                  find_evaluation_files(res_dir), find_plans(res_dir))


def _show(path: Path, run: Path) -> str:
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)


def read_json(path: Path) -> Dict[str, Any]:
    """A result file as a dict; a clear error naming the file otherwise."""
    try:
        return read_result_json(path)
    except ResultError as exc:
        raise ReportError(str(exc)) from None


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
        "classes": len(result.labels),
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
        item = {k: getattr(rec, k) for k in ConditionResult.NUMBERS + ConditionResult.OTHERS}
        item["curve"] = [{k: (finite(r.get(k)) if k != "epoch" else r.get(k)) for k in ConditionResult.CURVE_KEYS if k in r}
                         for r in rec.curve]
        out[name] = item
    cfg, ddata = result.config, result.data

    def split_info(key):
        s = ddata.get(key)
        if not isinstance(s, dict):
            return None
        return {k: s[k] for k in ("used", "hours", "phones", "speakers", "pool_utterances") if k in s}

    details = {
        "file": str(path),
        "phones": len(result.phones) if result.phones is not None else None,
        "hours_limit": cfg.get("hours"),
        "head": cfg.get("head"),
        "head_layers": cfg.get("head_layers"),
        "decode": cfg.get("decode"),
        "lm_order": cfg.get("lm_order"),
        "features": cfg.get("features"),
        "seed": cfg.get("seed"),
        "model": cfg.get("model"),
        "data": {k: split_info(k) for k in ("train", "dev", "test")},
        "seconds": result.seconds,
    }
    return out, details


def read_log(path: Path) -> Tuple[List[Dict[str, Any]], int]:
    """(events in file order, number of unreadable lines). A killed run can leave a torn last line."""
    events, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(ev, dict):
                events.append(ev)
            else:
                bad += 1
    return events, bad


def _series(events: Sequence[Dict[str, Any]], split: str) -> List[Dict[str, Any]]:
    """Events of one split, one per step (the last logged wins: a resumed run re-logs the steps
    after its checkpoint), sorted by step."""
    by_step: Dict[int, Dict[str, Any]] = {}
    for ev in events:
        if ev.get("split") == split and isinstance(ev.get("step"), int):
            by_step[ev["step"]] = ev
    return [by_step[s] for s in sorted(by_step)]


def log_series(events: Sequence[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    return {"train": _series(events, "train"), "valid": _series(events, "valid")}


def _acc_list(ev: Optional[Dict[str, Any]]) -> Optional[List[Optional[float]]]:
    if not ev or not isinstance(ev.get("accuracy"), list):
        return None
    return [finite(a) for a in ev["accuracy"]]


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _precisions(events: Sequence[Dict[str, Any]]) -> Optional[str]:
    """The precision(s) training ran in, in order of use, e.g. ``bf16`` or ``fp32, bf16`` (None for
    runs logged before the precision was recorded)."""
    seen: List[str] = []
    for e in events:
        name = e.get("precision") if e.get("split") == "info" else None
        if isinstance(name, str) and name not in seen:
            seen.append(name)
    return ", ".join(seen) if seen else None


def pretraining_section(events: Sequence[Dict[str, Any]], bad_lines: int, config: Dict[str, Any]) -> Dict[str, Any]:
    """Steps, losses, final per-step accuracy, throughput and wall time from ``log.jsonl`` events."""
    series = log_series(events)
    train, valid = series["train"], series["valid"]
    info = next((e for e in events if e.get("split") == "info"), {})
    max_steps = (config.get("train") or {}).get("max_steps") if isinstance(config.get("train"), dict) else None
    steps = max([e["step"] for e in train + valid], default=0)

    def best(seq):
        pts = [(e["step"], finite(e.get("loss"))) for e in seq]
        pts = [p for p in pts if p[1] is not None]
        return min(pts, key=lambda p: (p[1], p[0])) if pts else (None, None)

    best_train_step, best_train = best(train)
    best_valid_step, best_valid = best(valid)
    last_train = train[-1] if train else None
    last_valid = valid[-1] if valid else None
    final_src, final_ev = ("valid", last_valid) if last_valid and _acc_list(last_valid) else ("train", last_train)
    # throughput: every logged interval (in file order, also those a resumption re-logged) except the
    # first one of each (re)start, which includes start-up (data loading, first batches)
    speeds, steady, prev = [], [], None
    for e in events:
        if e.get("split") != "train" or not isinstance(e.get("step"), int):
            continue
        s = finite(e.get("audio_seconds_per_second"))
        starts = prev is None or e["step"] <= prev
        prev = e["step"]
        if s is None:
            continue
        speeds.append(s)
        if not starts:
            steady.append(s)
    steady = steady or speeds
    times = [finite(e.get("time")) for e in events]
    times = [t for t in times if t is not None]
    train_steps_in_order = [e["step"] for e in events if e.get("split") == "train" and isinstance(e.get("step"), int)]
    resumed = any(b <= a for a, b in zip(train_steps_in_order, train_steps_in_order[1:]))
    final_acc = _acc_list(final_ev)
    return {
        "steps": steps,
        "max_steps": max_steps,
        "finished": bool(max_steps is not None and steps >= max_steps),
        "train_events": len(train),
        "valid_events": len(valid),
        "final_train_loss": finite(last_train.get("loss")) if last_train else None,
        "final_train_step": last_train["step"] if last_train else None,
        "best_train_loss": best_train,
        "best_train_step": best_train_step,
        "final_valid_loss": finite(last_valid.get("loss")) if last_valid else None,
        "final_valid_step": last_valid["step"] if last_valid else None,
        "best_valid_loss": best_valid,
        "best_valid_step": best_valid_step,
        "final_train_accuracy": _acc_list(last_train),
        "final_valid_accuracy": _acc_list(last_valid),
        "final_train_accuracy_mean": _mean(_acc_list(last_train) or []),
        "final_valid_accuracy_mean": _mean(_acc_list(last_valid) or []),
        "final_accuracy": None if final_acc is None else {
            "split": final_src, "step": final_ev["step"], "per_step": final_acc, "mean": _mean(final_acc),
        },
        "final_lr": finite(last_train.get("lr")) if last_train else None,
        "audio_seconds_per_second": statistics.median(steady) if steady else None,
        "audio_seconds_per_second_last": speeds[-1] if speeds else None,
        "wall_time_seconds": (max(times) - min(times)) if len(times) > 1 else None,
        "resumed": resumed,
        "parameters": info.get("parameters"),
        "device": info.get("device"),
        "precision": _precisions(events),
        "world_size": info.get("world_size"),
        "train_utterances": info.get("train_utterances"),
        "batches_per_epoch": info.get("batches_per_epoch"),
        "skipped_log_lines": bad_lines,
    }


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


def _flat(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def checkpoint_config(run: Path, config: Dict[str, Any], config_path: Path) -> Tuple[Dict[str, Any], str]:
    """The config the run's newest checkpoint was trained with (``checkpoints/last.pt``, else
    ``best.pt``), which the report trusts over an edited ``config.yaml`` (with a warning naming the
    keys that differ); ``config.yaml`` when there is no readable checkpoint. Returns (config, source)."""
    from cpc_speech.engine.checkpoint import CheckpointError, read_checkpoint

    for name in ("last.pt", "best.pt"):
        ckpt = run / "checkpoints" / name
        if not ckpt.is_file():
            continue
        try:
            saved = read_checkpoint(ckpt).get("config")
        except CheckpointError as exc:
            print(f"warning: {exc}; the report uses {config_path}", file=sys.stderr)
            return config, str(config_path)
        if not isinstance(saved, dict):
            break
        a, b = _flat(saved), _flat(config)
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not (isinstance(a.get(k), list) and tuple(a[k]) == tuple(b.get(k) or ())))
        if differ:
            shown = ", ".join(differ[:5]) + (f" and {len(differ) - 5} more" if len(differ) > 5 else "")
            print(f"warning: {config_path} differs from the config saved in {ckpt} ({shown}); "
                  f"the report uses the checkpoint's", file=sys.stderr)
        return saved, str(ckpt)
    return config, str(config_path)


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
        missing["pretraining"] = f"{_show(inputs.log, run)} holds no train events yet"
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

    ev_report, ev_details, ev_sources = evaluation_sections(inputs.evaluations, read_json, ReportError)
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

        report["commonvoice_table"] = paper_table_section(inputs.label_budgets, report | {"details": details}, read_json, ReportError)
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
