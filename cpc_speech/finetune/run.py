"""CTC phone-recognition fine-tuning with limited labels, and its baselines: the conditions of a run
in turn, in one output folder (:class:`cpc_speech.engine.run_dir.RunDir`).

Conditions (each trains the same CTC head, :class:`cpc_speech.finetune.head.CTCHead`):

* ``frozen``: on the features of the pretrained model, kept fixed (features computed once and
  cached in memory as float16: 51 kB per second of audio for 256 dimensions);
* ``unfrozen``: head and pretrained model trained together, the pretrained part at
  ``lr * backbone_lr_scale``;
* ``mfcc``: on MFCC + deltas (:func:`cpc_speech.mfcc.mfcc_features`), standardised with
  training-set statistics;
* ``scratch``: the pretrained model's architecture with random weights, trained end to end at
  ``lr * scratch_lr_scale``.

The epochs, early stopping and test decoding of one condition are in :mod:`cpc_speech.finetune.loop`.

Every condition writes ``<output_dir>/<condition>/last.pt`` (training state after each epoch),
``best.pt`` (the best weights) and, once finished, ``result.json``, and appends one record per
epoch to ``<output_dir>/log.jsonl``. ``<output_dir>/inputs.json`` records the labelled data and the
pretrained weights (hashes) the folder was computed from; rerunning with ``resume`` refuses a folder
of other inputs, skips finished conditions and continues an interrupted one from its last epoch. Shuffling and
dropout are seeded per epoch, so an interrupted and resumed run gives the same numbers as an
uninterrupted one. All checkpoint files are written atomically and load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch

from cpc_speech.results import ConditionResult, FinetuneResult
from cpc_speech.settings import save_config, to_dict
from cpc_speech.engine.checkpoint import FINETUNE_KIND, read_checkpoint, weights_fingerprint
from cpc_speech.engine.device import pick_device, set_threads
from cpc_speech.engine.run_dir import RunDir, check_resumable
from cpc_speech.finetune.conditions import ConditionSources
from cpc_speech.finetune.config import CONFIG_NAME, LEGACY_DEFAULTS, RESUMABLE, FinetuneConfig, FinetuneError, read_settings
from cpc_speech.finetune.data import FinetuneData, all_utterances, prepare_data
from cpc_speech.finetune.head import CTCHead
from cpc_speech.finetune.loop import ConditionTraining, EpochCallback, clone_state
from cpc_speech.runlock import hold_output


INPUTS_NAME = "inputs.json"  # what the conditions of an output folder are computed from
INPUTS_VERSION = 1


@dataclass
class TrainedCondition:
    """One trained condition: its result record and (when trained in this process) the networks."""

    name: str
    record: Dict[str, Any]
    head: Optional[CTCHead] = None
    backbone: Optional[torch.nn.Module] = None


def _tqdm_log(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


class Finetuner:
    """Runs the configured conditions; see the module docstring.

    ``progress``: tqdm bars; ``log``: a callable for one-line messages (default: silent unless
    ``progress``, then stderr). ``resume``: continue/skip what ``output_dir`` already holds
    (otherwise an output folder with checkpoints of a condition to run is an error).
    """

    def __init__(self, cfg: FinetuneConfig, progress: bool = True, resume: bool = False, log: Optional[Callable[[str], None]] = None):
        self.cfg = cfg.validate()
        self.progress = progress
        self.resume = resume
        self.log = log or (_tqdm_log if progress else (lambda m: None))
        self.data: Optional[FinetuneData] = None
        self.device = pick_device(cfg.device, key="device")
        self.sources = ConditionSources(self.cfg, self.device, lambda: all_utterances(self.prepare()), progress)
        self.run_dir = RunDir(cfg.output_dir) if cfg.output_dir else None
        self._frozen_head: Optional[Dict[str, torch.Tensor]] = None  # the frozen condition's best head
        self._done: Dict[str, TrainedCondition] = {}  # conditions finished (or found finished) in this run
        self._inputs_checked = False

    def pretrained(self):
        """The pretrained model (loaded once, eval mode, never modified)."""
        return self.sources.pretrained()

    def frozen_features(self) -> Dict[str, torch.Tensor]:
        """The cached features of the pretrained model for every utterance (id -> (frames, dim))."""
        return self.sources.frozen_features()

    def prepare(self) -> FinetuneData:
        """Read targets, manifest and splits; filter; choose the training subset (once)."""
        if self.data is None:
            self.data = prepare_data(self.cfg, self.sources.encoder(), self.log)
        return self.data

    def _condition_dir(self, name: str) -> Optional[Path]:
        return self.run_dir.path / name if self.run_dir else None

    def _check_output_dir(self) -> None:
        """Write (or, resuming, compare) the config next to the checkpoints."""
        if self.run_dir is None:
            return
        out = self.run_dir.path
        out.mkdir(parents=True, exist_ok=True)
        path = out / CONFIG_NAME
        if path.is_file() and self.resume:
            check_resumable({**LEGACY_DEFAULTS, **read_settings(path)}, to_dict(self.cfg), RESUMABLE, out,
                            "use a new --output-dir", error=FinetuneError)
        if not self.resume:
            busy = [c for c in self.cfg.conditions if (out / c / "last.pt").exists() or (out / c / "result.json").exists()]
            if busy:
                raise FinetuneError(
                    f"{out} already holds checkpoints of {', '.join(busy)}; pass --resume to continue, or use a new --output-dir"
                )
        save_config(self.cfg, path)

    def run(self, on_epoch_end: Optional[EpochCallback] = None) -> Dict[str, Any]:
        """Train every configured condition; returns the result dict (see :func:`run_finetune`)."""
        t0 = time.time()
        set_threads(self.cfg.threads)
        self._check_output_dir()
        data = self.prepare()
        results = {}
        in_conditions = 0.0
        for name in self.cfg.conditions:
            t1 = time.time()
            results[name] = self.train_condition(name, on_epoch_end).record
            in_conditions += time.time() - t1
        # this run's own overhead + every condition's training time (cumulative over resumptions)
        seconds = (time.time() - t0 - in_conditions) + sum(r["seconds"] for r in results.values())
        return {
            "finetune": results,
            "phones": data.inventory.class_names,
            "config": to_dict(self.cfg),
            "data": {
                "train": {**data.train.summary(), "pool_utterances": data.train_pool, "speakers": data.subset.speakers},
                "dev": data.dev.summary(),
                "test": data.test.summary() if data.test else None,
                "blank": data.inventory.blank,
            },
            "seconds": seconds,
        }

    def _check_inputs(self) -> None:
        """Record (or, resuming, compare) in ``output_dir/inputs.json`` what every condition is
        computed from: the labelled data and the pretrained weights. A folder of another model or
        data is refused, so a resumed run never reuses stale conditions."""
        if self._inputs_checked or self.run_dir is None:
            return
        model = weights_fingerprint(self.pretrained()) if self.cfg.model else None
        inputs = {"format_version": INPUTS_VERSION, "data": self.prepare().fingerprint(), "model": model}
        path = self.run_dir.path / INPUTS_NAME
        if path.is_file():
            old = self.run_dir.read_json(INPUTS_NAME)
            if not isinstance(old, dict) or old.get("format_version") != INPUTS_VERSION:
                raise FinetuneError(f"{path}: not a fine-tuning inputs record of format {INPUTS_VERSION}; use a new --output-dir")
            changed = [k for k in ("model", "data") if old.get(k) != inputs[k]]
            if changed:
                what = " and ".join({"model": "pretrained weights", "data": "labelled data"}[k] for k in changed)
                raise FinetuneError(f"{self.run_dir.path} holds fine-tuning of other {what} ({path} differs); use a new --output-dir")
        else:
            self.run_dir.write_json(INPUTS_NAME, inputs)
        self._inputs_checked = True

    def _finished(self, name: str) -> Optional[TrainedCondition]:
        """The result of condition ``name`` that an earlier run of this folder finished, if any."""
        cdir = self._condition_dir(name)
        if cdir is None or not (cdir / "result.json").is_file():
            return None
        if not self.resume:
            raise FinetuneError(f"{cdir} already holds a finished result; pass --resume to reuse it")
        path = cdir / "result.json"
        try:
            record = json.loads(path.read_text())
            ConditionResult.from_dict(record, name)
        except (OSError, ValueError) as exc:  # a ResultError or a JSON error
            raise FinetuneError(f"{path}: not a finished condition result ({exc}); delete it to train {name} again") from None
        if record.get("data_fingerprint") != self.prepare().fingerprint():
            raise FinetuneError(f"{cdir / 'result.json'}: was computed on different data; use a new --output-dir")
        self.log(f"{name}: finished earlier (dev PER {record['per_dev']:.4f}), skipping")
        return TrainedCondition(name, record)

    def train_condition(self, name: str, on_epoch_end: Optional[EpochCallback] = None) -> TrainedCondition:
        """Train (or resume, or load the finished result of) one condition."""
        if name in self._done:
            return self._done[name]
        cfg = self.cfg
        self._check_inputs()
        finished = self._finished(name)
        if finished is not None:
            self._done[name] = finished
            return finished
        slots = self.run_dir.slots(name) if self.run_dir else None
        resuming = slots is not None and slots.last.is_file()
        start_head = None
        if name == "unfrozen" and cfg.unfrozen_init == "frozen" and not resuming:
            start_head = self.frozen_head()
        t_start = time.time()
        run = ConditionTraining(cfg, self.prepare(), name, self.sources.source(name), self.sources, slots, start_head, resuming,
                                t_start, self.progress, self.run_dir)
        if resuming:
            if not self.resume:
                raise FinetuneError(f"{slots.last} exists; pass --resume to continue it")
            run.resume()
            state = run.state
            self.log(f"{name}: resuming after epoch {state['epoch']} (best dev PER {state['best_dev_per']:.4f} at epoch {state['best_epoch']})")
        if run.state["initial_dev_per"] is None:
            run.start()
        run.fit(on_epoch_end)
        record = run.result()
        ConditionResult.from_dict(record, f"fine-tuning result of {name}")  # what _finished will accept
        if self.run_dir is not None:
            self.run_dir.write_json(Path(name) / "result.json", record)
        if name == "frozen":
            self._frozen_head = clone_state(run.head)
        self.log(
            f"{name}: dev PER {record['per_dev']:.4f}"
            + (f", test PER {record['per_test']:.4f}" if record["per_test"] is not None else "")
            + f" (best epoch {record['best_epoch']} of {record['epochs_run']}, {record['seconds']:.1f} s)"
        )
        result = TrainedCondition(name, record, run.head, run.source.backbone if name != "frozen" else self.sources.pretrained())
        self._done[name] = result
        return result

    def frozen_head(self) -> Dict[str, torch.Tensor]:
        """The frozen condition's best head (its weights and normalisation buffers): trained in
        this run, read from ``output_dir/frozen/best.pt`` when that condition finished earlier, or
        trained now."""
        if self._frozen_head is None:
            cdir = self._condition_dir("frozen")
            if cdir is not None and (cdir / "result.json").is_file() and self.resume:
                self.train_condition("frozen")  # checks that it was computed on this data
                self._frozen_head = read_checkpoint(cdir / "best.pt", kind=FINETUNE_KIND)["head"]
            else:
                self.log("unfrozen: starts from the frozen condition's best head; training that first")
                self.train_condition("frozen")
        return self._frozen_head


def run_finetune(
    cfg: FinetuneConfig,
    progress: bool = True,
    resume: bool = False,
    out: Optional[str] = None,
    on_epoch_end: Optional[EpochCallback] = None,
    log: Optional[Callable[[str], None]] = None,
) -> Dict[str, Any]:
    """Run fine-tuning and its baselines; write the result JSON to ``out`` (atomically) if given.

    Result::

        {"finetune": {<condition>: {"per_dev", "per_test", "train_hours", "train_utterances",
                                    "best_epoch", "curve": [{"epoch", "train_loss", "dev_per"}, ...],
                                    "initial_dev_per", "epochs_run", "stopped_early", "dev_errors",
                                    "test_errors", "seconds", ...}, ...},
         "phones": [class names], "config": {...}, "data": {...}, "seconds": s}

    ``cfg.output_dir`` and ``out`` are locked for the whole run (:mod:`cpc_speech.runlock`), which
    also checks before training that they can be written.
    """
    with contextlib.ExitStack() as stack:
        run_dir = None
        if cfg.output_dir:
            if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
                raise FinetuneError(f"--output-dir {cfg.output_dir} is a file, not a folder")
            run_dir = RunDir(cfg.output_dir)
            stack.enter_context(run_dir.lock("finetune"))
            run_dir.remove_temporaries(*(p.name for p in run_dir.path.iterdir() if p.is_dir()))
        if out:
            if Path(out).is_dir():
                raise FinetuneError(f"--out {out} is a folder; give the result file's name")
            stack.enter_context(hold_output(out, "finetune", kind="file"))
        result = Finetuner(cfg, progress=progress, resume=resume, log=log).run(on_epoch_end)
        if out:
            FinetuneResult.from_json(result, str(out)).write(out)
        if run_dir is not None:
            run_dir.write_json("result.json", result)
    return result
