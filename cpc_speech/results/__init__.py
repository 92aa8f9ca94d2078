"""Typed result records: the one description of the result files that the producers (probes,
fine-tuning, ABX, k-means units) write and the report reads.

* :class:`ProbeResult` is a ``cpc-speech probe`` file (``results/phone_probe.json``,
  ``results/speaker_probe*.json``); each compared feature set is a :class:`ProbeEntry`.
* :class:`FinetuneResult` is a ``cpc-speech finetune --out`` file (``results/finetune*.json``);
  each condition is a :class:`ConditionResult`.
* :class:`AbxResult` is a ``cpc-speech abx --out`` file (``results/abx.json``); each feature set
  is an :class:`AbxScores`.
* :class:`UnitsResult` is a ``cpc-speech quantize`` quality file (``UNITS_DIR/quality.json``,
  ``results/units_<name>.json``).

Each file record has ``from_json(path_or_dict, where)``, ``to_dict()``, ``to_json()`` and
``write(path)`` (atomic). The JSON layout is the producers': ``from_json(d).to_dict() == d`` for
every file they write (keys a record does not name are kept in ``extra``). ``from_json`` checks
the type of every named key and raises :class:`ResultError` naming the file and the key.
"""

from cpc_speech.results.base import ResultError, finite, ordered, read_result_json
from cpc_speech.results.evaluation import (
    ABX_FORMAT_VERSION,
    ABX_ITEM_COUNTS,
    ABX_MODES,
    UNIT_QUALITY_KEYS,
    UNITS_FORMAT_VERSION,
    AbxResult,
    AbxScores,
    UnitsResult,
)
from cpc_speech.results.finetune import FINETUNE_CONDITIONS, SKIP_TOO_SHORT, SPLITS, ConditionResult, FinetuneResult
from cpc_speech.results.probe import (
    BEST_KEYS,
    PROBE_BASELINES,
    PROBE_NAMES,
    PROBE_TASKS,
    SIZE_KEYS,
    ProbeEntry,
    ProbeResult,
)

__all__ = [
    "ResultError", "finite", "ordered", "read_result_json",
    "ProbeEntry", "ProbeResult", "PROBE_BASELINES", "PROBE_NAMES", "PROBE_TASKS", "SIZE_KEYS", "BEST_KEYS",
    "ConditionResult", "FinetuneResult", "FINETUNE_CONDITIONS", "SKIP_TOO_SHORT", "SPLITS",
    "AbxScores", "AbxResult", "UnitsResult", "ABX_FORMAT_VERSION", "ABX_MODES", "ABX_ITEM_COUNTS",
    "UNITS_FORMAT_VERSION", "UNIT_QUALITY_KEYS",
]
