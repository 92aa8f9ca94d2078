"""Settings machinery shared by every command's config dataclass.

* :func:`setting`: a dataclass field with the help metadata the command line is generated from;
* :func:`check_limits`: the range check behind every ``validate()``;
* :func:`to_dict` / :func:`from_dict`: a strict round trip between dataclasses and plain dicts
  (unknown keys are an error naming them);
* :func:`apply_overrides`: ``a.b=value`` overrides; :func:`read_settings_file` and
  :func:`save_config`: YAML/JSON files.

The config trees themselves live next to what they configure (:mod:`cpc_speech.config` for
pretraining, :mod:`cpc_speech.finetune.config`, :mod:`cpc_speech.probes.config`, ...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml


def setting(default: Any = dataclasses.MISSING, *, help: str = "", choices: Optional[Tuple[str, ...]] = None,
            group: Optional[str] = None, path: bool = False, parse: Any = None, default_factory: Any = dataclasses.MISSING,
            metavar: Optional[str] = None, aliases: Tuple[str, ...] = (), positional: bool = False) -> Any:
    """A dataclass field with the metadata the command line is generated from
    (:mod:`cpc_speech.cli.config_args`): ``help`` text, ``choices``, the ``group`` it is listed
    under, ``path`` (made absolute when given as a flag), a ``parse`` function for the flag, its
    ``metavar``, extra flag spellings (``aliases``, e.g. ``("-o",)``) and ``positional`` (an
    optional positional argument instead of a ``--flag``)."""
    meta = {"help": help, "choices": choices, "group": group, "path": path, "parse": parse, "metavar": metavar,
            "aliases": tuple(aliases), "positional": positional}
    return field(default=default, default_factory=default_factory, metadata=meta)


def _within(value: Any, rule: str) -> bool:
    if value is None:
        return rule.startswith("null or ")
    rule = rule[len("null or "):] if rule.startswith("null or ") else rule
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if rule[0] in "[(":
        lo, hi = (float(x) for x in rule[1:-1].split(","))
        return (value >= lo if rule[0] == "[" else value > lo) and (value <= hi if rule[-1] == "]" else value < hi)
    if rule == "finite":
        return True
    op, bound = rule.split()
    bound = float(bound)
    return {">=": value >= bound, ">": value > bound, "==": value == bound}[op]


def _describe(rule: str) -> str:
    bare = rule[len("null or "):] if rule.startswith("null or ") else rule
    text = f"in {bare}" if bare[0] in "[(" else "a finite number" if bare == "finite" else bare
    return f"null (default) or {text}" if bare != rule else text


def check_limits(cfg: Any, limits: Dict[str, str], strip: str = "") -> None:
    """Raise ``ValueError("train.max_steps must be >= 1, got -5")`` for the first value of ``cfg``
    outside its range in ``limits`` (keys relative to ``cfg`` after removing ``strip``)."""
    for key, rule in limits.items():
        node = cfg
        for part in key[len(strip):].split("."):
            node = getattr(node, part)
        values = node if isinstance(node, (list, tuple)) else [node]
        for v in values:
            if not _within(v, rule):
                shown = f"{key} values" if isinstance(node, (list, tuple)) else key
                raise ValueError(f"{shown} must be {_describe(rule)}, got {v!r}")


def require(cfg, names) -> None:
    """``ValueError("--model is required")`` for the first empty setting of ``names`` (settings
    a command cannot run without, named by their flag)."""
    for name in names:
        if not getattr(cfg, name):
            raise ValueError(f"--{name.replace('_', '-')} is required")


def check_flag_limits(cfg, limits) -> None:
    """:func:`~cpc_speech.settings.check_limits` with the error naming the flag
    (``--workers must be >= 0, got -1``)."""
    try:
        check_limits(cfg, limits)
    except ValueError as exc:
        key, rest = str(exc).split(" ", 1)
        raise ValueError(f"--{key.replace('_', '-')} {rest}") from None


def check_choices(cfg: Any, flags: bool = False, prefix: str = "") -> None:
    """``ValueError("batching must be one of random, length, got 'x'")`` for the first field of the
    dataclass ``cfg`` whose value is set (not None or "") and outside the ``choices`` of its
    :func:`setting`. argparse checks choices only for flags; every config's ``validate()`` calls this
    for the values of config files, ``key=value`` and Python. The field is named ``prefix + name``
    (``prefix="encoder."``), or with ``flags`` as on the command line: ``--state``, or the metavar of
    a positional."""
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if choices and value not in (None, "") and value not in choices:
            name = prefix + f.name
            if flags:
                name = (f.metadata.get("metavar") or f.name.upper()) if f.metadata.get("positional") else f"--{f.name.replace('_', '-')}"
            raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def to_dict(cfg: Any) -> Dict[str, Any]:
    """A plain, JSON/YAML-safe dict (tuples become lists)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return value

    return convert(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp)
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(args[0], value, where)
    if tp in (int, float) and isinstance(value, bool):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ValueError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: Any, data: Optional[Dict[str, Any]], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are an error. Values
    outside a field's ``choices`` are left to ``validate()`` (:func:`check_choices`), which names
    them as the user types them."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    data = {k: v for k, v in data.items() if k not in getattr(cls, "RETIRED_KEYS", ())}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is a value, not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ValueError(f"override {item!r}: the value is not valid YAML") from None
    return data


def save_config(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    data = to_dict(cfg)
    text = yaml.safe_dump(data, sort_keys=False) if path.suffix in (".yaml", ".yml") else json.dumps(data, indent=2)
    from cpc_speech.atomic import atomic_write_text

    atomic_write_text(path, text)


def split_section(spec: str | Path) -> Tuple[Path, Optional[str]]:
    """``conf/probe.yaml:phone.demo`` -> (``conf/probe.yaml``, ``"phone.demo"``); a spec without a
    ``:SECTION`` suffix (or naming an existing file) -> (path, None)."""
    text = str(spec)
    head, sep, section = text.rpartition(":")
    if sep and head and section and "/" not in section and "\\" not in section and not Path(text).exists():
        return Path(head), section
    return Path(text), None


def read_settings_file(path: str | Path) -> Dict[str, Any]:
    """The mapping in a YAML/JSON settings file; a one-line error naming the file when it is
    missing, not YAML/JSON or not a mapping. ``FILE:SECTION`` reads the mapping at the dotted key
    path SECTION of the file (``conf/probe.yaml:phone.demo`` is ``data["phone"]["demo"]``; a
    recipe file merges shared settings into its sections with YAML merge keys, ``<<: *default``)."""
    path, section = split_section(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    done = []
    for part in section.split(".") if section else []:
        if part not in data:
            where = f"section {'.'.join(done)!r}" if done else "the file"
            raise ValueError(f"{path}: no section {section!r} ({where} has: {', '.join(map(str, data)) or 'nothing'})")
        data = data[part]
        done.append(part)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: section {'.'.join(done)!r} is not a mapping of settings (got {type(data).__name__})")
    return dict(data)


def deep_merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
