"""Typed result records: the one description of the result files that probes and fine-tuning write
and the report reads.

* :class:`ProbeResult` is a ``cpc-speech probe`` file (``results/phone_probe.json``,
  ``results/speaker_probe*.json``); each compared feature set is a :class:`ProbeEntry`.
* :class:`FinetuneResult` is a ``cpc-speech finetune --out`` file (``results/finetune*.json``);
  each condition is a :class:`ConditionResult`.

The JSON layout is unchanged by these records: ``from_dict(d).to_dict() == d`` for every file the
producers write (keys the record does not name are kept in ``extra``). ``from_dict`` checks what
the report relies on and raises :class:`ResultError` naming the file and the key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

PROBE_BASELINES = ("mfcc", "random_init")
PROBE_NAMES = ("model",) + PROBE_BASELINES  # preferred order; other names follow
PROBE_TASKS = ("phone", "speaker")
FINETUNE_CONDITIONS = ("frozen", "unfrozen", "mfcc", "scratch")  # preferred order
SIZE_KEYS = (
    "train_utterances", "train_frames", "train_examples",
    "fit_utterances", "fit_frames", "fit_examples",
    "dev_utterances", "dev_frames", "dev_examples",
    "test_utterances", "test_frames", "test_examples",
    "short_utterances", "speakers",
)


class ResultError(ValueError):
    """A result file that does not have the layout of its kind; the message names file and key."""


def finite(x: Any) -> Optional[float]:
    """``x`` as a float when it is a finite number (not a bool); None otherwise."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def ordered(names, preferred) -> List[str]:
    """``names`` with those in ``preferred`` first, in that order, then the rest as given."""
    names = list(names)
    return [n for n in preferred if n in names] + [n for n in names if n not in preferred]


def _split(data: Dict[str, Any], named) -> tuple:
    known = {k: data[k] for k in named if k in data}
    extra = {k: v for k, v in data.items() if k not in named}
    return known, extra


def _absent(data: Dict[str, Any], named) -> frozenset:
    """The named keys a file did not have: :meth:`to_dict` leaves them out again."""
    return frozenset(k for k in named if k not in data)


def _without(out: Dict[str, Any], absent, extra: Dict[str, Any]) -> Dict[str, Any]:
    out = {k: v for k, v in out.items() if k not in absent}
    out.update(extra)
    return out


def read_result_json(path: Union[str, Path]) -> Dict[str, Any]:
    """A result file's JSON object; :class:`ResultError` naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ResultError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


# ------------------------------------------------------------------------------------ probes


@dataclass
class ProbeEntry:
    """One feature set's probe outcome: test ``accuracy`` (fraction), split sizes (utterances,
    frames, examples), the selected hyper-parameters ``best``, and for phones the per-class
    accuracy. Other keys (confusion matrix, dev curve, timings) stay in ``extra``."""

    accuracy: float
    sizes: Dict[str, int] = field(default_factory=dict)
    feature_dim: Optional[int] = None
    best: Optional[Dict[str, Any]] = None
    per_class_accuracy: Optional[Dict[str, Optional[float]]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    NAMED = ("accuracy", "feature_dim", "best", "per_class_accuracy") + SIZE_KEYS

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ProbeEntry":
        acc = finite(data.get("accuracy")) if isinstance(data, dict) else None
        if acc is None or not 0.0 <= acc <= 1.0:
            raise ResultError(f"{where}.accuracy must be a number in [0, 1]")
        known, extra = _split(data, cls.NAMED)
        best = known.get("best")
        pca = known.get("per_class_accuracy")
        return cls(accuracy=acc, sizes={k: known[k] for k in SIZE_KEYS if k in known},
                   feature_dim=known.get("feature_dim"), best=best if isinstance(best, dict) else None,
                   per_class_accuracy={str(k): finite(v) for k, v in pca.items()} if isinstance(pca, dict) else None,
                   extra=extra, absent=_absent(data, ("feature_dim", "best", "per_class_accuracy")))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"accuracy": self.accuracy, **self.sizes, "feature_dim": self.feature_dim,
                               "best": self.best, "per_class_accuracy": self.per_class_accuracy}
        return _without(out, self.absent, self.extra)


@dataclass
class ProbeResult:
    """A probe result file: the ``task`` (phone | speaker), its ``protocol`` (frame, frame+-N,
    utterance, window), the feature ``layer``, the class ``labels``, the majority-class baseline
    and one :class:`ProbeEntry` per compared feature set (model, mfcc, random_init, ...)."""

    task: str
    results: Dict[str, ProbeEntry]
    protocol: Optional[str] = None
    layer: Optional[str] = None
    labels: List[str] = field(default_factory=list)
    majority: Optional[Dict[str, Any]] = None
    model_path: Optional[str] = None
    seed: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    NAMED = ("task", "results", "protocol", "layer", "labels", "majority", "model_path", "seed")

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "probe result", task: Optional[str] = None) -> "ProbeResult":
        """Check and wrap a probe file's dict; ``task``: the task the caller expects."""
        results = data.get("results")
        if not isinstance(results, dict) or not results:
            raise ResultError(f"{where}: not a probe result file (no non-empty 'results' mapping; written by cpc-speech probe?)")
        got = data.get("task")
        if task is not None and got is not None and got != task:
            raise ResultError(f"{where}: is a {got} probe result, expected a {task} probe result")
        got = got or task
        if got not in PROBE_TASKS:
            raise ResultError(f"{where}: task must be one of {', '.join(PROBE_TASKS)}, got {got!r}")
        entries = {name: ProbeEntry.from_dict(results[name], f"{where}: results.{name}")
                   for name in ordered(results, PROBE_NAMES)}
        known, extra = _split(data, cls.NAMED)
        labels = known.get("labels")
        majority = known.get("majority")
        return cls(task=got, results=entries, protocol=known.get("protocol"), layer=known.get("layer"),
                   labels=list(labels) if isinstance(labels, list) else [],
                   majority=majority if isinstance(majority, dict) else None,
                   model_path=known.get("model_path"), seed=known.get("seed"), extra=extra,
                   absent=_absent(data, cls.NAMED))

    @classmethod
    def read(cls, path: Union[str, Path], task: Optional[str] = None) -> "ProbeResult":
        return cls.from_dict(read_result_json(path), str(path), task)

    def to_dict(self) -> Dict[str, Any]:
        out = {"task": self.task, "protocol": self.protocol, "layer": self.layer,
               "results": {name: e.to_dict() for name, e in self.results.items()},
               "labels": self.labels, "majority": self.majority, "model_path": self.model_path, "seed": self.seed}
        return _without(out, self.absent, self.extra)


