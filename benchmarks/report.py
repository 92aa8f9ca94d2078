"""Summaries of a benchmark run: each precision's figure over float32 (same run), the check against
the targets in ``benchmarks/targets.json``, and the printed table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from benchmarks.configs import CONFIGS
from benchmarks.jobs.train import PARTS

TARGETS_FILE = Path(__file__).resolve().with_name("targets.json")
TARGETS_FORMAT = "cpc_speech.bench-targets/1"
TARGET_NAMES = ("train_speedup_over_fp32", "encoder_fraction_of_roofline", "extract_speedup_over_fp32",
                "step_peak_rss_mb_max", "long_extract_peak_rss_mb_max", "loader_wait_share_max")
PER_CONFIG_TARGETS = ("train_speedup_over_fp32",)  # {configuration: threshold}; the others are one number


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def load_targets(path: Path = TARGETS_FILE) -> Dict[str, Any]:
    """The ``targets`` of a targets file (format :data:`TARGETS_FORMAT`); refuses a file whose
    format, keys or values do not fit, naming the file and the key."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != TARGETS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path}: format must be {TARGETS_FORMAT!r}, found {found!r}")
    unknown = sorted(set(data) - {"format", "issue", "targets", "descriptions"})
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}")
    targets = data.get("targets")
    if not isinstance(targets, dict):
        raise ValueError(f"{path}: 'targets' must be an object")
    missing, extra = [k for k in TARGET_NAMES if k not in targets], sorted(set(targets) - set(TARGET_NAMES))
    if missing or extra:
        raise ValueError(f"{path}: targets: missing {missing}, unknown {extra}")
    for name, value in targets.items():
        if name in PER_CONFIG_TARGETS:
            if not isinstance(value, dict) or not value:
                raise ValueError(f"{path}: targets.{name} must be an object {{configuration: number}}")
            for config, v in value.items():
                if config not in CONFIGS or not _is_number(v):
                    raise ValueError(f"{path}: targets.{name}.{config} must be a number for a configuration "
                                     f"of {', '.join(CONFIGS)}, got {v!r}")
        elif not _is_number(value):
            raise ValueError(f"{path}: targets.{name} must be a number, got {value!r}")
    return targets


def roofline(matmul: Optional[Dict[str, Any]], precision: str) -> Optional[float]:
    """Best matmul GFLOP/s of the precision a measurement ran in (fp32 for fp32)."""
    if not matmul or "error" in matmul:
        return None
    key = "bf16" if precision in ("bf16", "fp16") else "fp32"
    return (matmul.get(key) or {}).get("gflops_best")


def _train_rate(r: Dict[str, Any]) -> float:
    return r["audio_seconds_per_second"]["median"]


