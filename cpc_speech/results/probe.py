"""The ``cpc-speech probe`` result file (``results/phone_probe.json``, ``results/speaker_probe*.json``):
a :class:`ProbeResult` holding one :class:`ProbeEntry` per compared feature set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cpc_speech.results.base import (
    INTEGER, LIST, MAPPING, NUMBER, TEXT, Record, ResultError, finite, ordered, rebuild, split_keys, typed,
)

PROBE_BASELINES = ("mfcc", "random_init")
PROBE_NAMES = ("model",) + PROBE_BASELINES  # preferred order; other names follow
PROBE_TASKS = ("phone", "speaker")
SIZE_KEYS = (
    "train_utterances", "train_frames", "train_examples",
    "fit_utterances", "fit_frames", "fit_examples",
    "dev_utterances", "dev_frames", "dev_examples",
    "test_utterances", "test_frames", "test_examples",
    "short_utterances", "speakers",
)
# the selected hyper-parameters a report shows of ``best``
BEST_KEYS = ("weight_decay", "epochs", "dev_accuracy", "optimizer")


@dataclass
class ProbeEntry:
    """One feature set's probe outcome: test ``accuracy`` (fraction), split sizes (utterances,
    frames, examples; ``short_utterances``: those left out, too short for one example), the
    selected hyper-parameters ``best``, and for phones the per-class accuracy. Other keys
    (confusion matrix, dev curve, timings) stay in ``extra``."""

    accuracy: float
    sizes: Dict[str, int] = field(default_factory=dict)
    feature_dim: Optional[int] = None
    best: Optional[Dict[str, Any]] = None
    per_class_accuracy: Optional[Dict[str, Optional[float]]] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    TYPES = {"feature_dim": INTEGER, "best": MAPPING, "per_class_accuracy": MAPPING, **{k: INTEGER for k in SIZE_KEYS}}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ProbeEntry":
        acc = finite(data.get("accuracy")) if isinstance(data, dict) else None
        if acc is None or not 0.0 <= acc <= 1.0:
            raise ResultError(f"{where}.accuracy must be a number in [0, 1]")
        known = typed(data, cls.TYPES, f"{where}.")
        pca = known.get("per_class_accuracy")
        if pca is not None:
            typed(pca, {k: NUMBER for k in pca}, f"{where}.per_class_accuracy.")
        extra, absent = split_keys(data, ("accuracy",) + tuple(cls.TYPES))
        return cls(accuracy=data["accuracy"], sizes={k: known[k] for k in SIZE_KEYS if k in known},
                   feature_dim=known.get("feature_dim"), best=known.get("best"), per_class_accuracy=pca,
                   extra=extra, absent=absent & {"feature_dim", "best", "per_class_accuracy"})

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"accuracy": self.accuracy, **self.sizes, "feature_dim": self.feature_dim,
                               "best": self.best, "per_class_accuracy": self.per_class_accuracy}
        return rebuild(out, self.absent, self.extra)


@dataclass
class ProbeResult(Record):
    """A probe result file: the ``task`` (phone | speaker), its ``protocol`` (frame, frame+-N,
    utterance, window), the feature ``layer``, the class ``labels``, the majority-class baseline
    and one :class:`ProbeEntry` per compared feature set (model, mfcc, random_init, ...)."""

    task: str
    results: Dict[str, ProbeEntry]
    protocol: Optional[str] = None
    layer: Optional[str] = None
    labels: Optional[List[str]] = field(default_factory=list)
    majority: Optional[Dict[str, Any]] = None
    model_path: Optional[str] = None
    seed: Optional[int] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    KIND = "probe result"
    TYPES = {"protocol": TEXT, "layer": TEXT, "labels": LIST, "majority": MAPPING, "model_path": TEXT, "seed": INTEGER}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = KIND, task: Optional[str] = None) -> "ProbeResult":
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
        known = typed(data, cls.TYPES, f"{where}: ")
        extra, absent = split_keys(data, ("task", "results") + tuple(cls.TYPES))
        return cls(task=got, results=entries, protocol=known.get("protocol"), layer=known.get("layer"),
                   labels=known.get("labels"), majority=known.get("majority"),
                   model_path=known.get("model_path"), seed=known.get("seed"), extra=extra,
                   absent=absent)

    @classmethod
    def read(cls, path, task: Optional[str] = None) -> "ProbeResult":
        return cls.from_json(path, str(path), task=task)

    def to_dict(self) -> Dict[str, Any]:
        out = {"task": self.task, "protocol": self.protocol, "layer": self.layer,
               "results": {name: e.to_dict() for name, e in self.results.items()},
               "labels": self.labels, "majority": self.majority, "model_path": self.model_path, "seed": self.seed}
        return rebuild(out, self.absent, self.extra)
