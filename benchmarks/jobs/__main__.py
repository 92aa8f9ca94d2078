"""A measurement process: ``python -m benchmarks.jobs --child JOB_JSON --child-out RESULT_JSON``
(started by :func:`benchmarks.jobs.run_job`); runs the job and writes its result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from benchmarks.jobs import JOBS


def child_main(argv: List[str]) -> int:
    job = json.loads(argv[argv.index("--child") + 1])
    out = argv[argv.index("--child-out") + 1]
    res = JOBS[job["kind"]](job)
    Path(out).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
