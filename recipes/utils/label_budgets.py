#!/usr/bin/env python3
"""Nested label budgets of one locale, refused (never shrunk) when the train split is too small:

    label_budgets.py --manifest M --phones P --transcripts T --train-ids F --hours 1,5 \
        [--seed 0] --locale fr --out-dir DIR --plan PLAN.json
    label_budgets.py --check-hours 5,1       # prints "1 5" (exactly two budgets) or the problem
    label_budgets.py --status PLAN 5h        # exit 0 if drawn, else 1; prints the refusal's reason

Pool: the clips of the train id list that are in the manifest and have a phone transcription
(utterances with speaker = ``client_id``). A budget of H hours is *refused* when the pool holds less
than H hours: a "5 h" cell trained on 0.3 h would be a 0.3 h result under a 5 h label, and it would
repeat a smaller budget's training. The others are drawn largest first with
:func:`cpc_speech.finetune.subset.select_hours` (seeded, speakers visited round-robin, never over
the budget); each smaller budget is drawn from the subset of the next larger one, so the 1 h clips
are a part of the 5 h clips (the convention of Libri-light's 10 min / 1 h / 10 h sets: the larger
budget only adds labels). CPC_audio ships its Common Voice subsets as fixed lists
(``trainSeqs_1.0_uniform_new_version.txt``, ``trainSeqs_5.0_uniform_new_version.txt``) drawn from
speakers disjoint from its dev and test lists; dev and test here are the release's dev.tsv and
test.tsv (checked speaker-disjoint by ``cv_splits.py``).

Writes ``DIR/train_<H>h_ids.txt`` for each drawn budget (``<H>`` as given in ``--hours``) and the
plan, read by ``cpc-speech report`` (layout in :mod:`cpc_speech.report.paper_table`)::

    {"format_version": 1, "kind": "cpc_speech.label_budgets", "locale": "fr", "seed": 0, "nested": true,
     "pool": {"train_ids", "listed", "utterances", "hours", "speakers", "not_in_manifest", "no_transcript"},
     "budgets": [{"name": "1h", "hours": 1.0, "status": "drawn", "ids": path, "utterances": n,
                  "drawn_hours": h, "speakers": k, "drawn_from": "5h" or "pool"},
                 {"name": "5h", "hours": 5.0, "status": "refused", "available_hours": 0.3,
                  "reason": "not enough labelled audio: 0.300 h available"}]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

FORMAT_VERSION = 1
KIND = "cpc_speech.label_budgets"


def parse_hours(text: str) -> List[str]:
    """``"5,1"`` -> ``["1", "5"]``: distinct positive budgets as written, smallest first."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [float(t) for t in items]
    except ValueError:
        raise ValueError(f"--hours: expected comma-separated numbers of hours, got {text!r}") from None
    if not items or any(not v > 0 or v != v or v == float("inf") for v in values):
        raise ValueError(f"--hours: budgets must be positive numbers of hours, got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--hours: budget repeated in {text!r}")
    return [t for _, t in sorted(zip(values, items))]


def refusal(available_hours: float) -> str:
    return f"not enough labelled audio: {available_hours:.3f} h available"


def plan_budgets(pool, budgets: Sequence[str], seed: int) -> List[Dict[str, Any]]:
    """Draw the nested subsets of ``pool`` (utterances); one entry per budget, smallest first, each
    with ``status`` "drawn" (and ``utterances``: the chosen ones) or "refused" (and ``reason``)."""
    from cpc_speech.finetune.subset import select_hours

    available = sum(u.duration for u in pool) / 3600.0
    out: Dict[str, Dict[str, Any]] = {}
    source, source_name = list(pool), "pool"
    for name in sorted(budgets, key=float, reverse=True):
        hours = float(name)
        entry: Dict[str, Any] = {"name": f"{name}h", "hours": hours}
        if available < hours:
            entry.update(status="refused", available_hours=available, reason=refusal(available))
        elif not (subset := select_hours(source, hours, seed)).utterances:
            entry.update(status="refused", available_hours=available, reason=f"no training clip fits in {hours:g} h")
        else:
            entry.update(status="drawn", chosen=subset.utterances, utterances=len(subset.utterances),
                         drawn_hours=subset.hours, speakers=subset.speakers, drawn_from=source_name)
            source, source_name = subset.utterances, f"{name}h"
        out[name] = entry
    return [out[n] for n in budgets]


