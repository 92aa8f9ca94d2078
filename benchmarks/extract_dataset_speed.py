"""``extract_dataset`` time against the number of rows:
``python -m benchmarks.extract_dataset_speed [--rows 500 2000] [--block-rows 64]``.

Writes a parquet dataset of ``rows`` short FLAC clips (0.25 s tones) in a temporary folder and
extracts MFCC features from it (the model costs little, so the bookkeeping shows), one torch
thread; reports seconds and milliseconds per row for each size. Time per row that grows with the
number of rows means the extraction is not one pass. Writes
``benchmarks/results/extract-dataset-<machine>-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.results_file import write_results  # noqa: E402


def write_dataset(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf

    t = np.arange(4000) / 16000
    cells = []
    for i in range(rows):
        buf = io.BytesIO()
        sf.write(buf, (0.3 * np.sin(2 * np.pi * (100 + i % 200) * t)).astype(np.float32), 16000, format="FLAC")
        cells.append({"bytes": buf.getvalue(), "path": f"clip{i:06d}.flac"})
    ids = [f"clip{i:06d}" for i in range(rows)]
    pq.write_table(pa.table({"id": ids, "speaker_id": [f"s{i % 10}" for i in range(rows)], "audio": cells}), path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--block-rows", type=int, default=64)
    ap.add_argument("--output", help="result JSON (default: benchmarks/results/extract-dataset-<machine>-<date>.json)")
    args = ap.parse_args(argv)
    import torch

    from cpc_speech.features.datasets import extract_dataset

    torch.set_num_threads(1)
    results = {"cpu": cpu_model(), "host": socket.gethostname(), "block_rows": args.block_rows, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            data = Path(tmp) / f"d{rows}.parquet"
            write_dataset(data, rows)
            t0 = time.perf_counter()
            res = extract_dataset("mfcc", data, Path(tmp) / f"f{rows}", block_rows=args.block_rows)
            seconds = time.perf_counter() - t0
            assert res.computed == rows
            run = {"rows": rows, "seconds": round(seconds, 3), "ms_per_row": round(1000 * seconds / rows, 3)}
            results["runs"].append(run)
            print(f"{rows:6d} rows: {seconds:7.2f} s, {run['ms_per_row']:.2f} ms per row")
    write_results(results, "extract-dataset", socket.gethostname().split(".")[0], args.output)


if __name__ == "__main__":
    main()