def roofline_fractions(r: Dict[str, Any], matmul: Optional[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Achieved GFLOP/s of a training measurement (whole step, encoder forward+backward) over the
    matmul rate of the precision it ran in."""
    ceiling = roofline(matmul, r.get("precision", "fp32"))
    enc = ((((r.get("split") or {}).get("parts") or {}).get("encoder")) or {}).get("gflops_per_second")
    return {"step": r["gflops_per_second"] / ceiling if ceiling else None,
            "encoder": enc / ceiling if ceiling and enc else None}


def compare_precisions(results: Dict[str, Any], precisions: Sequence[str]) -> List[Dict[str, Any]]:
    """For every configuration measured in several precisions in this run: the figure of each
    (training audio s/s, extraction real-time factor) and its ratio over the first precision
    (fp32 by default), training ratios as the median over rounds of A/B pairs."""
    base = precisions[0]
    rows: List[Dict[str, Any]] = []
    groups: Dict[Tuple[str, str], Dict[str, List[Dict[str, Any]]]] = {}
    for r in results.get("train", []):
        if "error" not in r:
            groups.setdefault((r["config"], r["sampling"]), {}).setdefault(r["precision_requested"], []).append(r)
    for (config, sampling), by in groups.items():
        for prec, runs in by.items():
            if prec == base or base not in by:
                continue
            pairs = [(a, b) for a in by[base] for b in runs if a.get("round") == b.get("round")]
            if not pairs:
                continue
            rows.append({
                "what": "train", "config": config, "sampling": sampling, "unit": "audio s/s",
                "baseline": base, "precision": prec, "resolved": runs[0]["precision"],
                "baseline_value": statistics.median(_train_rate(a) for a, _ in pairs),
                "value": statistics.median(_train_rate(b) for _, b in pairs),
                "ratio": statistics.median(_train_rate(b) / _train_rate(a) for a, b in pairs),
                "pairs": len(pairs),
            })
    ex = results.get("extract") or {}
    for part, unit in (("short", "x real time"), ("long", "x real time")):
        a = (ex.get(base) or {}).get(part)
        for prec in precisions[1:]:
            b = (ex.get(prec) or {}).get(part)
            if a and b and "error" not in a and "error" not in b:
                rows.append({"what": f"extract {part}", "config": a["preset"], "sampling": f"{a['audio_seconds']:.0f} s",
                             "unit": unit, "baseline": base, "precision": prec, "resolved": b["precision"],
                             "baseline_value": a["rtf"], "value": b["rtf"], "ratio": b["rtf"] / a["rtf"], "pairs": 1})
    return rows


def evaluate_targets(results: Dict[str, Any], targets: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """One row per target (``targets``, default :func:`load_targets`): name, value, target, ok.
    Every value comes from this run (ratios between precisions measured here)."""
    targets = load_targets() if targets is None else targets
    rows: List[Dict[str, Any]] = []

    def add(name, value, target, ok, note=""):
        rows.append({"name": name, "value": value, "target": target, "ok": None if value is None else bool(ok), "note": note})

    matmul = results.get("matmul")
    for c in results.get("comparisons", []):
        if c["what"] == "train" and c["precision"] == "auto" and c["sampling"] == "cross_batch":
            tgt = targets["train_speedup_over_fp32"].get(c["config"])
            if tgt:
                add(f"train {c['config']}: auto ({c['resolved']}) over fp32", c["ratio"], f">= {tgt}", c["ratio"] >= tgt,
                    note=f"{c['value']:.1f} vs {c['baseline_value']:.1f} audio s/s")
        if c["what"] == "extract short" and c["precision"] == "auto":
            tgt = targets["extract_speedup_over_fp32"]
            add(f"extract {c['sampling']}: auto ({c['resolved']}) over fp32", c["ratio"], f">= {tgt}", c["ratio"] >= tgt,
                note=f"{c['value']:.0f}x vs {c['baseline_value']:.0f}x real time")
    train = [r for r in results.get("train", []) if "error" not in r]
    for r in train:
        if r["sampling"] != "cross_batch" or r.get("precision_requested") != "auto" or r.get("compile") or r.get("round", 0):
            continue
        name = r["config"]
        enc = roofline_fractions(r, matmul)["encoder"]
        if enc is not None:
            tgt = targets["encoder_fraction_of_roofline"]
            add(f"train {name} ({r['precision']}): encoder fwd+bwd / {r['precision']} matmul rate", enc, f">= {tgt}", enc >= tgt)
        peak = r["memory"].get("peak_rss_mb")
        if r["memory"].get("cuda_peak_allocated_mb") is not None:
            peak = r["memory"]["cuda_peak_allocated_mb"]
        if name == "default":
            add(f"train {name} ({r['precision']}): peak memory MB", peak, f"< {targets['step_peak_rss_mb_max']:.0f}",
                peak is not None and peak < targets["step_peak_rss_mb_max"])
    for prec, ex in (results.get("extract") or {}).items():
        lg = ex.get("long")
        if lg and "error" not in lg:
            v = lg["peak_rss_mb"]
            add(f"extract {lg['audio_seconds'] / 3600:.2g} h ({lg['precision']}): peak RSS MB", v,
                f"< {targets['long_extract_peak_rss_mb_max']:.0f}", v < targets["long_extract_peak_rss_mb_max"])
    ld = results.get("loader") or {}
    w2 = (ld.get("workers") or {}).get("2")
    if w2 and train:
        fastest = max(train, key=_train_rate)
        need = fastest["batch"] / fastest["step_seconds"]["median"]
        have = w2["windows_per_second"]
        add(f"loader 2 workers: windows/s vs need of {fastest['config']}/{fastest['sampling']}/{fastest['precision']}", have,
            f">= {need:.1f}", have is not None and have >= need,
            note=f"loader CPU per step {w2['cpu_ms_per_window'] * fastest['batch']:.0f} ms vs step {1000 * fastest['step_seconds']['median']:.0f} ms")
    e2e = ld.get("e2e")
    if e2e and "error" not in e2e:
        add(f"loader 2 workers feeding {e2e['config']}: share of step waiting", e2e["wait_share"],
            f"<= {targets['loader_wait_share_max']}", e2e["wait_share"] <= targets["loader_wait_share_max"],
            note=f"step {e2e['slowdown']:.2f}x the in-memory-batch step")
    return rows


def _fmt(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "NO"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def _label(r: Dict[str, Any]) -> str:
    """A training measurement's name: config, the precision it ran in, +compile, round."""
    label = f"{r.get('config', '?')}/{r.get('precision', r.get('precision_requested', '?'))}"
    if r.get("compile"):
        label += "+compile"
    return label + (f" #{r['round'] + 1}" if r.get("round") else "")


def format_report(res: Dict[str, Any]) -> str:
    """The printed table of a results dict: machine, matmul, training, loader, extraction, precisions, targets."""
    lines: List[str] = []
    m = res["machine"]
    lines.append(f"cpc_speech benchmarks  {m['name']}  {m['cpu_model']}  {m['usable_cores']}/{m['cores']} cores  "
                 f"torch {m['torch']} ({m['torch_cpu_capability']})  threads {m['threads']}  device {m['device']}")
    la0, la1 = res.get("load_average_start"), res.get("load_average_end")
    lines.append(f"load average at start {la0}, at end {la1}" + ("   ** machine busy: figures are noisy **"
                                                                if la0 and la0[0] > 0.5 * max(1, m["usable_cores"]) else ""))
    mm = res.get("matmul")
    if mm:
        if "error" in mm:
            lines.append(f"\nmatmul: ERROR {mm['error']}")
        else:
            lines.append(f"\nmatmul {mm['n']}x{mm['n']}: fp32 {mm['fp32']['gflops_best']:.1f} GFLOP/s best "
                         f"({mm['fp32']['gflops_median']:.1f} median), bf16 {mm['bf16']['gflops_best']:.1f} GFLOP/s (n={mm['bf16']['n']})")
            if mm.get("auto"):
                lines.append(f"precision auto = {mm['auto']['name']} ({mm['auto']['reason']})")
    train = res.get("train") or []
    if train:
        lines.append("\ntraining (median step, audio s/s [min..max], GFLOP/s, % of the matmul rate of the precision it ran in, peak RSS)")
        hdr = f"{'config':<20}{'sampling':<16}{'step s':>8}{'audio s/s':>11}{'range':>14}{'GFLOP/s':>9}{'%mm':>6}{'peak MB':>9}{'stepMB':>8}"
        lines.append(hdr)
        for r in train:
            label = _label(r)
            if "error" in r:
                lines.append(f"{label:<20}{r.get('sampling', ''):<16}ERROR {r['error']}")
                continue
            a = r["audio_seconds_per_second"]
            frac = roofline_fractions(r, mm)["step"]
            pct = 100 * frac if frac is not None else None
            lines.append(f"{label:<20}{r['sampling']:<16}{r['step_seconds']['median']:>8.3f}{a['median']:>11.2f}"
                         f"{a['min']:>7.2f}..{a['max']:<5.2f}{r['gflops_per_second']:>9.1f}{_fmt(pct, 0):>6}"
                         f"{_fmt(r['memory']['peak_rss_mb']):>9}{_fmt(r['memory']['step_peak_rss_mb']):>8}")
        if any(r.get("split") for r in train):
            lines.append("\nstep time split (staged passes; forward+backward seconds, share, achieved GFLOP/s of the part)")
            lines.append(f"{'config':<20}{'sampling':<16}" + "".join(f"{p:>18}" for p in PARTS) + f"{'sampling':>10}{'sum/step':>9}")
        for r in train:
            sp = r.get("split")
            if not sp:
                continue
            label = _label(r)
            cells = []
            for p in PARTS:
                d = sp["parts"][p]
                g = d.get("gflops_per_second")
                cells.append(f"{d['total']:>6.3f} {100 * d['share']:>3.0f}% {_fmt(g, 0) if g else '':>5}")
            lines.append(f"{label:<20}{r['sampling']:<16}" + "".join(f"{c:>18}" for c in cells)
                         + f"{sp['parts']['loss']['sampling']:>10.3f}{sp['staged_over_step']:>9.2f}")
        fl = [r for r in train if "error" not in r]
        if fl:
            lines.append("\nanalytic forward GFLOP per batch (step = 3x forward)")
            lines.append(f"{'config':<20}{'sampling':<16}{'encoder':>9}{'context':>9}{'heads':>9}{'loss':>9}{'step':>9}{'loss@1+N':>10}")
            for r in fl:
                f = r["flops"]
                lines.append(f"{r['config']:<20}{r['sampling']:<16}" + "".join(f"{f[k] / 1e9:>9.2f}" for k in ("encoder", "context", "heads", "loss", "step"))
                             + f"{f['loss_gather'] / 1e9:>10.2f}")
    ld = res.get("loader")
    if ld:
        if "error" in ld:
            lines.append(f"\nloader: ERROR {ld['error']}")
        else:
            lines.append(f"\nloader: {ld['files']} FLAC files, {ld['audio_seconds']:.0f} s, batch {ld['batch']} x {ld['window_samples']}, {ld['epochs']} epoch(s)")
            lines.append(f"{'workers':>8}{'windows/s':>11}{'incl. start':>12}{'1st batch s':>12}{'CPU ms/window':>14}")
            for w, d in ld["workers"].items():
                lines.append(f"{w:>8}{_fmt(d['windows_per_second'], 0):>11}{_fmt(d['windows_per_second_incl_startup'], 0):>12}"
                             f"{d['first_batch_seconds'].get('median', 0):>12.3f}{_fmt(d['cpu_ms_per_window']):>14}")
        e2e = ld.get("e2e")
        if e2e:
            if "error" in e2e:
                lines.append(f"  training fed by the loader: ERROR {e2e['error']}")
            else:
                lines.append(f"  {e2e['config']} training fed by {e2e['workers']} workers: step {e2e['step_seconds_with_loader']['median']:.3f} s "
                             f"(in-memory batches {e2e['step_seconds_prebuilt']['median']:.3f} s, x{e2e['slowdown']:.2f}), "
                             f"waiting for batches {100 * e2e['wait_share']:.1f}% of the step (max wait {e2e['wait_seconds']['max']:.3f} s)")
    for prec, ex in (res.get("extract") or {}).items():
        lines.append(f"\nfeature extraction (default preset, random init), precision {prec}")
        s = ex.get("short")
        if s:
            if "error" in s:
                lines.append(f"  short: ERROR {s['error']}")
            else:
                lines.append(f"  {s['audio_seconds']:.0f} s one pass ({s['precision']}): {s['rtf']:.1f}x real time (context c_t), "
                             f"{s['encoder']['rtf']:.1f}x (encoder z_t only); peak RSS {s['peak_rss_mb']:.0f} MB")
        lg = ex.get("long")
        if lg:
            if "error" in lg:
                lines.append(f"  long: ERROR {lg['error']}")
            else:
                lines.append(f"  {lg['audio_seconds']:.0f} s in {lg['chunk_seconds']:g} s chunks ({lg['precision']}): {lg['rtf']:.1f}x real time; peak RSS "
                             f"{lg['peak_rss_mb']:.0f} MB (model+torch {_fmt(lg['rss_model_mb'], 0)} MB, input {lg['input_mb']:.0f} MB, "
                             f"output {lg['output_mb']:.0f} MB)")
    cmp_rows = res.get("comparisons") or []
    if cmp_rows:
        lines.append("\nprecisions side by side (this run; ratio = precision / baseline)")
        lines.append(f"{'what':<16}{'config':<20}{'sampling':<16}{'baseline':>16}{'precision':>22}{'ratio':>8}")
        for c in cmp_rows:
            lines.append(f"{c['what']:<16}{c['config']:<20}{c['sampling']:<16}"
                         f"{c['baseline'] + ' ' + _fmt(c['baseline_value'], 1):>16}"
                         f"{c['precision'] + '=' + c['resolved'] + ' ' + _fmt(c['value'], 1):>22}{c['ratio']:>8.2f}")
    tg = res.get("targets") or []
    if tg:
        lines.append("\ntargets")
        for t in tg:
            lines.append(f"  {t['name']:<62}{_fmt(t['value']):>10}  {t['target']:<10}{_fmt(t['ok']):>5}  {t.get('note', '')}")
    return "\n".join(lines)
