"""Entry point: ``python -m benchmarks.run [--quick] [--only train,extract,loader,matmul] ...``.

Runs :func:`cpc_speech.bench.main` with results written next to this file
(``benchmarks/results/<machine>-<YYYY-MM-DD>.json``). ``--help`` lists the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without installing the package
    sys.path.insert(0, str(ROOT))

from cpc_speech.bench import main  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


if __name__ == "__main__":
    sys.exit(main(default_out_dir=str(RESULTS), prog="python -m benchmarks.run"))
