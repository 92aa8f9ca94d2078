"""``report.md``: the report dict rendered as Markdown.

Every number in a table is a value of ``report.json`` passed through one of the formatters below
(accuracies and PERs as percentages with one decimal, losses with four, hours with three), so the
Markdown never disagrees with the JSON.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence

DASH = "–"
PROBE_TITLES = {"phone_probe": "Phone probe", "speaker_probe": "Speaker probe", "speaker_probe_window": "Speaker probe (window protocol)"}
HEADLINE_ROWS = {"phone_probe": "Phone accuracy", "speaker_probe": "Speaker accuracy", "speaker_probe_window": "Speaker accuracy"}
BASELINE_NAMES = {"mfcc": "MFCC", "random_init": "random init"}
CONDITION_TITLES = {"frozen": "Model frozen", "unfrozen": "Model fine-tuned", "mfcc": "MFCC", "scratch": "Scratch"}
SECTION_TITLES = {
    "pretraining": "Pretraining", "validation": "Validation", "data": "Data", "finetune": "Fine-tuning (PER)",
    **PROBE_TITLES,
}


# ------------------------------------------------------------------------------------ formatters


def pct(x: Optional[float]) -> str:
    """A fraction as a percentage with one decimal (``0.8125`` -> ``"81.2"``)."""
    return DASH if x is None else f"{100 * x:.1f}"


def fixed(x: Optional[float], digits: int) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def loss(x: Optional[float]) -> str:
    return fixed(x, 4)


def hours(x: Optional[float]) -> str:
    return fixed(x, 3)


def integer(x: Any) -> str:
    return DASH if x is None else str(int(x))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: Optional[Sequence[str]] = None) -> str:
    """A pipe table; ``align`` per column: "l" or "r" (numbers right-aligned by default)."""
    align = align or ["l"] + ["r"] * (len(headers) - 1)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ pieces


def probe_notes(section: Dict[str, Any], majority: Optional[Dict[str, Any]] = None) -> str:
    """"**below MFCC**" etc. when the model's accuracy is lower than a baseline's (or than always
    answering the most frequent training class)."""
    model = section.get("model")
    if model is None:
        return "no model entry"
    notes = [f"**below {label}**" for name, label in BASELINE_NAMES.items()
             if name in section and model["accuracy"] < section[name]["accuracy"]]
    if majority and majority.get("accuracy") is not None and model["accuracy"] < majority["accuracy"]:
        notes.append("**below majority class**")
    return "; ".join(notes)


def _probe_label(section: str, details: Dict[str, Any]) -> str:
    d = details.get(section) or {}
    what = [x for x in (d.get("protocol"), d.get("layer")) if x]
    return f"{HEADLINE_ROWS[section]} (%{', ' + ', '.join(what) if what else ''})"


def headline_markdown(report: Dict[str, Any]) -> str:
    """The headline table: probe accuracies of the model and the baselines (percent)."""
    rows = []
    details = report.get("details") or {}
    for section in PROBE_TITLES:
        sec = report.get(section)
        if sec is None:
            continue
        maj = (details.get(section) or {}).get("majority") or {}
        rows.append([
            _probe_label(section, details),
            pct(sec.get("model", {}).get("accuracy")),
            pct(sec.get("mfcc", {}).get("accuracy")),
            pct(sec.get("random_init", {}).get("accuracy")),
            pct(maj.get("accuracy")),
            probe_notes(sec, maj),
        ])
    from cpc_speech.report.evaluations import abx_headline_rows

    rows += abx_headline_rows(report)
    if not rows:
        return "_No probe results (phone / speaker probe files are missing)._"
    return table(["Task", "Model", "MFCC", "Random init", "Majority class", "Notes"], rows, "lrrrrl")


def _per_for_comparison(cond: Dict[str, Any], other: Dict[str, Any], split: Optional[str]) -> tuple:
    """(split, mine, theirs): the given split's PER, or by default test PER when both have one, else dev PER."""
    if split is None:
        split = "test" if cond.get("per_test") is not None and other.get("per_test") is not None else "dev"
    return split, cond.get(f"per_{split}"), other.get(f"per_{split}")


def per_notes(name: str, conds: Dict[str, Any], split: Optional[str] = None) -> str:
    """For the pretrained conditions: "**worse than MFCC**" etc. (a higher PER than a baseline)."""
    if name not in ("frozen", "unfrozen") or name not in conds:
        return ""
    notes = []
    for base, label in (("mfcc", "MFCC"), ("scratch", "scratch")):
        if base in conds:
            used, mine, theirs = _per_for_comparison(conds[name], conds[base], split)
            if mine is not None and theirs is not None and mine > theirs:
                notes.append(f"**worse than {label}**" + ("" if split else f" ({used})"))
    return "; ".join(notes)


