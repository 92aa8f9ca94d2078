"""The ``cpc-speech finetune --out`` result file (``results/finetune*.json``): a
:class:`FinetuneResult` holding one :class:`ConditionResult` per condition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cpc_speech.results.base import (
    FLAG, INTEGER, LIST, MAPPING, NUMBER, TEXT, Record, ResultError, finite, ordered, rebuild, split_keys, typed,
)

FINETUNE_CONDITIONS = ("frozen", "unfrozen", "mfcc", "scratch")  # preferred order
SPLITS = ("train", "dev", "test")
# why a split's utterance was left out (``data.<split>.skipped``); the clips too short for CTC
SKIP_TOO_SHORT = "too short for CTC"


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
    decoder: Optional[str] = None
    test_errors: Optional[Dict[str, int]] = None
    curve: Optional[List[Dict[str, Any]]] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    NUMBERS = ("per_dev", "per_test", "train_hours", "initial_dev_per", "seconds")
    OTHERS = ("train_utterances", "best_epoch", "epochs_run", "stopped_early", "decoder", "test_errors")
    CURVE_KEYS = ("epoch", "train_loss", "dev_per", "dev_loss")
    TYPES = {**{k: NUMBER for k in NUMBERS}, "train_utterances": INTEGER, "best_epoch": INTEGER, "epochs_run": INTEGER,
             "stopped_early": FLAG, "decoder": TEXT, "test_errors": MAPPING, "curve": LIST}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "ConditionResult":
        if not isinstance(data, dict) or finite(data.get("per_dev")) is None:
            raise ResultError(f"{where}.per_dev must be a number")
        known = typed(data, cls.TYPES, f"{where}.")
        for i, row in enumerate(known.get("curve") or []):
            if not isinstance(row, dict):
                raise ResultError(f"{where}.curve[{i}] must be an object with {', '.join(cls.CURVE_KEYS)}")
            typed(row, {"epoch": INTEGER, **{k: NUMBER for k in cls.CURVE_KEYS[1:]}}, f"{where}.curve[{i}].")
        extra, absent = split_keys(data, tuple(cls.TYPES))
        return cls(**{k: known.get(k) for k in cls.NUMBERS + cls.OTHERS}, curve=known.get("curve", []),
                   extra=extra, absent=absent)

    def to_dict(self) -> Dict[str, Any]:
        out = {k: getattr(self, k) for k in self.NUMBERS + self.OTHERS + ("curve",)}
        return rebuild(out, self.absent, self.extra)


def skipped_too_short(split: Any) -> Optional[int]:
    """The utterances of a ``data.<split>`` summary left out as too short for CTC (0 when it lists
    other reasons only); None when the summary has no ``skipped`` counts."""
    skipped = split.get("skipped") if isinstance(split, dict) else None
    if not isinstance(skipped, dict):
        return None
    n = skipped.get(SKIP_TOO_SHORT, 0)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


@dataclass
class FinetuneResult(Record):
    """A ``cpc-speech finetune`` result file: one :class:`ConditionResult` per condition (frozen,
    unfrozen, mfcc, scratch), the settings it ran with, the data splits (``data.<split>``: file,
    listed, used, ``skipped`` {reason: count}, hours, phones) and the phone set."""

    conditions: Dict[str, ConditionResult]
    config: Optional[Dict[str, Any]] = field(default_factory=dict)
    data: Optional[Dict[str, Any]] = field(default_factory=dict)
    phones: Optional[List[str]] = None
    seconds: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    KIND = "fine-tuning result"
    TYPES = {"config": MAPPING, "data": MAPPING, "phones": LIST, "seconds": NUMBER}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = KIND) -> "FinetuneResult":
        conds = data.get("finetune")
        if not isinstance(conds, dict) or not conds:
            raise ResultError(f"{where}: not a fine-tuning result file (no non-empty 'finetune' mapping; written by cpc-speech finetune --out?)")
        known = typed(data, cls.TYPES, f"{where}: ")
        split_info = known.get("data") or {}
        typed(split_info, {s: MAPPING for s in SPLITS}, f"{where}: data.")
        for s in SPLITS:
            if isinstance(split_info.get(s), dict):
                typed(split_info[s], {"used": INTEGER, "listed": INTEGER, "skipped": MAPPING, "hours": NUMBER}, f"{where}: data.{s}.")
        entries = {name: ConditionResult.from_dict(conds[name], f"{where}: finetune.{name}")
                   for name in ordered(conds, FINETUNE_CONDITIONS)}
        extra, absent = split_keys(data, ("finetune",) + tuple(cls.TYPES))
        return cls(conditions=entries, config=known.get("config", {}), data=known.get("data", {}), phones=known.get("phones"),
                   seconds=known.get("seconds"), extra=extra, absent=absent)

    def skipped_too_short(self) -> Dict[str, Optional[int]]:
        """{split: utterances left out as too short for CTC} (None: not recorded)."""
        return {s: skipped_too_short((self.data or {}).get(s)) for s in SPLITS}

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"finetune": {name: c.to_dict() for name, c in self.conditions.items()},
                               "config": self.config, "data": self.data, "phones": self.phones, "seconds": self.seconds}
        return rebuild(out, self.absent, self.extra)
