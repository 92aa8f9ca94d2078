"""``cpc-speech report RUN_DIR``: one report per pretraining run, from the files the other commands wrote.

Inputs (in ``RUN_DIR``; only ``config.yaml`` and ``log.jsonl`` are required, a missing result file
omits its section and both the JSON (``missing``) and the Markdown say so):

* ``config.yaml``, ``log.jsonl``, ``manifests.json``: written by ``cpc-speech pretrain``;
* ``results/phone_probe.json``, ``results/speaker_probe.json``, ``results/speaker_probe_window.json``:
  written by ``cpc-speech probe`` (record :class:`cpc_speech.results.ProbeResult`);
* ``results/abx.json`` (``cpc-speech abx``) and ``results/units_<name>.json`` (``cpc-speech quantize
  --results``): optional; their sections ``abx`` and ``units`` are described in
  :mod:`cpc_speech.report.evaluations`;
* ``results/finetune.json`` and/or ``results/finetune_<name>.json``: written by
  ``cpc-speech finetune --out`` (record :class:`cpc_speech.results.FinetuneResult`);
  ``<name>`` is a locale and/or a label budget, e.g. ``fr``, ``fr_1h``, ``en_10min``.
* ``results/label_budgets_<locale>.json``: optional, written by the Common Voice recipe; with them
  the report gains ``commonvoice_table``, the table of Riviere et al. (2020), described in
  :mod:`cpc_speech.report.paper_table`.

``--results DIR`` replaces ``RUN_DIR/results``; ``--phone-probe``, ``--speaker-probe``,
``--speaker-probe-window`` and ``--finetune`` (repeatable) name files explicitly.

Outputs: ``RUN_DIR/report.json``, ``RUN_DIR/report.md`` and ``RUN_DIR/plots/*.png``, each written
atomically (temporary file + rename).

``report.json`` (fractions are in [0, 1]; PER can exceed 1; absent values are ``null``)::

    {
      "format_version": 1,
      "created": "2025-01-31T12:00:00+00:00",          # UTC, ISO 8601
      "run_dir": "/abs/path/of/RUN_DIR",
      "phone_probe": {                                 # present iff its result file is
        "model" | "mfcc" | "random_init": {            # (baselines the probe skipped are absent)
          "accuracy": 0.62,                            # test frame accuracy
          "train_utterances", "train_frames", "fit_utterances", "fit_frames",
          "dev_utterances", "dev_frames", "test_utterances", "test_frames": int,
          "short_utterances": int,                     # left out: too short for one frame
          "feature_dim": int,
          "best": {"weight_decay", "epochs", "dev_accuracy", "optimizer"},
          "per_class_accuracy": {phone: fraction or null}
        }
      },
      "speaker_probe":        {same names: {"accuracy", the sizes above + "train_examples",
                               "fit_examples", "dev_examples", "test_examples", "speakers",
                               "feature_dim", "best"}},
      "speaker_probe_window": {same as speaker_probe, CPC-paper window protocol},
      "finetune": {                                    # exactly one fine-tuning result file
        "frozen" | "unfrozen" | "mfcc" | "scratch": {
          "per_dev": 0.31, "per_test": 0.33 or null, "train_hours": 1.0,
          "train_utterances", "best_epoch", "epochs_run": int, "stopped_early": bool,
          "initial_dev_per": fraction, "seconds": float,
          "curve": [{"epoch", "train_loss", "dev_per", "dev_loss"}, ...]
        }
      },
      "finetune_by_locale": {"<name>": {same as finetune}},   # instead of "finetune" when there
                                                              # are several files; name from the
                                                              # file (finetune.json -> "default")
      "pretraining": {
        "steps", "max_steps": int, "finished": bool, "train_events", "valid_events": int,
        "final_train_loss", "final_train_step", "best_train_loss", "best_train_step",
        "final_valid_loss", "final_valid_step", "best_valid_loss", "best_valid_step",
        "final_train_accuracy", "final_valid_accuracy": [fraction per prediction step k],
        "final_train_accuracy_mean", "final_valid_accuracy_mean": fraction,
        "final_accuracy": {"split": "valid" (or "train" without validation), "step", "per_step", "mean"},
        "final_lr": float,
        "audio_seconds_per_second": median over train log events (first interval left out),
        "audio_seconds_per_second_last": float,
        "wall_time_seconds": first to last log event (includes downtime when "resumed"),
        "resumed": bool, "parameters", "device", "world_size", "train_utterances",
        "batches_per_epoch", "skipped_log_lines": int
      },
      "config": {the full run config, as in config.yaml},
      "data": {"train" | "valid": {"manifest", "utterances", "hours", "speakers"}
                                  or {"manifest", "error"} or null},
      "versions": {"cpc_speech", "torch", "numpy", "matplotlib", "python", "platform"},   # of the
                                                                  # environment writing the report
      "seeds": {"pretrain", "phone_probe", "speaker_probe", "speaker_probe_window",
                "finetune" or "finetune_by_locale": {name: seed}},
      "details": {section: {"file", ...}},  # probes: task, protocol, layer, classes, majority
                                            # {"label", "accuracy"}, model_path, seed; fine-tuning:
                                            # locale, budget, phones, hours_limit, head, features,
                                            # seed, model, data {train/dev/test: used, hours,
                                            # phones, too_short_for_ctc, ...}, seconds
      "sources": {"config", "log", "manifests", section: file path},
      "missing": {section: why},            # phone_probe, speaker_probe, speaker_probe_window,
                                            # finetune, data, validation, pretraining
      "plots": {"loss" | "accuracy_by_k" | "phone_confusion" | "phone_accuracy" |
                "finetune_curves" | "finetune_curves_<name>": "plots/<file>.png"}
    }

``report.md`` renders the same numbers: a headline table (phone / speaker accuracy of the model,
MFCC, random init and the majority class, in percent with one decimal, "**below MFCC**" /
"**below random init**" when the model loses), the PER tables (model frozen, model fine-tuned,
MFCC, scratch; per run when there are several; "**worse than MFCC**" / "**worse than scratch**"),
the probe details, the pretraining summary, data, links to the plots and provenance.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Dict

from cpc_speech.atomic import atomic_write_text
from cpc_speech.report.collect import Collected, collect
from cpc_speech.report.inputs import Inputs, ReportError, find_inputs
from cpc_speech.report.markdown import headline_markdown, render
from cpc_speech.types import PathLike

__all__ = ["ReportError", "Inputs", "find_inputs", "collect", "build_report", "write_report", "headline_markdown", "render"]


def build_report(run_dir: PathLike, **files: Any) -> Collected:
    """Read ``run_dir`` (and the result files; keyword arguments as :func:`find_inputs`)."""
    return collect(find_inputs(run_dir, **files))


def write_report(
    run_dir: PathLike,
    plots: bool = True,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
    **files: Any,
) -> Dict[str, Any]:
    """Build the report of ``run_dir`` and write ``report.json``, ``report.md`` and
    ``plots/*.png`` into it; returns the report dict."""
    from cpc_speech.runlock import hold_output

    find_inputs(run_dir, **files)  # a missing run folder is an error, not created by the lock
    with hold_output(run_dir, "report", create=False):
        col = build_report(run_dir, **files)
        run = col.inputs.run_dir
        if plots:
            from cpc_speech.report.plots import make_plots

            col.report["plots"] = make_plots(col, run / "plots", log=log)
        report = col.report
        atomic_write_text(run / "report.json", json.dumps(report, indent=2, allow_nan=False) + "\n")
        atomic_write_text(run / "report.md", render(report))
    return report