def per_table(conds: Dict[str, Any]) -> str:
    rows = []
    for name, c in conds.items():
        e = c.get("test_errors") if isinstance(c.get("test_errors"), dict) else None
        sdi = DASH if not e else f"{e.get('substitutions')}/{e.get('deletions')}/{e.get('insertions')}"
        rows.append([CONDITION_TITLES.get(name, name), pct(c.get("per_dev")), pct(c.get("per_test")), sdi, hours(c.get("train_hours")),
                     integer(c.get("train_utterances")), integer(c.get("best_epoch")), integer(c.get("epochs_run")), per_notes(name, conds)])
    return table(["Condition", "Dev PER (%)", "Test PER (%)", "Test S/D/I", "Train hours", "Train utterances", "Best epoch", "Epochs", "Notes"],
                 rows, "lrrrrrrrl")


def _finetune_caption(det: Dict[str, Any]) -> str:
    bits = []
    if det.get("locale"):
        bits.append(f"locale `{det['locale']}`")
    if det.get("budget"):
        bits.append(f"label budget {det['budget']}")
    if det.get("hours_limit") is not None:
        bits.append("hours limit " + ("none" if not det["hours_limit"] or det["hours_limit"] <= 0 else f"{det['hours_limit']:g} h"))
    if det.get("head"):
        layers = f"{det['head_layers']}-layer " if det.get("head_layers") and det["head"] != "linear" else ""
        layers += "residual " if det.get("head_residual") and (det.get("head_layers") or 1) > 1 and det["head"] != "linear" else ""
        bits.append(f"{layers}{det['head']} CTC head on {det.get('features') or 'context'} features")
    if det.get("decode") == "beam":
        bits.append("prefix beam search" + (f" with a phone {det['lm_order']}-gram LM" if det.get("lm_order") else ""))
    elif det.get("decode"):
        bits.append(f"{det['decode']} decoding")
    if det.get("phones"):
        bits.append(f"{det['phones']} output classes (incl. blank)")
    short = {k: (v or {}).get("too_short_for_ctc") for k, v in (det.get("data") or {}).items()}
    if any(n is not None for n in short.values()):
        bits.append("utterances too short for CTC left out: "
                    + ", ".join(f"{k} {integer(n)}" for k, n in short.items() if n is not None))
    bits.append(f"from `{det.get('file')}`")
    return "; ".join(bits) + "."


def per_summary_table(runs: Dict[str, Dict[str, Any]], split: str) -> str:
    conds = [c for c in CONDITION_TITLES if any(c in r for r in runs.values())]
    rows = []
    for name, r in runs.items():
        first = next(iter(r.values()))
        notes = "; ".join(f"{CONDITION_TITLES[c].lower()}: {per_notes(c, r, split)}" for c in ("frozen", "unfrozen") if per_notes(c, r, split))
        rows.append([f"`{name}`", hours(first.get("train_hours"))] + [pct(r[c].get(f"per_{split}")) if c in r else DASH for c in conds] + [notes])
    return table(["Run", "Train hours"] + [f"{CONDITION_TITLES[c]}" for c in conds] + ["Notes"], rows, "lr" + "r" * len(conds) + "l")


def probe_table(section: Dict[str, Any]) -> str:
    rows = []
    unit = "examples" if any("test_examples" in e for e in section.values()) else "frames"
    for name, e in section.items():
        best = e.get("best") or {}
        rows.append([
            BASELINE_NAMES.get(name, name), pct(e["accuracy"]), integer(e.get("train_utterances")), integer(e.get(f"train_{unit}")),
            integer(e.get("test_utterances")), integer(e.get(f"test_{unit}")), integer(e.get("feature_dim")),
            DASH if best.get("weight_decay") is None else f"{best['weight_decay']:g}", integer(best.get("epochs")),
            integer(e.get("short_utterances")),
        ])
    return table(["Features", "Test accuracy (%)", "Train utterances", f"Train {unit}", "Test utterances", f"Test {unit}",
                  "Feature dim", "Weight decay", "Epochs", "Short utterances left out"], rows)


