"""What every result record shares: the error type, number and type checks, reading a result
file's JSON object, and :class:`Record` (``from_json`` / ``to_json`` / ``write``).

A record keeps the keys it does not name in ``extra`` and remembers which named keys a file left
out (``absent``), so ``Kind.from_json(d, where).to_dict() == d`` for every file its producer writes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from cpc_speech.atomic import atomic_write_text


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


# JSON types of the named keys, checked by :func:`typed`
NUMBER = "a number"
INTEGER = "an integer"
TEXT = "a string"
FLAG = "true or false"
MAPPING = "an object"
LIST = "a list"
_CHECKS = {
    NUMBER: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    INTEGER: lambda v: isinstance(v, int) and not isinstance(v, bool),
    TEXT: lambda v: isinstance(v, str),
    FLAG: lambda v: isinstance(v, bool),
    MAPPING: lambda v: isinstance(v, dict),
    LIST: lambda v: isinstance(v, list),
}


def typed(data: Mapping[str, Any], types: Mapping[str, str], prefix: str) -> Dict[str, Any]:
    """The keys of ``types`` that ``data`` has, each checked to be null or of its JSON type;
    :class:`ResultError` ``"<prefix><key> must be <type> or null, got <json>"`` otherwise
    (``prefix``: e.g. ``"f.json: "`` or ``"f.json: results.model."``)."""
    out = {}
    for key, kind in types.items():
        if key not in data:
            continue
        value = data[key]
        if value is not None and not _CHECKS[kind](value):
            shown = json.dumps(value)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ResultError(f"{prefix}{key} must be {kind} or null, got {shown}")
        out[key] = value
    return out


def split_keys(data: Mapping[str, Any], named) -> Tuple[Dict[str, Any], frozenset]:
    """(the keys of ``data`` not in ``named``, the keys of ``named`` that ``data`` lacks)."""
    return {k: v for k, v in data.items() if k not in named}, frozenset(k for k in named if k not in data)


def rebuild(out: Dict[str, Any], absent, extra: Mapping[str, Any]) -> Dict[str, Any]:
    """``out`` without the ``absent`` keys, then the ``extra`` ones: a file's dict again."""
    out = {k: v for k, v in out.items() if k not in absent}
    out.update(extra)
    return out


class Record:
    """Reading and writing shared by the result records; subclasses define ``from_dict(data,
    where, ...)`` and ``to_dict()``, and ``KIND`` (what the file is, for messages)."""

    KIND = "result"

    @classmethod
    def from_dict(cls, data: Dict[str, Any], where: str, **options: Any) -> "Record":  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def from_json(cls, source: Union[str, Path, Mapping[str, Any]], where: Optional[str] = None, **options: Any):
        """The record of a result file (a path) or of its already parsed dict; ``where`` names it in
        errors (default: the path, or the kind of file)."""
        if isinstance(source, Mapping):
            return cls.from_dict(dict(source), where or cls.KIND, **options)
        return cls.from_dict(read_result_json(source), where or str(source), **options)

    @classmethod
    def read(cls, path: Union[str, Path], **options: Any):
        return cls.from_json(path, str(path), **options)

    def to_json(self) -> str:
        """The file's text, as the producers write it (indented JSON, no trailing newline)."""
        return json.dumps(self.to_dict(), indent=2)

    def write(self, path: Union[str, Path]) -> Path:
        """Write the file atomically (temporary file + rename); returns its path."""
        return atomic_write_text(path, self.to_json())
