"""Command-line options generated from a flat config dataclass.

A command whose settings are one dataclass (e.g. ``FinetuneConfig``) gets, from
:func:`add_config_arguments`:

* ``--config FILE``: a YAML/JSON file of settings to start from;
* one ``--field-name`` flag per field, typed from the field's annotation, with the help text,
  choices and group of :func:`cpc_speech.settings.setting` metadata and the default in the help;
* ``key=value`` positional overrides (values read as YAML), as ``cpc-speech pretrain`` has.

:func:`config_from_args` builds the dataclass: defaults, then the file, then ``key=value``
overrides, then the flags actually given (flags default to absent, so an unset flag never hides a
value from the file). Paths (``path=True`` metadata) given on the command line become absolute.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _comma_list(text: str) -> list:
    items = [t.strip() for t in text.split(",") if t.strip()]
    return [] if items == ["none"] else items


def _base_type(tp: Any) -> Any:
    """``X`` for ``Optional[X]``; the annotation itself otherwise."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _flag_kwargs(f: dataclasses.Field, tp: Any) -> Optional[Dict[str, Any]]:
    """argparse keyword arguments for field ``f`` of annotation ``tp``; None: no flag (nested
    dataclasses and other structured values are set with ``key=value`` or the file)."""
    meta = f.metadata
    base = _base_type(tp)
    kwargs: Dict[str, Any] = {"default": argparse.SUPPRESS}
    parse = meta.get("parse")
    if parse is not None:
        kwargs["type"] = parse
    elif base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif base is int:
        kwargs["type"] = int
    elif base is float:
        kwargs["type"] = _number
    elif base is str:
        kwargs["type"] = str
    elif typing.get_origin(base) in (list, typing.List) and typing.get_args(base) == (str,):
        kwargs["type"] = _comma_list
    else:
        return None
    if meta.get("choices"):
        kwargs["choices"] = list(meta["choices"])
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
    else:
        default = None
    shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    text = meta.get("help", "")
    if default is None:  # the help text says what an absent value means
        kwargs["help"] = text
    else:
        kwargs["help"] = f"{text} (default: {shown})" if text else f"default: {shown}"
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    return kwargs


def add_config_arguments(parser: argparse.ArgumentParser, cls: Any, groups: Optional[Mapping[str, str]] = None,
                         skip: Iterable[str] = (), config_help: str = "YAML/JSON settings file to start from (flags override it)") -> None:
    """Add ``--config``, one flag per field of dataclass ``cls`` (except ``skip``) and ``key=value``
    overrides to ``parser``. ``groups`` maps a field's ``group`` metadata to a group title; fields
    of one group are listed together in ``--help``."""
    skip = set(skip)
    hints = typing.get_type_hints(cls)
    made: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = _flag_kwargs(f, hints[f.name])
        if kwargs is None:
            continue
        group_name = f.metadata.get("group")
        if group_name and groups and group_name in groups:
            if group_name not in made:
                made[group_name] = parser.add_argument_group(groups[group_name])
            target = made[group_name]
        else:
            target = parser
        target.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
    parser.add_argument("--config", help=config_help)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings overrides, e.g. lr=1e-3 epochs=20")


def config_from_args(cls: Any, args: argparse.Namespace, config_file: Optional[str] = None,
                     read: Optional[Callable[[Path], Dict[str, Any]]] = None, where: str = "settings",
                     validate: bool = True, skip: Iterable[str] = ()) -> Any:
    """Build dataclass ``cls``: defaults < settings file (``config_file``, else ``args.config``) <
    ``key=value`` overrides < flags given. Unknown keys anywhere are an error naming them.
    ``validate=False`` leaves the ``validate()`` call to the caller (after it set more fields);
    ``skip``: fields whose flags the command defines itself (as in :func:`add_config_arguments`)."""
    from cpc_speech.settings import apply_overrides, from_dict, read_settings_file, to_dict

    data = to_dict(cls())
    known = set(data)
    config_file = config_file if config_file is not None else getattr(args, "config", None)
    if config_file:
        path = Path(config_file)
        loaded = (read or read_settings_file)(path)
        unknown = set(loaded) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
        data.update(loaded)
        where = str(path)
    overrides = list(getattr(args, "overrides", None) or [])
    if overrides:
        given = apply_overrides({}, overrides)
        unknown = set(given) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        data.update(given)
    skip = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in vars(args) and f.name not in skip:
            value = getattr(args, f.name)
            if f.metadata.get("path") and value is not None:
                value = str(Path(value).resolve())
            data[f.name] = value
    cfg = from_dict(cls, data, where)
    return cfg.validate() if validate and hasattr(cfg, "validate") else cfg