def pretraining_tables(p: Dict[str, Any]) -> str:
    fa = p.get("final_accuracy") or {}
    rows = [
        ["Steps trained", integer(p.get("steps"))],
        ["Max steps (config)" if not p.get("time_budget") else "Max steps (the time budget's)", integer(p.get("max_steps"))],
        [f"Final train loss (step {p.get('final_train_step')})", loss(p.get("final_train_loss"))],
        [f"Best train loss (step {p.get('best_train_step')})", loss(p.get("best_train_loss"))],
        [f"Final valid loss (step {p.get('final_valid_step')})", loss(p.get("final_valid_loss"))],
        [f"Best valid loss (step {p.get('best_valid_step')})", loss(p.get("best_valid_loss"))],
        [f"Final mean InfoNCE accuracy (%, {fa.get('split', DASH)}, step {fa.get('step', DASH)})", pct(fa.get("mean"))],
        ["Throughput (audio seconds per second, median)", fixed(p.get("audio_seconds_per_second"), 1)],
        ["Precision (matrix products)", p.get("precision") or DASH],
        ["Wall time (seconds, first to last log event)", fixed(p.get("wall_time_seconds"), 1)],
        ["Parameters", integer(p.get("parameters"))],
        ["Train utterances", integer(p.get("train_utterances"))],
    ]
    tb = p.get("time_budget")
    if tb:
        rows.insert(2, ["Time budget (train.max_minutes)",
                        f"{tb['minutes']:g} min: {integer(tb['steps'])} steps at {fixed(tb['seconds_per_step'], 3)} s per step"])
    parts = [table(["Quantity", "Value"], rows)]
    acc_rows = []
    for split in ("valid", "train"):
        acc = p.get(f"final_{split}_accuracy")
        if acc:
            acc_rows.append([f"{split} (step {p.get(f'final_{split}_step')})"] + [pct(a) for a in acc]
                            + [pct(p.get(f"final_{split}_accuracy_mean"))])
    if acc_rows:
        k = max(len(r) for r in acc_rows) - 2
        parts.append("Final InfoNCE accuracy (%) per prediction step k:\n\n"
                     + table(["Split"] + [f"k={i}" for i in range(1, k + 1)] + ["mean"], acc_rows))
    notes = []
    if p.get("steps") is not None and p.get("max_steps") is not None and not p.get("finished"):
        notes.append(f"_Pretraining is not finished: {p['steps']} of {p['max_steps']} steps._")
    if p.get("resumed"):
        notes.append("_The run was resumed at least once; the wall time includes the time it was stopped._")
    if p.get("skipped_log_lines"):
        notes.append(f"_{p['skipped_log_lines']} unreadable line(s) of log.jsonl were skipped._")
    return "\n\n".join(parts + notes)


def data_table(data: Dict[str, Any]) -> str:
    rows, errors = [], []
    for split, d in data.items():
        if d is None:
            continue
        if "error" in d:
            errors.append(f"- {split}: `{d['manifest']}` could not be read ({d['error']})")
            continue
        rows.append([split, integer(d.get("utterances")), hours(d.get("hours")), integer(d.get("speakers")), f"`{d['manifest']}`"])
    out = table(["Split", "Utterances", "Hours", "Speakers", "Manifest"], rows, "lrrrl") if rows else ""
    return "\n\n".join(x for x in (out, "\n".join(errors)) if x)


def _config_lines(cfg: Dict[str, Any]) -> List[str]:
    def get(*path):
        node = cfg
        for k in path:
            if not isinstance(node, dict) or k not in node:
                return None
            node = node[k]
        return node

    lines = [
        f"- model: encoder {get('model', 'encoder', 'channels')} channels ({get('model', 'encoder', 'norm')} norm), "
        f"context {get('model', 'context', 'kind')} {get('model', 'context', 'hidden')} x {get('model', 'context', 'layers')}, "
        f"{get('model', 'predictor', 'kind')} predictor, {get('model', 'predictor', 'steps')} steps",
        f"- loss: {get('loss', 'negatives')} negatives ({get('loss', 'sampling')}), temperature {get('loss', 'temperature')}",
        f"- data: windows of {get('data', 'window_samples')} samples, batch {get('data', 'batch_size')}, sampler {get('data', 'sampler')}",
        f"- training: lr {get('train', 'lr')}, {get('train', 'schedule')} schedule, warm-up {get('train', 'warmup_steps')}, "
        f"max steps {get('train', 'max_steps')}, amp {get('train', 'amp')}, seed {get('train', 'seed')}",
    ]
    return lines + ["- the full configuration is under `config` in report.json"]


# ------------------------------------------------------------------------------------ document


