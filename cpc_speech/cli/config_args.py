"""Command-line options generated from a flat config dataclass.

A command whose settings are one dataclass (e.g. ``FinetuneConfig``) gets, from
:func:`add_config_arguments`:

* ``--config FILE``: a YAML/JSON file of settings to start from;
* one ``--field-name`` flag per field, typed from the field's annotation, with the help text,
  choices and group of :func:`cpc_speech.settings.setting` metadata and the default in the help;
* ``key=value`` positional overrides (values read as YAML), as ``cpc-speech pretrain`` has.

A nested config (``PretrainConfig``: sections ``model.encoder``, ``loss``, ``data``, ``train``...)
gets one dotted flag per scalar field from :func:`add_nested_arguments` (``--train.lr``,
``--data.batch-size``), listed in one ``--help`` group per section, read back with
:func:`nested_flags`.

``--config FILE:SECTION`` reads the mapping at a dotted key path of the file
(``--config recipes/librispeech/conf/probe.yaml:phone.demo``, see
:func:`cpc_speech.settings.read_settings_file`).

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
    if default is None or default == "" or "default:" in text:  # the help text says what an absent value means
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
    of one group are listed together in ``--help``. A ``positional`` field (``SOURCE``) is the
    first positional argument that is not a ``key=value`` override (argparse cannot mix an
    optional positional with a list of them); ``validate()`` says when it is missing."""
    skip = set(skip)
    positional = []
    hints = typing.get_type_hints(cls)
    made: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kwargs = _flag_kwargs(f, hints[f.name])
        if kwargs is None:
            continue
        if f.metadata.get("positional"):
            positional.append((f.metadata.get("metavar") or f.name.upper(), kwargs["help"]))
            continue
        group_name = f.metadata.get("group")
        if group_name and groups and group_name in groups:
            if group_name not in made:
                made[group_name] = parser.add_argument_group(groups[group_name])
            target = made[group_name]
        else:
            target = parser
        target.add_argument("--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ()), dest=f.name, **kwargs)
    parser.add_argument("--config", metavar="FILE[:SECTION]", help=config_help)
    names = " ".join(name for name, _ in positional)
    example = next((f"{f.name}={f.default}" for f in dataclasses.fields(cls) if f.name not in skip and type(f.default) in (int, float)), "key=value")
    parser.add_argument("overrides", nargs="*", metavar=f"{names} key=value" if names else "key=value",
                        help="; ".join(f"{name}: {text}" for name, text in positional) + ("; then " if positional else "")
                        + f"settings overrides (the flags' names with _ for -, values read as YAML), e.g. {example}")


def _nested_fields(cls: Any, prefix: str = ""):
    """(section, dotted key, field, annotation) of every field of ``cls`` and its nested dataclasses."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _nested_fields(tp, f"{prefix}{f.name}.")
        else:
            yield prefix.rstrip("."), prefix + f.name, f, tp


def add_nested_arguments(parser: argparse.ArgumentParser, cls: Any) -> None:
    """One ``--section.key`` flag per scalar field of the nested dataclass ``cls`` (dashes for
    underscores: ``--data.batch-size``), one argument group per section titled with the section
    field's help. Lists and other structured values stay ``key=value`` / file only."""
    keys = []
    groups: Dict[str, Any] = {}
    for section, key, f, tp in _nested_fields(cls):
        kwargs = _flag_kwargs(f, tp)
        if kwargs is None:
            continue
        if section not in groups:
            owner, meta = cls, {}
            for part in section.split("."):
                meta = {g.name: g for g in dataclasses.fields(owner)}[part].metadata
                owner = typing.get_type_hints(owner)[part]
            groups[section] = parser.add_argument_group(f"{section}: {meta['help']}" if meta.get("help") else section)
        if "action" not in kwargs and "choices" not in kwargs:
            kwargs.setdefault("metavar", {int: "N", float: "X"}.get(_base_type(tp), "TEXT"))
        keys.append(key)
        groups[section].add_argument("--" + key.replace("_", "-"), dest=key, **kwargs)
    parser.set_defaults(_nested_keys=tuple(keys))


def nested_flags(args: argparse.Namespace) -> Dict[str, Any]:
    """The dotted flags actually given (:func:`add_nested_arguments`) as a nested dict."""
    out: Dict[str, Any] = {}
    for key in getattr(args, "_nested_keys", ()):
        if key in vars(args):
            node = out
            *sections, name = key.split(".")
            for part in sections:
                node = node.setdefault(part, {})
            node[name] = getattr(args, key)
    return out


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
    skip = set(skip)
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name in vars(args) and f.name not in skip}
    positional = [f.name for f in dataclasses.fields(cls) if f.metadata.get("positional")]
    free = list(positional)
    overrides = []
    for item in getattr(args, "overrides", None) or []:
        if "=" in item and item.split("=", 1)[0].strip().split(".")[0] in known:
            overrides.append(item)
        elif free:  # SOURCE / OUT_DIR: the first items that are no override of a known key
            flags[free.pop(0)] = item
        elif positional and "=" not in item:
            raise ValueError(f"unexpected argument {item!r} (only {' '.join(p.upper() for p in positional)} is positional)")
        else:
            overrides.append(item)  # refused below, naming it
    if overrides:
        given = apply_overrides({}, overrides)
        unknown = set(given) - known
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
        data.update(given)
    for f in dataclasses.fields(cls):
        if f.name in flags:
            value = flags[f.name]
            if f.metadata.get("path") and value is not None:
                value = str(Path(value).resolve())
            data[f.name] = value
    cfg = from_dict(cls, data, where)
    return cfg.validate() if validate and hasattr(cfg, "validate") else cfg
