"""The Common Voice table of Riviere et al. (2020), "Unsupervised pretraining transfers well across
languages": test PER per locale for 1 h of labels on frozen features, and 5 h frozen, fine-tuned and
trained from scratch (+ MFCC at 5 h, not in the paper), with an average row and the paper's
published averages as a reference row.

Inputs: the label-budget plans ``results/label_budgets_<locale>.json`` (written by the Common Voice
recipe's ``recipes/utils/label_budgets.py``; which budgets were drawn and which were refused because
the locale's train split holds less audio) and the fine-tuning results ``results/finetune_<locale>_<H>h.json``
already in the report. The smaller of a plan's two budgets is the paper's "1 h" column, the larger
its "5 h" columns; every plan must have the same two budgets.

``report.json`` gains (when at least one plan exists)::

    "commonvoice_table": {
      "budgets": {"small": 1.0, "large": 5.0},                     # hours
      "columns": [{"key": "small_frozen", "budget": "small", "condition": "frozen",
                   "title": "1 h frozen", "paper": true}, ...],    # 4 paper columns + large_mfcc
      "rows": {"<locale>": {"available_hours": 3.2,                # the train pool of the plan
                            "cells": {"<key>": {"per_test": fraction or null,
                                                "status": "measured" | "refused" | "missing",
                                                "note": "not enough labelled audio: 3.200 h available"
                                                        | "no results/finetune_fr_5h.json" | ...}}}},
      "average": {"<key>": fraction or null},                      # over "average_over" only
      "average_over": ["es", "fr"],                                # locales with every paper cell
      "left_out": {"<locale>": "why"},                             # not in the average
      "published": {"<key>": fraction or null, "source": "...", "languages": [...], "budgets": {...}},
      "comparable": true                                           # this run's budgets are 1 h / 5 h
    }
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cpc_speech.report.inputs import ReportError, read_json
from cpc_speech.report.markdown import pct

KIND = "cpc_speech.label_budgets"
FORMAT_VERSION = 1
# (key, budget, condition, title suffix, in the paper)
COLUMNS = (
    ("small_frozen", "small", "frozen", "frozen", True),
    ("large_frozen", "large", "frozen", "frozen", True),
    ("large_unfrozen", "large", "unfrozen", "fine-tuned", True),
    ("large_scratch", "large", "scratch", "from scratch", True),
    ("large_mfcc", "large", "mfcc", "MFCC", False),
)
PUBLISHED = {
    "small_frozen": 0.439, "large_frozen": 0.388, "large_unfrozen": 0.310, "large_scratch": 0.383, "large_mfcc": None,
    "source": "Riviere et al. (2020), Unsupervised pretraining transfers well across languages",
    "languages": ["es", "fr", "it", "ru", "tt"],
    "budgets": {"small": 1.0, "large": 5.0},
}


def find_plans(res_dir: Path) -> Dict[str, Path]:
    """{locale: plan file} of ``res_dir/label_budgets_<locale>.json``."""
    prefix = "label_budgets_"
    return {p.stem[len(prefix):]: p for p in sorted(res_dir.glob(f"{prefix}*.json")) if len(p.stem) > len(prefix)}


def _plan_budgets(plan: Dict[str, Any], path: Path) -> Dict[float, Dict[str, Any]]:
    if plan.get("kind") != KIND or plan.get("format_version") != FORMAT_VERSION:
        raise ReportError(f"{path}: not a label-budget plan of format {FORMAT_VERSION} (kind {KIND!r}; written by recipes/utils/label_budgets.py?)")
    entries = plan.get("budgets")
    out: Dict[float, Dict[str, Any]] = {}
    for e in entries if isinstance(entries, list) else []:
        hours = e.get("hours") if isinstance(e, dict) else None
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours <= 0 \
                or e.get("status") not in ("drawn", "refused"):
            raise ReportError(f"{path}: every budget needs positive 'hours' and a 'status' of drawn or refused")
        out[float(hours)] = e
    if len(out) != 2:
        raise ReportError(f"{path}: the table needs exactly two label budgets (the paper's 1 h and 5 h), found {len(out)}")
    return out


def _runs_by_cell(report: Dict[str, Any]) -> Dict[Tuple[str, float], Tuple[str, Dict[str, Any]]]:
    """{(locale, hours): (run name, conditions)} of the report's fine-tuning results."""
    from cpc_speech.report.inputs import budget_hours, split_run_name

    runs = dict(report.get("finetune_by_locale") or {})
    if "finetune" in report:
        det = (report.get("details") or {}).get("finetune") or {}
        if det.get("locale") and det.get("budget"):
            runs[f"{det['locale']}_{det['budget']}"] = report["finetune"]
    out = {}
    for name, conds in runs.items():
        locale, budget = split_run_name(name)
        hours = budget_hours(budget)
        if locale and math.isfinite(hours):
            out[(locale, hours)] = (name, conds)
    return out


