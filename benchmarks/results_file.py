"""Where a benchmark script writes its JSON: ``--output``, or
``benchmarks/results/<name>-<machine>-<YYYY-MM-DD>.json``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Dict, Optional

from cpc_speech.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(results: Dict[str, Any], name: str, machine: str, output: Optional[str] = None) -> Path:
    """Write ``results`` as JSON (atomically) and return the path."""
    path = Path(output) if output else RESULTS / f"{name}-{machine}-{datetime.date.today():%Y-%m-%d}.json"
    atomic_write_text(path, json.dumps(results, indent=1))
    print(f"wrote {path}")
    return path
