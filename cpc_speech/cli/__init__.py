"""``cpc-speech`` command line: one thin module per subcommand (parse, then delegate).

Each module in ``SUBCOMMANDS`` (a module name; ``import_cmd`` registers ``import``) defines ``register(subparsers)``, which adds its parser and sets
``func`` to a ``run(args) -> int`` callable. Heavy imports happen inside ``run`` so ``--help`` is fast.
Errors: :func:`report_errors` prints every error as one line (``--debug`` for the traceback); a
command that writes a folder or file holds its lock (``cpc_speech.runlock.hold_output``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, List, Optional

from cpc_speech import __version__

SUBCOMMANDS = ["synth", "prepare", "pretrain", "extract", "probe", "abx", "quantize", "finetune", "report", "info",
               "export", "import_cmd"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cpc-speech",
        description="Contrastive Predictive Coding for speech: pretrain, extract features, probe, fine-tune, report.",
    )
    parser.add_argument("--version", action="version", version=f"cpc-speech {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"cpc_speech.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cpc_speech.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


# errors a user can act on: printed as one line ``cpc-speech CMD: error: ...`` (exit status 2)
USER_ERRORS = (ValueError, RuntimeError, OSError, ArithmeticError, MemoryError)


def error_message(exc: BaseException) -> str:
    """One line for ``exc``: an OSError as ``PATH: cause`` (``No space left on device``,
    ``Read-only file system``, ``Permission denied``, ``Is a directory``...), any other error its
    first non-empty line, without torch's advice to load checkpoints unsafely."""
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        return f"{where}: {exc.strerror}" if where != "" else exc.strerror
    if isinstance(exc, MemoryError):
        return "out of memory" + (f" ({exc})" if str(exc) else "")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if "weights_only" not in ln] or lines[:0]
    return lines[0] if lines else type(exc).__name__


def report_errors(command: str, func: Callable[[], int], debug: bool = False) -> int:
    """Run ``func`` and turn every error into one line on stderr naming the file or key (exit 2);
    an unexpected exception is one line too (exit 3) unless ``debug``. Temporary files are the
    writers' business (:mod:`cpc_speech.atomic` removes them on error)."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"cpc-speech {command}: error: {error_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if debug:
            raise
        print(f"cpc-speech {command}: internal error: {type(exc).__name__}: {error_message(exc)} "
              f"(re-run with --debug for the traceback)", file=sys.stderr)
        return 3


def parse_command_line(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that ``key=value`` overrides (and a command's SOURCE) may
    also follow flags: argparse fills a positional list only once, the later items join it."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and not any(x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parse_command_line(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return report_errors(args.command, lambda: args.func(args), debug=getattr(args, "debug", False))


if __name__ == "__main__":  # python -m cpc_speech.cli
    sys.exit(main())