def build_pool(manifest: str, phones: str, transcripts: str, train_ids: str):
    """(usable train utterances, pool summary) of the train id list."""
    from cpc_speech.corpora.labels import read_id_list
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.finetune.targets import load_targets

    rows = {u.id: u for u in read_manifest(manifest)}
    targets, _ = load_targets(phones, transcripts)
    path = Path(train_ids)
    ids = read_id_list(path, "train id list").ids
    pool = [rows[i] for i in ids if i in rows and i in targets]
    summary = {
        "train_ids": str(path), "listed": len(ids), "utterances": len(pool),
        "hours": sum(u.duration for u in pool) / 3600.0, "speakers": len({u.speaker for u in pool}),
        "not_in_manifest": sum(i not in rows for i in ids),
        "no_transcript": sum(i in rows and i not in targets for i in ids),
    }
    return pool, summary


def write_plan(args) -> Dict[str, Any]:
    from cpc_speech.atomic import atomic_write_text
    from cpc_speech.corpora.labels import write_id_list

    budgets = parse_hours(args.hours)
    pool, summary = build_pool(args.manifest, args.phones, args.transcripts, args.train_ids)
    entries = plan_budgets(pool, budgets, args.seed)
    out_dir = Path(args.out_dir)
    for e in entries:
        chosen = e.pop("chosen", None)
        if chosen is not None:
            ids = out_dir / f"train_{e['name']}_ids.txt"
            write_id_list(ids, [u.id for u in chosen])
            e["ids"] = str(ids)
    plan = {"format_version": FORMAT_VERSION, "kind": KIND, "locale": args.locale, "seed": args.seed, "nested": True,
            "pool": summary, "budgets": entries}
    atomic_write_text(args.plan, json.dumps(plan, indent=2) + "\n")
    return plan


def budget_status(plan_path: str, name: str) -> Tuple[bool, str]:
    """(drawn?, "drawn" or the refusal's reason) of budget ``name`` (e.g. "5h") in a plan file."""
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    entry = next((e for e in plan.get("budgets") or [] if e.get("name") == name), None)
    if entry is None:
        raise ValueError(f"{plan_path}: no budget {name!r}")
    return entry["status"] == "drawn", "drawn" if entry["status"] == "drawn" else entry.get("reason", "refused")


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["--check-hours"]:  # check-hours TEXT: print the two budgets, smallest first
        try:
            budgets = parse_hours(argv[1] if len(argv) > 1 else "")
            if len(budgets) != 2:
                raise ValueError(f"give exactly two budgets SMALL,LARGE (the paper's: 1,5), got {len(budgets)}")
        except ValueError as exc:
            print(str(exc).replace("--hours: ", ""))
            return 1
        print(" ".join(budgets))
        return 0
    if argv[:1] == ["--status"] and len(argv) == 3:  # --status PLAN NAME: exit 0 if drawn, else 1 with the reason
        try:
            drawn, text = budget_status(argv[1], argv[2])
        except (ValueError, OSError, KeyError) as exc:
            print(f"error: {argv[1]}: cannot read the plan ({exc})", file=sys.stderr)
            return 2
        print(text)
        return 0 if drawn else 1
    p = argparse.ArgumentParser(prog="label_budgets.py", description=__doc__.splitlines()[0])
    for name in ("manifest", "phones", "transcripts", "train-ids", "hours", "locale", "out-dir", "plan"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        plan = write_plan(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pool = plan["pool"]
    print(f"{args.locale}: train pool {pool['utterances']} clips, {pool['hours']:.3f} h, {pool['speakers']} speakers")
    for e in plan["budgets"]:
        if e["status"] == "drawn":
            print(f"  {e['name']}: {e['utterances']} clips, {e['drawn_hours']:.3f} h, {e['speakers']} speakers (from {e['drawn_from']})")
        else:
            print(f"  {e['name']}: refused, {e['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
