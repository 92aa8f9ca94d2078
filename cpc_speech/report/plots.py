"""The report's PNG plots (matplotlib, Agg canvas, no pyplot state), each written atomically.

* ``loss.png``: training and validation InfoNCE loss vs step;
* ``accuracy_by_k.png``: final InfoNCE accuracy per prediction step k (valid and train);
* ``phone_confusion.png``: the model's phone-probe confusion matrix, rows normalised (recall);
* ``phone_accuracy.png``: per-phone test accuracy, model next to the baselines;
* ``finetune_curves.png`` (``finetune_curves_<name>.png`` per run with several fine-tuning
  files): dev PER vs epoch per condition (epoch 0 = the untrained head).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from cpc_speech.report.collect import Collected
from cpc_speech.results import PROBE_NAMES

COLORS = {"model": "#1f77b4", "mfcc": "#ff7f0e", "random_init": "#7f7f7f",
          "frozen": "#1f77b4", "unfrozen": "#2ca02c", "scratch": "#7f7f7f"}
LABELS = {"model": "model", "mfcc": "MFCC", "random_init": "random init", "frozen": "model frozen",
          "unfrozen": "model fine-tuned", "scratch": "scratch"}
PLOT_GLOB = ("loss.png", "accuracy_by_k.png", "phone_confusion.png", "phone_accuracy.png", "finetune_curves*.png")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def plot_loss(train: Sequence[Dict[str, Any]], valid: Sequence[Dict[str, Any]], path: Path) -> Optional[Path]:
    pts_t = [(e["step"], e.get("loss")) for e in train if isinstance(e.get("loss"), (int, float))]
    pts_v = [(e["step"], e.get("loss")) for e in valid if isinstance(e.get("loss"), (int, float))]
    if not pts_t and not pts_v:
        return None
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    if pts_t:
        ax.plot(*zip(*pts_t), label="train", color="#1f77b4", lw=1.2, marker="." if len(pts_t) < 40 else None)
    if pts_v:
        ax.plot(*zip(*pts_v), label="valid", color="#d62728", lw=1.5, marker="o", ms=4)
    ax.set_xlabel("step")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("Pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def plot_accuracy_by_k(pre: Dict[str, Any], path: Path) -> Optional[Path]:
    curves = [(f"valid (step {pre['final_valid_step']})", pre.get("final_valid_accuracy"), "#d62728"),
              (f"train (step {pre['final_train_step']})", pre.get("final_train_accuracy"), "#1f77b4")]
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for label, acc, color in curves:
        ks = np.arange(1, len(acc) + 1)
        ax.plot(ks, [np.nan if a is None else 100 * a for a in acc], marker="o", label=label, color=color)
    ax.set_xlabel("prediction step k (frames ahead)")
    ax.set_ylabel("InfoNCE accuracy (%)")
    ax.set_title("Final per-step accuracy")
    ax.set_ylim(0, 100)
    ax.set_xticks(np.arange(1, max(len(c[1]) for c in curves) + 1))
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def plot_confusion(confusion: Sequence[Sequence[float]], labels: Sequence[str], path: Path, title: str) -> Optional[Path]:
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        return None
    n = cm.shape[0]
    labels = list(labels) if len(labels) == n else [str(i) for i in range(n)]
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, cm / np.maximum(totals, 1), np.nan)
    size = min(18.0, max(4.5, 0.22 * n + 2.5))
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["Blues"]
    cmap = cmap.with_extremes(bad="#dddddd") if hasattr(cmap, "with_extremes") else cmap
    im = ax.imshow(np.ma.masked_invalid(norm), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    font = max(4, min(9, int(300 / max(n, 1))))
    ax.set_xticks(np.arange(n))
    ax.set_yticks(np.arange(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=font)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("predicted phone")
    ax.set_ylabel("true phone")
    ax.set_title(title)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if np.isfinite(norm[i, j]) and norm[i, j] >= 0.005:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.6 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true phone's frames")
    return save_png(fig, path)


def plot_per_class(entries: Dict[str, Dict[str, Any]], labels: Sequence[str], path: Path, title: str) -> Optional[Path]:
    names = [n for n in PROBE_NAMES if isinstance(entries.get(n, {}).get("per_class_accuracy"), dict)]
    if not names:
        return None
    order = list(labels) or list(entries[names[0]]["per_class_accuracy"])
    n = len(order)
    width = 0.8 / len(names)
    fig = _figure(min(20.0, max(6.4, 0.2 * n * len(names) + 2)), 4.2)
    ax = fig.add_subplot()
    x = np.arange(n)
    for i, name in enumerate(names):
        pca = entries[name]["per_class_accuracy"]
        vals = [pca.get(lab) for lab in order]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, [np.nan if v is None else 100 * v for v in vals], width,
               label=f"{LABELS.get(name, name)} ({100 * entries[name]['accuracy']:.1f}%)", color=COLORS.get(name))
    ax.set_xticks(x)
    ax.set_xticklabels(order, rotation=90 if n > 12 else 0, fontsize=max(5, min(9, int(400 / max(n, 1)))))
    ax.set_ylim(0, 100)
    ax.set_ylabel("test frame accuracy (%)")
    ax.set_xlabel("phone")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save_png(fig, path)


def plot_finetune_curves(conditions: Dict[str, Dict[str, Any]], path: Path, title: str) -> Optional[Path]:
    curves = {}
    for name, c in conditions.items():
        pts = [(r["epoch"], r["dev_per"]) for r in c.get("curve") or [] if r.get("dev_per") is not None]
        if c.get("initial_dev_per") is not None:
            pts = [(0, c["initial_dev_per"])] + pts
        if pts:
            curves[name] = pts
    if not curves:
        return None
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    for name, pts in curves.items():
        ep, per = zip(*pts)
        line = ax.plot(ep, [100 * p for p in per], marker="o", ms=3, label=LABELS.get(name, name), color=COLORS.get(name))[0]
        best = conditions[name].get("best_epoch")
        if best is not None and best in ep:
            ax.plot([best], [100 * per[ep.index(best)]], marker="*", ms=12, color=line.get_color())
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = untrained head)")
    ax.set_ylabel("dev PER (%)")
    ax.set_title(title + " (star: best epoch)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def make_plots(col: Collected, plots_dir: Path, log: Callable[[str], None] = lambda m: None) -> Dict[str, str]:
    """Draw every plot the inputs allow into ``plots_dir``; returns {plot key: path relative to the
    run folder}. Plots of ours that no longer apply (e.g. a removed result file) are deleted."""
    rep = col.report
    made: Dict[str, Path] = {}

    def attempt(key: str, fn, *args) -> None:
        try:
            out = fn(*args)
        except Exception as exc:  # a plot must never cost the report
            log(f"warning: plot {key} failed: {type(exc).__name__}: {exc}")
            return
        if out is not None:
            made[key] = out

    attempt("loss", plot_loss, col.series["train"], col.series["valid"], plots_dir / "loss.png")
    attempt("accuracy_by_k", plot_accuracy_by_k, rep["pretraining"], plots_dir / "accuracy_by_k.png")
    phone = col.raw.get("phone_probe")
    if phone is not None:
        entry = phone["results"].get("model") or next(iter(phone["results"].values()))
        labels = phone.get("labels") or []
        which = "model" if "model" in phone["results"] else next(iter(phone["results"]))
        if entry.get("confusion"):
            attempt("phone_confusion", plot_confusion, entry["confusion"], labels, plots_dir / "phone_confusion.png",
                    f"Phone probe confusion ({LABELS.get(which, which)}, rows normalised)")
        attempt("phone_accuracy", plot_per_class, rep["phone_probe"], labels, plots_dir / "phone_accuracy.png",
                "Per-phone accuracy (phone probe, test)")
    if "finetune" in rep:
        attempt("finetune_curves", plot_finetune_curves, rep["finetune"], plots_dir / "finetune_curves.png", "Fine-tuning")
    for name, conds in (rep.get("finetune_by_locale") or {}).items():
        attempt(f"finetune_curves_{name}", plot_finetune_curves, conds, plots_dir / f"finetune_curves_{_safe(name)}.png",
                f"Fine-tuning {name}")
    keep = {p.resolve() for p in made.values()}
    if plots_dir.is_dir():
        for pattern in PLOT_GLOB:
            for stale in plots_dir.glob(pattern):
                if stale.resolve() not in keep:
                    stale.unlink(missing_ok=True)
    run = col.inputs.run_dir
    return {k: os.path.relpath(p, run) for k, p in made.items()}
