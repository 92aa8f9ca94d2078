"""``cpc-speech`` command line: one thin module per subcommand (parse, then delegate).

Each module in ``SUBCOMMANDS`` defines ``register(subparsers)``, which adds its parser and sets
``func`` to a ``run(args) -> int`` callable. Heavy imports happen inside ``run`` so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from cpc_speech import __version__

SUBCOMMANDS = ["synth", "prepare", "pretrain", "extract", "probe", "abx", "quantize", "finetune", "report", "bench", "info"]


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


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"cpc-speech {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m cpc_speech.cli
    sys.exit(main())
