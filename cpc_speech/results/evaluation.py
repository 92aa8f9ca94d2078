"""The zero-resource evaluation result files: :class:`AbxResult` (``cpc-speech abx --out``,
``results/abx.json``) with one :class:`AbxScores` per feature set, and :class:`UnitsResult`
(``UNITS_DIR/quality.json``, ``cpc-speech quantize --results``, ``results/units_<name>.json``).

Error rates and shares are fractions; ``short_utterances`` counts clips with no feature frame at all
(shorter than the encoder's receptive field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from cpc_speech.results.base import (
    FLAG, INTEGER, LIST, MAPPING, NUMBER, TEXT, Record, ResultError, ordered, rebuild, split_keys, typed,
)
from cpc_speech.results.probe import PROBE_NAMES

ABX_FORMAT_VERSION = 1
ABX_MODES = ("within", "across")
# counts of ``results.<name>.items``
ABX_ITEM_COUNTS = ("items", "used", "no_features", "too_short", "files_without_features", "short_utterances")
UNITS_FORMAT_VERSION = 1
# the scalar figures of ``quality`` (``unit_quality``) that a report shows
UNIT_QUALITY_KEYS = ("pnmi", "purity", "unit_purity", "entropy_bits", "perplexity", "used_units", "max_unit_share")


def _version(data: Dict[str, Any], expected: int, where: str) -> Optional[int]:
    """The file's ``format_version`` (None: not written); an error when it is another one."""
    got = data.get("format_version")
    if got is not None and got != expected:
        raise ResultError(f"{where}: format_version is {got!r}; this version of cpc_speech reads {expected}")
    return got


@dataclass
class AbxScores:
    """One feature set's ABX: the error rate per mode (fraction; None: the mode had no cell), the
    layer and source of its features, the item counts (:data:`ABX_ITEM_COUNTS`), the per-mode
    cell details and the scoring time in seconds."""

    within: Optional[float] = None
    across: Optional[float] = None
    layer: Optional[str] = None
    features: Optional[str] = None
    items: Dict[str, int] = field(default_factory=dict)
    details: Dict[str, Any] = field(default_factory=dict)
    seconds: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    TYPES = {"within": NUMBER, "across": NUMBER, "layer": TEXT, "features": TEXT, "items": MAPPING,
             "details": MAPPING, "seconds": NUMBER}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> "AbxScores":
        if not isinstance(data, dict):
            raise ResultError(f"{where} must be an object with 'within' and/or 'across'")
        known = typed(data, cls.TYPES, f"{where}.")
        if known.get("within") is None and known.get("across") is None:
            raise ResultError(f"{where} has neither a 'within' nor an 'across' error")
        typed(known.get("items") or {}, {k: INTEGER for k in ABX_ITEM_COUNTS}, f"{where}.items.")
        extra, absent = split_keys(data, tuple(cls.TYPES))
        return cls(**{k: known.get(k) for k in cls.TYPES}, extra=extra, absent=absent)

    def to_dict(self) -> Dict[str, Any]:
        return rebuild({k: getattr(self, k) for k in self.TYPES}, self.absent, self.extra)


