"""Where a benchmark script writes its JSON: ``--output``, or
``benchmarks/results/<name>-<machine>-<YYYY-MM-DD>.json``."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any, Dict, Optional

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(results: Dict[str, Any], name: str, machine: str, output: Optional[str] = None) -> Path:
    """Write ``results`` as JSON (atomically) and return the path."""
    path = Path(output) if output else RESULTS / f"{name}-{machine}-{datetime.date.today():%Y-%m-%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)
    print(f"wrote {path}")
    return path
