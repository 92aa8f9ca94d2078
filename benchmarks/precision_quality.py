"""Does bf16 training learn as well as float32? ``python -m benchmarks.precision_quality``.

Pretrains the demo configuration (``recipes/librispeech/conf/demo.yaml``) on the demo corpus twice
from the same seed, once with ``train.amp=none`` (float32) and once with ``train.amp=bf16``, for the
same number of steps, then runs the recipe's frame phone probe (stage 3) on each model. Prints the
two accuracies, their difference, the training throughput of each, and writes JSON
(``benchmarks/results/precision-quality-<machine>-<date>.json`` by default). The probe extracts
features in the automatic precision for both models, so only the training precision differs.

Quality is not timing-sensitive, so this may run on a busy machine; the throughput figures are
then only indicative (use ``python -m benchmarks.run`` for speed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "librispeech" / "run.sh"
DEMO_CONF = ROOT / "recipes" / "librispeech" / "conf" / "demo.yaml"


def _run(cmd, log: Path, env) -> None:
    with open(log, "a") as f:
        f.write(f"$ {' '.join(map(str, cmd))}\n")
        f.flush()
        done = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}), see {log}: {' '.join(map(str, cmd))}")


def _throughput(run_dir: Path) -> float:
    from cpc_speech.report.pretraining import pretraining_section

    events = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return pretraining_section(events, 0, {}).get("audio_seconds_per_second")


def main(argv=None) -> int:
    from benchmarks.results_file import write_results

    p = argparse.ArgumentParser(prog="python -m benchmarks.precision_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", default="exp/precision-quality", help="corpus, runs and logs (default %(default)s)")
    p.add_argument("--steps", type=int, default=1500, help="pretraining steps of each run (default %(default)s, the demo's)")
    p.add_argument("--precisions", default="none,bf16", help="train.amp values to compare (default %(default)s)")
    p.add_argument("--output", help="JSON path (default benchmarks/results/precision-quality-<machine>-<date>.json)")
    args = p.parse_args(argv)

    work = Path(args.work_dir).resolve()
    data = work / "data"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if not (data / "train.tsv").is_file():  # the demo corpus, as `make demo` generates it
        _run(["bash", RECIPE, "--demo", "--stop-stage", "0", "--data-dir", data, "--exp-dir", work / "unused"], log, env)
    valid = data / "valid.tsv"
    results = {}
    for amp in [s.strip() for s in args.precisions.split(",") if s.strip()]:
        run_dir = work / f"run-{amp}"
        t0 = time.time()
        if not (run_dir / "checkpoints" / "best.pt").is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
            _run(["cpc-speech", "pretrain", "--config", DEMO_CONF, "--train-manifest", data / "train.tsv",
                  *(["--valid-manifest", valid] if valid.is_file() else []), "--output-dir", run_dir, "--no-progress",
                  f"train.amp={amp}", f"train.max_steps={args.steps}"], log, env)
        train_seconds = time.time() - t0
        _run(["bash", RECIPE, "--demo", "--stage", "3", "--stop-stage", "3", "--data-dir", data, "--exp-dir", run_dir], log, env)
        probe = json.loads((run_dir / "results" / "phone_probe.json").read_text())["results"]
        model = probe["model"]
        results[amp] = {
            "phone_accuracy": model["accuracy"],
            "mfcc_accuracy": (probe.get("mfcc") or {}).get("accuracy"),
            "train_wall_seconds": train_seconds,
            "audio_seconds_per_second": _throughput(run_dir),
        }
        print(f"train.amp={amp}: phone probe {100 * model['accuracy']:.1f} %, "
              f"{results[amp]['audio_seconds_per_second'] or 0:.1f} audio s/s, {train_seconds / 60:.1f} min", flush=True)
    names = list(results)
    out = {"schema": "cpc_speech.precision_quality/1", "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": socket.gethostname(), "steps": args.steps, "config": str(DEMO_CONF.relative_to(ROOT)), "runs": results}
    if len(names) == 2:
        a, b = names
        out["difference_points"] = 100 * (results[b]["phone_accuracy"] - results[a]["phone_accuracy"])
        print(f"difference ({b} - {a}): {out['difference_points']:+.2f} points")
    from benchmarks.machine import cpu_model

    out["cpu_model"] = cpu_model()
    write_results(out, "precision-quality", out["machine"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
