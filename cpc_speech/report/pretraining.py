"""The report's pretraining summary: ``log.jsonl`` events condensed (steps, losses, accuracy per
prediction step, throughput, wall time), and the config the run's checkpoint was trained with."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cpc_speech.results import finite


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
    # a time budget (train.max_minutes) sets the steps when it has measured the rate: its last word counts
    budget = next((e for e in reversed(events) if e.get("split") == "info" and "budget_steps" in e), None)
    if budget is not None:
        max_steps = budget["max_steps"]
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
        "time_budget": None if budget is None else {
            "minutes": finite(budget.get("budget_minutes")), "seconds_per_step": finite(budget.get("seconds_per_step")),
            "steps": budget.get("budget_steps"),
        },
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