def render(report: Dict[str, Any]) -> str:
    """The whole ``report.md``."""
    missing = report.get("missing") or {}
    details = report.get("details") or {}
    v = report.get("versions") or {}
    run = report.get("run_dir", "")
    out: List[str] = [f"# CPC run report: `{run.rstrip('/').split('/')[-1]}`", ""]
    out.append(f"Created {report.get('created')} by cpc_speech {v.get('cpc_speech')} (torch {v.get('torch')}, "
               f"numpy {v.get('numpy')}, Python {v.get('python')}, {v.get('platform')}). Run folder: `{run}`. "
               "All numbers also in `report.json`.")
    out += ["", "## Headline", "", headline_markdown(report), ""]
    absent = [s for s in ("phone_probe", "speaker_probe", "finetune") if s in missing]
    if absent:
        out.append("Missing: " + "; ".join(f"{SECTION_TITLES[s]} ({missing[s]})" for s in absent) + ".")
        out.append("")

    # ---- fine-tuning
    out += ["## Phone recognition: CTC fine-tuning (PER)", ""]
    if "finetune" in report:
        out += [_finetune_caption(details.get("finetune") or {}), "", per_table(report["finetune"]), ""]
    elif "finetune_by_locale" in report:
        runs = report["finetune_by_locale"]
        if any(c.get("per_test") is not None for r in runs.values() for c in r.values()):
            out += ["Test PER (%) by run:", "", per_summary_table(runs, "test"), ""]
        out += ["Dev PER (%) by run:", "", per_summary_table(runs, "dev"), ""]
        for name, conds in runs.items():
            out += [f"### `{name}`", "", _finetune_caption((details.get("finetune_by_locale") or {}).get(name) or {}), "",
                    per_table(conds), ""]
    else:
        out += [f"_Missing: {missing.get('finetune', 'no fine-tuning results')}._", ""]
    out.append("PER = (substitutions + deletions + insertions) / reference phones; lower is better. "
               "The best epoch is chosen on dev PER; test PER is measured once, for that epoch.")
    out.append("")
    from cpc_speech.report.paper_table import paper_table_markdown

    out += paper_table_markdown(report)

    # ---- probes
    for section, title in PROBE_TITLES.items():
        out += [f"## {title}", ""]
        if section not in report:
            out += [f"_Missing: {missing.get(section, 'no result file')}._", ""]
            continue
        d = details.get(section) or {}
        maj = d.get("majority") or {}
        desc = [f"protocol `{d.get('protocol')}`", f"{d.get('layer')} features", f"{d.get('classes')} classes"]
        if maj:
            desc.append(f"majority class `{maj.get('label')}` at {pct(maj.get('accuracy'))}%")
        if d.get("test_dropped_unseen_speakers"):
            desc.append(f"{d['test_dropped_unseen_speakers']} test utterance(s) of unseen speakers dropped")
        out += ["; ".join(desc) + f"; from `{d.get('file')}`.", "", probe_table(report[section]), ""]
        notes = probe_notes(report[section], maj)
        if notes:
            out += [f"Model: {notes}.", ""]

    from cpc_speech.report.evaluations import evaluations_markdown

    out += evaluations_markdown(report)

    # ---- pretraining
    out += ["## Pretraining", "", pretraining_tables(report["pretraining"]), ""]
    if "validation" in missing:
        out += [f"_Missing: {missing['validation']}._", ""]
    out += ["### Configuration", ""] + _config_lines(report.get("config") or {}) + [""]

    out += ["## Data", ""]
    if report.get("data"):
        out += [data_table(report["data"]), ""]
    if "data" in missing:
        out += [f"_Missing: {missing['data']}._", ""]

    # ---- plots
    plots = report.get("plots") or {}
    out += ["## Plots", ""]
    titles = {"loss": "Training and validation loss", "accuracy_by_k": "InfoNCE accuracy per prediction step",
              "phone_confusion": "Phone confusion matrix (rows normalised)", "phone_accuracy": "Per-phone accuracy",
              "finetune_curves": "Fine-tuning curves (dev PER)"}
    if plots:
        for key, rel in plots.items():
            title = titles.get(key) or (f"Fine-tuning curves {key[len('finetune_curves_'):]} (dev PER)"
                                        if key.startswith("finetune_curves_") else key)
            out += [f"- [{title}]({rel})"]
        out.append("")
        for key, rel in plots.items():
            out += [f"![{titles.get(key, key)}]({rel})", ""]
    else:
        out += ["_No plots._", ""]

    # ---- provenance
    seeds = report.get("seeds") or {}
    out += ["## Provenance", ""]
    out += [f"- {k}: {v.get(k)}" for k in ("cpc_speech", "torch", "numpy", "matplotlib", "python", "platform") if k in v]
    out.append("- seeds: " + ", ".join(f"{k} {val}" for k, val in seeds.items()))
    for key, src in (report.get("sources") or {}).items():
        if isinstance(src, dict):
            out += [f"- {key} `{n}`: `{p}`" for n, p in src.items()]
        else:
            out.append(f"- {key}: `{src}`")
    if missing:
        out += ["", "Missing sections:", ""] + [f"- {SECTION_TITLES.get(k, k)}: {why}" for k, why in missing.items()]
    out.append("")
    return "\n".join(out)