@dataclass
class AbxResult(Record):
    """An ABX result file: the headline error per mode (that of the first feature set), one
    :class:`AbxScores` per feature set (model, mfcc, random_init, ...), and the scoring settings."""

    results: Dict[str, AbxScores]
    within: Optional[float] = None
    across: Optional[float] = None
    item_file: Optional[str] = None
    layer: Optional[str] = None
    modes: Optional[List[str]] = None
    distance: Optional[str] = None
    max_size_group: Optional[int] = None
    max_x_across: Optional[int] = None
    seed: Optional[int] = None
    frame_rule: Optional[str] = None
    kl_normalised: Optional[bool] = None
    frame_seconds: Optional[float] = None
    seconds: Optional[float] = None
    format_version: Optional[int] = ABX_FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    KIND = "ABX result"
    TYPES = {"format_version": INTEGER, "within": NUMBER, "across": NUMBER, "item_file": TEXT, "layer": TEXT,
             "modes": LIST, "distance": TEXT, "max_size_group": INTEGER, "max_x_across": INTEGER, "seed": INTEGER,
             "frame_rule": TEXT, "kl_normalised": FLAG, "frame_seconds": NUMBER, "seconds": NUMBER}
    SETTINGS = ("item_file", "layer", "distance", "max_size_group", "max_x_across", "frame_rule", "seed")

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = KIND) -> "AbxResult":
        results = data.get("results")
        if not isinstance(results, dict) or not results:
            raise ResultError(f"{where}: not an ABX result file (no 'results' mapping; written by cpc-speech abx?)")
        _version(data, ABX_FORMAT_VERSION, where)
        known = typed(data, cls.TYPES, f"{where}: ")
        entries = {name: AbxScores.from_dict(results[name], f"{where}: results.{name}")
                   for name in ordered(results, PROBE_NAMES)}
        extra, absent = split_keys(data, ("results",) + tuple(cls.TYPES))
        return cls(results=entries, **{k: known.get(k) for k in cls.TYPES}, extra=extra, absent=absent)

    def headline(self) -> AbxScores:
        """The scores of the first feature set the producer listed."""
        return next(iter(self.results.values()))

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {k: getattr(self, k) for k in ("format_version", "within", "across")}
        out["results"] = {name: s.to_dict() for name, s in self.results.items()}
        out.update({k: getattr(self, k) for k in list(self.TYPES)[3:]})
        return rebuild(out, self.absent, self.extra)


@dataclass
class UnitsResult(Record):
    """A unit quality file: ``units`` k-means centroids of ``dim``-dimensional features (``name``,
    ``layer``, ``features`` folder), how many utterances got units (``short_utterances`` of them
    empty sequences), the ``quality`` against frame labels (:data:`UNIT_QUALITY_KEYS` plus frames,
    utterances, unit_share; None without labels) and the ABX of the one-hot units (None without items)."""

    units: int
    dim: Optional[int] = None
    seed: Optional[int] = None
    name: Optional[str] = None
    layer: Optional[str] = None
    features: Optional[str] = None
    assigned_utterances: Optional[int] = None
    short_utterances: Optional[int] = None
    unit_files: Optional[str] = None
    quality: Optional[Dict[str, Any]] = None
    abx: Optional[Dict[str, Optional[float]]] = None
    seconds: Optional[float] = None
    format_version: Optional[int] = UNITS_FORMAT_VERSION
    extra: Dict[str, Any] = field(default_factory=dict)
    absent: frozenset = field(default=frozenset(), repr=False, compare=False)

    KIND = "unit quality result"
    TYPES = {"format_version": INTEGER, "units": INTEGER, "dim": INTEGER, "seed": INTEGER, "name": TEXT, "layer": TEXT,
             "features": TEXT, "assigned_utterances": INTEGER, "short_utterances": INTEGER, "unit_files": TEXT,
             "quality": MAPPING, "abx": MAPPING, "seconds": NUMBER}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str = KIND) -> "UnitsResult":
        if "quality" not in data or not isinstance(data.get("units"), int):
            raise ResultError(f"{where}: not a unit quality file (no 'units' count and 'quality'; "
                              f"written by cpc-speech quantize --results?)")
        _version(data, UNITS_FORMAT_VERSION, where)
        known = typed(data, cls.TYPES, f"{where}: ")
        typed(known.get("quality") or {}, {k: INTEGER if k == "used_units" else NUMBER for k in UNIT_QUALITY_KEYS},
              f"{where}: quality.")
        typed(known.get("abx") or {}, {m: NUMBER for m in ABX_MODES}, f"{where}: abx.")
        extra, absent = split_keys(data, tuple(cls.TYPES))
        return cls(**{k: known.get(k) for k in cls.TYPES}, extra=extra, absent=absent)

    def to_dict(self) -> Dict[str, Any]:
        return rebuild({k: getattr(self, k) for k in self.TYPES}, self.absent, self.extra)
