"""The report's ABX and discrete-unit sections: reading ``results/abx.json`` (``cpc-speech abx``) and
``results/units_<name>.json`` (``cpc-speech quantize --results``), and their Markdown.

``report.json`` gains (when the files exist; ``missing`` says why otherwise)::

    "abx":   {"model" | "mfcc" | "random_init": {"within": error, "across": error}},   # fractions
    "units": {"model" | "mfcc" | ...: {"units", "pnmi", "purity", "unit_purity", "entropy_bits",
              "perplexity", "used_units", "max_unit_share", "abx_within", "abx_across"}},
    "details": {"abx": {"file", "item_file", "layer", "distance", "max_size_group", "max_x_across",
                        "frame_rule", "seed", "items"}, "units": {name: {"file", "layer", "features"}}}

Both are optional: without their files the sections are left out (and not listed as missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cpc_speech.results import PROBE_NAMES, finite, ordered

UNIT_KEYS = ("units", "pnmi", "purity", "unit_purity", "entropy_bits", "perplexity", "used_units", "max_unit_share",
             "abx_within", "abx_across")


def find_evaluation_files(res_dir: Path) -> Dict[str, Any]:
    """{"abx": path or None, "units": {name: path}} in a results folder."""
    abx = res_dir / "abx.json"
    units = {p.stem[len("units_"):]: p for p in sorted(res_dir.glob("units_*.json")) if len(p.stem) > len("units_")}
    return {"abx": abx if abx.is_file() else None, "units": units}


def evaluation_sections(files: Dict[str, Any], read_json, error_cls) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(report entries, details, sources) of the ABX and unit result files."""
    report: Dict[str, Any] = {}
    details: Dict[str, Any] = {}
    sources: Dict[str, Any] = {}
    path = files.get("abx")
    if path is not None:
        data = read_json(path)
        results = data.get("results")
        if not isinstance(results, dict) or not results:
            raise error_cls(f"{path}: not an ABX result file (no 'results' mapping; written by cpc-speech abx?)")
        section = {}
        for name in ordered(results, PROBE_NAMES):
            entry = results[name] if isinstance(results[name], dict) else {}
            section[name] = {m: finite(entry.get(m)) for m in ("within", "across")}
            if all(v is None for v in section[name].values()):
                raise error_cls(f"{path}: results.{name} has neither a 'within' nor an 'across' error")
        report["abx"] = section
        first = results[next(iter(results))]
        details["abx"] = {"file": str(path), **{k: data.get(k) for k in ("item_file", "layer", "distance", "max_size_group",
                                                                        "max_x_across", "frame_rule", "seed")},
                          "items": (first.get("items") or {}).get("used") if isinstance(first, dict) else None}
        sources["abx"] = str(path)
    units = files.get("units") or {}
    if units:
        report["units"], details["units"], sources["units"] = {}, {}, {}
        for name in ordered(units, PROBE_NAMES):
            data = read_json(units[name])
            q = data.get("quality")
            if not isinstance(q, dict):
                raise error_cls(f"{units[name]}: not a unit quality file (no 'quality' mapping; written by cpc-speech quantize --results?)")
            abx = data.get("abx") if isinstance(data.get("abx"), dict) else {}
            report["units"][name] = {**{k: finite(q.get(k)) for k in UNIT_KEYS[1:8]}, "units": data.get("units"),
                                     "abx_within": finite(abx.get("within")), "abx_across": finite(abx.get("across"))}
            details["units"][name] = {"file": str(units[name]), "layer": data.get("layer"), "features": data.get("features")}
            sources["units"][name] = str(units[name])
    return report, details, sources


# ------------------------------------------------------------------------------------ Markdown


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def abx_notes(section: Dict[str, Any], mode: str) -> str:
    model = (section.get("model") or {}).get(mode)
    if model is None:
        return ""
    labels = {"mfcc": "MFCC", "random_init": "random init"}
    return "; ".join(f"**worse than {label}**" for name, label in labels.items()
                     if (section.get(name) or {}).get(mode) is not None and model > section[name][mode])


def abx_headline_rows(report: Dict[str, Any]) -> List[List[str]]:
    """Headline rows (Task, Model, MFCC, Random init, Majority class, Notes) of the ABX errors."""
    sec = report.get("abx")
    if not sec:
        return []
    d = (report.get("details") or {}).get("abx") or {}
    rows = []
    for mode in ("within", "across"):
        if all((e or {}).get(mode) is None for e in sec.values()):
            continue
        label = f"ABX {mode}-speaker error (%, lower is better" + (f", {d['layer']}" if d.get("layer") else "") + ")"
        rows.append([label] + [_pct((sec.get(n) or {}).get(mode)) for n in PROBE_NAMES] + ["–", abx_notes(sec, mode)])
    return rows


def evaluations_markdown(report: Dict[str, Any]) -> List[str]:
    """The "ABX" and "Discrete units" sections of report.md."""
    details = report.get("details") or {}
    out: List[str] = []
    sec = report.get("abx")
    if sec:
        out += ["## ABX phone discriminability", ""]
        d = details.get("abx") or {}
        out.append(f"Error rates (%) on `{d.get('item_file')}` ({d.get('items')} items; {d.get('distance')} distance, "
                   f"DTW; max_size_group {d.get('max_size_group')}, max_x_across {d.get('max_x_across')}, frame rule "
                   f"`{d.get('frame_rule')}`, seed {d.get('seed')}; layer `{d.get('layer')}`); chance is 50; from "
                   f"`{d.get('file')}`.")
        out += ["", "| Features | Within speakers | Across speakers |", "|:---|---:|---:|"]
        names = {"model": "Model", "mfcc": "MFCC", "random_init": "random init"}
        for name, e in sec.items():
            out.append(f"| {names.get(name, name)} | {_pct(e.get('within'))} | {_pct(e.get('across'))} |")
        out.append("")
    units = report.get("units")
    if units:
        out += ["## Discrete units (k-means)", ""]
        out += ["PNMI = I(phone; unit) / H(phone) on labelled frames; purity = share of frames whose unit's most frequent "
                "phone is theirs (unit purity: the same with phones and units swapped); entropy and perplexity of the "
                "unit distribution; max share = the most used unit's share of frames (collapse shows here); ABX of the "
                "one-hot units.", "",
                "| Features | Units | Layer | PNMI | Purity | Unit purity | Entropy (bits) | Perplexity | Used units | "
                "Max share (%) | ABX within (%) | ABX across (%) |",
                "|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, u in units.items():
            layer = ((details.get("units") or {}).get(name) or {}).get("layer") or "–"

            def f(x, digits=3):
                return "–" if x is None else f"{x:.{digits}f}"

            out.append(f"| {name} | {u.get('units')} | {layer} | {f(u.get('pnmi'))} | {_pct(u.get('purity'))} | "
                       f"{_pct(u.get('unit_purity'))} | {f(u.get('entropy_bits'), 2)} | {f(u.get('perplexity'), 1)} | "
                       f"{'–' if u.get('used_units') is None else int(u['used_units'])} | {_pct(u.get('max_unit_share'))} | "
                       f"{_pct(u.get('abx_within'))} | {_pct(u.get('abx_across'))} |")
        out.append("")
    return out
