"""The report's ABX and discrete-unit sections: reading ``results/abx.json`` (``cpc-speech abx``) and
``results/units_<name>.json`` (``cpc-speech quantize --results``), and their Markdown.

``report.json`` gains (when the files exist; ``missing`` says why otherwise)::

    "abx":   {"model" | "mfcc" | "random_init": {"within": error, "across": error}},   # fractions
    "units": {"model" | "mfcc" | ...: {"units", "pnmi", "purity", "unit_purity", "entropy_bits",
              "perplexity", "used_units", "max_unit_share", "abx_within", "abx_across"}},
    "details": {"abx": {"file", "item_file", "layer", "distance", "max_size_group", "max_x_across",
                        "frame_rule", "seed", "items", "short_utterances"},
                "units": {name: {"file", "layer", "features", "assigned_utterances", "short_utterances"}}}

``short_utterances``: clips with no feature frame at all (shorter than the encoder's receptive
field); the ABX scores none of their items, the units give them an empty sequence.

Both are optional: without their files the sections are left out (and not listed as missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from cpc_speech.report.inputs import ReportError, read_json
from cpc_speech.report.markdown import BASELINE_NAMES, integer, pct
from cpc_speech.results import ABX_MODES, PROBE_NAMES, UNIT_QUALITY_KEYS, AbxResult, ResultError, UnitsResult, finite, ordered


def find_evaluation_files(res_dir: Path) -> Dict[str, Any]:
    """{"abx": path or None, "units": {name: path}} in a results folder."""
    abx = res_dir / "abx.json"
    units = {p.stem[len("units_"):]: p for p in sorted(res_dir.glob("units_*.json")) if len(p.stem) > len("units_")}
    return {"abx": abx if abx.is_file() else None, "units": units}


def evaluation_sections(files: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """(report entries, details, sources) of the ABX and unit result files, read through
    :class:`~cpc_speech.results.AbxResult` and :class:`~cpc_speech.results.UnitsResult`."""
    report: Dict[str, Any] = {}
    details: Dict[str, Any] = {}
    sources: Dict[str, Any] = {}
    path = files.get("abx")
    if path is not None:
        try:
            abx = AbxResult.from_json(read_json(path), str(path))
        except ResultError as exc:
            raise ReportError(str(exc)) from None
        report["abx"] = {name: {m: finite(getattr(s, m)) for m in ABX_MODES} for name, s in abx.results.items()}
        first = abx.headline().items
        details["abx"] = {"file": str(path), **{k: getattr(abx, k) for k in AbxResult.SETTINGS},
                          "items": first.get("used"), "short_utterances": first.get("short_utterances")}
        sources["abx"] = str(path)
    units = files.get("units") or {}
    if units:
        report["units"], details["units"], sources["units"] = {}, {}, {}
        for name in ordered(units, PROBE_NAMES):
            try:
                rec = UnitsResult.from_json(read_json(units[name]), str(units[name]))
            except ResultError as exc:
                raise ReportError(str(exc)) from None
            q, abx_units = rec.quality or {}, rec.abx or {}
            report["units"][name] = {**{k: finite(q.get(k)) for k in UNIT_QUALITY_KEYS}, "units": rec.units,
                                     **{f"abx_{m}": finite(abx_units.get(m)) for m in ABX_MODES}}
            details["units"][name] = {"file": str(units[name]), "layer": rec.layer, "features": rec.features,
                                      "assigned_utterances": rec.assigned_utterances, "short_utterances": rec.short_utterances}
            sources["units"][name] = str(units[name])
    return report, details, sources


# ------------------------------------------------------------------------------------ Markdown


def abx_notes(section: Dict[str, Any], mode: str) -> str:
    model = (section.get("model") or {}).get(mode)
    if model is None:
        return ""
    return "; ".join(f"**worse than {label}**" for name, label in BASELINE_NAMES.items()
                     if (section.get(name) or {}).get(mode) is not None and model > section[name][mode])


def abx_headline_rows(report: Dict[str, Any]) -> List[List[str]]:
    """Headline rows (Task, Model, MFCC, Random init, Majority class, Notes) of the ABX errors."""
    sec = report.get("abx")
    if not sec:
        return []
    d = (report.get("details") or {}).get("abx") or {}
    rows = []
    for mode in ABX_MODES:
        if all((e or {}).get(mode) is None for e in sec.values()):
            continue
        label = f"ABX {mode}-speaker error (%, lower is better" + (f", {d['layer']}" if d.get("layer") else "") + ")"
        rows.append([label] + [pct((sec.get(n) or {}).get(mode)) for n in PROBE_NAMES] + ["–", abx_notes(sec, mode)])
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
                   f"`{d.get('file')}`. Utterances with no feature frame (shorter than the receptive field): "
                   f"{integer(d.get('short_utterances'))}.")
        out += ["", "| Features | Within speakers | Across speakers |", "|:---|---:|---:|"]
        names = {"model": "Model", **BASELINE_NAMES}
        for name, e in sec.items():
            out.append(f"| {names.get(name, name)} | {pct(e.get('within'))} | {pct(e.get('across'))} |")
        out.append("")
    units = report.get("units")
    if units:
        out += ["## Discrete units (k-means)", ""]
        out += ["PNMI = I(phone; unit) / H(phone) on labelled frames; purity = share of frames whose unit's most frequent "
                "phone is theirs (unit purity: the same with phones and units swapped); entropy and perplexity of the "
                "unit distribution; max share = the most used unit's share of frames (collapse shows here); ABX of the "
                "one-hot units.", "",
                "| Features | Units | Layer | PNMI | Purity | Unit purity | Entropy (bits) | Perplexity | Used units | "
                "Max share (%) | ABX within (%) | ABX across (%) | Short utterances |",
                "|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, u in units.items():
            det = (details.get("units") or {}).get(name) or {}
            layer = det.get("layer") or "–"

            def f(x, digits=3):
                return "–" if x is None else f"{x:.{digits}f}"

            out.append(f"| {name} | {u.get('units')} | {layer} | {f(u.get('pnmi'))} | {pct(u.get('purity'))} | "
                       f"{pct(u.get('unit_purity'))} | {f(u.get('entropy_bits'), 2)} | {f(u.get('perplexity'), 1)} | "
                       f"{'–' if u.get('used_units') is None else int(u['used_units'])} | {pct(u.get('max_unit_share'))} | "
                       f"{pct(u.get('abx_within'))} | {pct(u.get('abx_across'))} | {integer(det.get('short_utterances'))} |")
        out.append("")
    return out