def paper_table_section(plans: Dict[str, Path], report: Dict[str, Any]) -> Dict[str, Any]:
    """The ``commonvoice_table`` dict (layout above) from the plans and the report's fine-tuning runs."""
    runs = _runs_by_cell(report)
    budgets: Optional[Tuple[float, float]] = None
    first: Optional[Path] = None
    rows: Dict[str, Any] = {}
    for locale, path in plans.items():
        plan = read_json(path)
        by_hours = _plan_budgets(plan, path)
        these = tuple(sorted(by_hours))
        if budgets is None:
            budgets, first = these, path
        elif these != budgets:
            raise ReportError(f"{path}: budgets {these[0]:g} h / {these[1]:g} h differ from {budgets[0]:g} h / {budgets[1]:g} h in {first}")
        hours_of = {"small": budgets[0], "large": budgets[1]}
        cells = {}
        for key, which, cond, _, _ in COLUMNS:
            hours = hours_of[which]
            entry = by_hours[hours]
            run = runs.get((locale, hours))
            if entry["status"] == "refused":
                cells[key] = {"per_test": None, "status": "refused", "note": str(entry.get("reason") or "refused")}
            elif run is None:
                cells[key] = {"per_test": None, "status": "missing", "note": f"no results/finetune_{locale}_{hours:g}h.json"}
            elif cond not in run[1]:
                cells[key] = {"per_test": None, "status": "missing", "note": f"{cond} not run in finetune_{run[0]}.json"}
            elif run[1][cond].get("per_test") is None:
                cells[key] = {"per_test": None, "status": "missing", "note": f"no test PER in finetune_{run[0]}.json"}
            else:
                cells[key] = {"per_test": run[1][cond]["per_test"], "status": "measured", "note": ""}
        pool = plan.get("pool") if isinstance(plan.get("pool"), dict) else {}
        rows[locale] = {"available_hours": pool.get("hours"), "cells": cells}
    assert budgets is not None
    paper = [c[0] for c in COLUMNS if c[4]]
    complete = [loc for loc, r in rows.items() if all(r["cells"][k]["status"] == "measured" for k in paper)]
    left_out = {}
    for loc, r in rows.items():
        if loc in complete:
            continue
        by_note: Dict[str, List[str]] = {}
        for k in paper:
            if r["cells"][k]["status"] != "measured":
                by_note.setdefault(r["cells"][k]["note"], []).append(_title(k, budgets))
        left_out[loc] = "; ".join(f"{', '.join(cols)}: {note}" for note, cols in by_note.items())
    average: Dict[str, Optional[float]] = {}
    for key, *_ in COLUMNS:
        values = [rows[loc]["cells"][key]["per_test"] for loc in complete]
        average[key] = sum(values) / len(values) if values and all(v is not None for v in values) else None
    return {
        "budgets": {"small": budgets[0], "large": budgets[1]},
        "columns": [{"key": k, "budget": b, "condition": c, "title": _title(k, budgets), "paper": p} for k, b, c, _, p in COLUMNS],
        "rows": rows,
        "average": average,
        "average_over": complete,
        "left_out": left_out,
        "published": dict(PUBLISHED),
        "comparable": budgets == (PUBLISHED["budgets"]["small"], PUBLISHED["budgets"]["large"]),
    }


def _title(key: str, budgets: Tuple[float, float]) -> str:
    _, which, _, suffix, _ = next(c for c in COLUMNS if c[0] == key)
    return f"{budgets[0 if which == 'small' else 1]:g} h {suffix}"


# ------------------------------------------------------------------------------------ Markdown


def paper_table_markdown(report: Dict[str, Any]) -> List[str]:
    """The "Common Voice: the paper's table" section of report.md (empty without plans)."""
    t = report.get("commonvoice_table")
    if not t:
        return []
    cols = t["columns"]
    titles = [c["title"] + ("" if c["paper"] else " (not in the paper)") for c in cols]
    out = ["## Common Voice: the paper's table (test PER, %)", "",
           f"Riviere et al. (2020) protocol: {t['budgets']['small']:g} h of labels on frozen features; "
           f"{t['budgets']['large']:g} h frozen, fine-tuned and from scratch (+ MFCC). Where both budgets are drawn, the "
           f"{t['budgets']['small']:g} h clips are a part of the {t['budgets']['large']:g} h clips; dev and test are the "
           "release's speaker-disjoint splits. A budget the locale's train split cannot supply is not trained (marked "
           "in its cell).", "",
           "| Locale | Train pool (h) | " + " | ".join(titles) + " |",
           "|:---|---:|" + "---:|" * len(cols)]
    for loc, r in t["rows"].items():
        cells = []
        for c in cols:
            cell = r["cells"][c["key"]]
            cells.append(pct(cell["per_test"]) if cell["status"] == "measured" else f"_{cell['note']}_")
        pool = r.get("available_hours")
        out.append(f"| {loc} | {'–' if pool is None else f'{pool:.3f}'} | " + " | ".join(cells) + " |")
    over = t["average_over"]
    label = f"**average** ({len(over)} of {len(t['rows'])} locales)" if over else "**average**"
    out.append(f"| {label} | | " + " | ".join(pct(t["average"][c["key"]]) for c in cols) + " |")
    pub = t["published"]
    b = pub["budgets"]
    out.append(f"| _published, not measured here: {pub['source'].split(',')[0]}, mean of {', '.join(pub['languages'])}, "
               f"{b['small']:g} h / {b['large']:g} h_ | | " + " | ".join(pct(pub.get(c["key"])) for c in cols) + " |")
    out.append("")
    notes = []
    if over:
        notes.append(f"The average is over the locales with every paper cell measured ({', '.join(over)}).")
    else:
        notes.append("No locale has every paper cell measured, so there is no average.")
    for loc, why in t["left_out"].items():
        notes.append(f"`{loc}` is left out of the average ({why}).")
    if not t["comparable"]:
        notes.append(f"This run's budgets ({t['budgets']['small']:g} h / {t['budgets']['large']:g} h) are not the paper's "
                     f"({b['small']:g} h / {b['large']:g} h): the published row is not comparable.")
    notes.append("The published row is copied from the paper (their model, data and training); nothing in it was measured here.")
    out += [" ".join(notes), ""]
    return out