# ------------------------------------------------------------------------------- fine-tuning


@dataclass
class ConditionResult:
    """One fine-tuning condition: dev and test phone error rate (fractions; PER can exceed 1) of
    the best epoch, its label budget, the epoch curve and, when decoded, the test error counts."""

    per_dev: float
    per_test: Optional[float] = None
    train_hours: Optional[float] = None
    train_utterances: Optional[int] = None
    best_epoch: Optional[int] = None
    epochs_run: Optional[int] = None
    stopped_early: Optional[bool] = None
    initial_dev_per: Optional[float] = None
    seconds: Optional[float] = None
    decoder: Optional[Any] = None
    test_errors: Optional[Dict[str, int]] = None
    curve: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    NUMBERS = ("per_dev", "per_test", "train_hours", "initial_dev_per", "seconds")
    OTHERS = ("train_utterances", "best_epoch", "epochs_run", "stopped_early", "decoder", "test_errors")
    CURVE_KEYS = ("epoch", "train_loss", "dev_per", "dev_loss")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ConditionResult":
        if not isinstance(data, dict) or finite(data.get("per_dev")) is None:
            raise ResultError(f"{where}.per_dev must be a number")
        known, extra = _split(data, cls.NUMBERS + cls.OTHERS + ("curve",))
        curve = known.get("curve")
        kwargs = {k: finite(known.get(k)) for k in cls.NUMBERS}
        kwargs.update({k: known.get(k) for k in cls.OTHERS})
        return cls(**kwargs, curve=[r for r in curve if isinstance(r, dict)] if isinstance(curve, list) else [],
                   extra=extra, absent=_absent(data, cls.NUMBERS + cls.OTHERS + ("curve",)))

    def to_dict(self) -> Dict[str, Any]:
        out = {k: getattr(self, k) for k in self.NUMBERS + self.OTHERS + ("curve",)}
        return _without(out, self.absent, self.extra)


@dataclass
class FinetuneResult:
    """A ``cpc-speech finetune`` result file: one :class:`ConditionResult` per condition (frozen,
    unfrozen, mfcc, scratch), the settings it ran with, the data splits and the phone set."""

    conditions: Dict[str, ConditionResult]
    config: Dict[str, Any] = field(default_factory=dict)
    data: Dict[str, Any] = field(default_factory=dict)
    phones: Optional[List[str]] = None
    seconds: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    NAMED = ("finetune", "config", "data", "phones", "seconds")

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = "fine-tuning result") -> "FinetuneResult":
        conds = data.get("finetune")
        if not isinstance(conds, dict) or not conds:
            raise ResultError(f"{where}: not a fine-tuning result file (no non-empty 'finetune' mapping; written by cpc-speech finetune --out?)")
        known, extra = _split(data, cls.NAMED)
        entries = {name: ConditionResult.from_dict(conds[name], f"{where}: finetune.{name}")
                   for name in ordered(conds, FINETUNE_CONDITIONS)}
        cfg, split = known.get("config"), known.get("data")
        phones = known.get("phones")
        return cls(conditions=entries, config=cfg if isinstance(cfg, dict) else {},
                   data=split if isinstance(split, dict) else {},
                   phones=list(phones) if isinstance(phones, list) else None,
                   seconds=finite(known.get("seconds")), extra=extra, absent=_absent(data, cls.NAMED))

    @classmethod
    def read(cls, path: Union[str, Path]) -> "FinetuneResult":
        return cls.from_dict(read_result_json(path), str(path))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"finetune": {name: c.to_dict() for name, c in self.conditions.items()},
                               "config": self.config, "data": self.data, "phones": self.phones, "seconds": self.seconds}
        return _without(out, self.absent, self.extra)
