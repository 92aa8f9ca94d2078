"""Where a report's inputs are: the run folder's files and the result files found in (or given
instead of) ``RUN_DIR/results``, with the reason each absent section is left out."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cpc_speech.audio import missing_file
from cpc_speech.results import ResultError, read_result_json
from cpc_speech.types import PathLike

PROBE_SECTIONS = ("phone_probe", "speaker_probe", "speaker_probe_window")  # also their file stems
_BUDGET = re.compile(r"^(\d+(?:\.\d+)?)(h|min|m|s)$|^allh?$", re.IGNORECASE)


class ReportError(ValueError):
    """A run folder or result file that cannot be reported on; the message names the file."""


def read_json(path: Path) -> Dict[str, Any]:
    """A result file as a dict; a :class:`ReportError` naming the file otherwise."""
    try:
        return read_result_json(path)
    except ResultError as exc:
        raise ReportError(str(exc)) from None


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


def budget_hours(budget: Optional[str]) -> float:
    if not budget:
        return math.inf
    m = _BUDGET.match(budget)
    if not m or not m.group(1):
        return math.inf
    value = float(m.group(1))
    return value * {"h": 1.0, "min": 1 / 60, "m": 1 / 60, "s": 1 / 3600}[m.group(2).lower()]


def _run_sort_key(name: str):
    locale, budget = split_run_name(name)
    return (locale or "", budget_hours(budget), name)


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
            missing[section] = f"no {shown_path(default, run)} (or {flag} FILE)"

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
        missing["finetune"] = f"no {shown_path(res_dir / 'finetune.json', run)} or finetune_*.json (or --finetune FILE)"
    from cpc_speech.report.evaluations import find_evaluation_files
    from cpc_speech.report.paper_table import find_plans

    return Inputs(run, run / "config.yaml", run / "log.jsonl", manifests, res_dir, probes, ft, missing,
                  find_evaluation_files(res_dir), find_plans(res_dir))


def shown_path(path: Path, run: Path) -> str:
    try:
        return str(path.relative_to(run))
    except ValueError:
        return str(path)
