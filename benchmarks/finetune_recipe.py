"""Which CTC head and schedule learns? ``python -m benchmarks.finetune_recipe --finetune-dir DIR``.

Reads the settings of a finished fine-tuning stage (``DIR/finetune_config.yaml``, as the recipe's
stage 7 writes it, e.g. ``exp/demo/finetune``), then trains the head-only conditions (``frozen``
and ``mfcc``; ``--conditions`` may add ``unfrozen``/``scratch``) once per variant: a variant is a
JSON object of :class:`cpc_speech.finetune.config.FinetuneConfig` fields merged over those
settings (``--variants '{"head_layers": 3}' '{"head_layers": 3, "head_norm": true}'``, or
``--variants @file`` with one object per line). Features are computed once per (model, layer, precision) and shared by the
variants. Prints, per variant and condition, dev/test PER, the best epoch, the dev-PER curve and the
seconds, and writes JSON (``benchmarks/results/finetune-recipe-<machine>-<date>.json``).
Nothing is written into DIR.
"""

from __future__ import annotations

import argparse
import datetime
import json
import socket
import time
import warnings
from pathlib import Path


def _variants(items):
    out = []
    for item in items:
        if item.startswith("@"):
            out += [json.loads(line) for line in Path(item[1:]).read_text().splitlines() if line.strip()]
        else:
            out.append(json.loads(item))
    return out


def main(argv=None) -> int:
    import torch
    import yaml

    from benchmarks.machine import cpu_model
    from benchmarks.results_file import write_results
    from cpc_speech.finetune.config import config_from_dict
    from cpc_speech.finetune.run import Finetuner

    p = argparse.ArgumentParser(prog="python -m benchmarks.finetune_recipe", description=__doc__.split("\n\n")[0])
    p.add_argument("--finetune-dir", required=True, help="a fine-tuning output folder holding finetune_config.yaml")
    p.add_argument("--variants", nargs="+", default=["{}"], help="JSON objects of settings, or @FILE (default: the saved settings)")
    p.add_argument("--conditions", default="frozen,mfcc", help="conditions to train per variant (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--output", help="JSON path")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

    base = yaml.safe_load((Path(args.finetune_dir) / "finetune_config.yaml").read_text())
    base.update(output_dir=None, threads=args.threads)
    shared = {}
    rows = []
    for variant in _variants(args.variants):
        for cond in [c.strip() for c in args.conditions.split(",") if c.strip()]:
            cfg = config_from_dict({**base, **variant, "conditions": [cond]})
            ft = Finetuner(cfg, progress=False)
            # the pretrained features depend on the model, the layer and the precision; MFCCs on nothing
            key = (cfg.model, cfg.features, cfg.precision)
            ft.sources.frozen_cache, ft.sources.mfcc_cache = shared.get(key), shared.get("mfcc")
            t0 = time.time()
            record = ft.train_condition(cond).record
            seconds = time.time() - t0
            shared[key], shared["mfcc"] = ft.sources.frozen_cache, ft.sources.mfcc_cache
            row = {"variant": variant, "condition": cond, "per_dev": record["per_dev"], "per_test": record["per_test"],
                   "initial_dev_per": record["initial_dev_per"], "best_epoch": record["best_epoch"],
                   "epochs_run": record["epochs_run"], "dev_curve": [c["dev_per"] for c in record["curve"]],
                   "seconds": seconds}
            rows.append(row)
            test = "-" if row["per_test"] is None else f"{100 * row['per_test']:.1f}"
            curve = " ".join(f"{100 * v:.0f}" for v in row["dev_curve"][4::5])
            print(f"{json.dumps(variant)} {cond}: dev {100 * row['per_dev']:.1f} test {test} % PER, best epoch "
                  f"{row['best_epoch']}/{row['epochs_run']}, {seconds:.0f} s; dev PER every 5 epochs: {curve}", flush=True)
    out = {"schema": "cpc_speech.finetune_recipe/1", "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": socket.gethostname(), "cpu_model": cpu_model(), "threads": args.threads, "base": base, "runs": rows}
    write_results(out, "finetune-recipe", out["machine"], args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
