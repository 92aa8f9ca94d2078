"""torch vs onnxruntime speed of the exported feature model: ``python -m benchmarks.onnx_speed``.

For the ``default`` preset (256 channels, channel norm, GRU 256) and CPC_audio's default feature
model (same encoder, LSTM 256), random weights: exports the offline ONNX graph, then times
``extract_features`` (torch) and an onnxruntime session on the same ``--seconds`` of audio with
``--threads`` threads each (best of ``--repeats``), and checks that the outputs agree; then the same
audio in 20 ms pushes through StreamingExtractor and through the streaming graphs. Writes
``benchmarks/results/onnx-<YYYY-MM-DD>.json``.
"""

from __future__ import annotations

import argparse
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


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _streaming(model, wav, folder, threads, opts):
    """20 ms pushes through StreamingExtractor and through the two streaming ONNX graphs."""
    import onnxruntime as ort

    from cpc_speech.onnx_export import export_onnx, initial_streaming_state, recurrent_names, state_names
    from cpc_speech.features.streaming import StreamingExtractor

    export_onnx(model, folder, streaming=True, overwrite=True)
    enc = ort.InferenceSession(str(folder / "encoder_stream.onnx"), opts, providers=["CPUExecutionProvider"])
    ctx = ort.InferenceSession(str(folder / "context_step.onnx"), opts, providers=["CPUExecutionProvider"])
    pend_names, rec_names = state_names(model), recurrent_names(model)
    step = 320

    def torch_stream():
        stream = StreamingExtractor(model)
        return np.concatenate([stream.push(wav[i:i + step]) for i in range(0, wav.size, step)] + [stream.flush()])

    def ort_stream():
        state = initial_streaming_state(model)
        pending, rec = {k: state[k] for k in pend_names}, {k: state[k] for k in rec_names}
        out = []
        for i in range(0, wav.size + 1, step):
            final = i + step > wav.size
            z, *rest = enc.run(None, {"waveform": wav[None, i:i + step], "final": np.array(int(final), np.int64), **pending})
            pending = dict(zip(pend_names, rest))
            if z.shape[1]:
                c, *rest = ctx.run(None, {"z": z, **rec})
                rec = dict(zip(rec_names, rest))
                out.append(c[0])
            if final:
                break
        return np.concatenate(out)

    seconds = wav.size / 16000
    t_torch, a = _best(torch_stream, 2)
    t_ort, b = _best(ort_stream, 2)
    return {"stream_chunk_ms": 20, "stream_torch_real_time_factor": seconds / t_torch, "stream_onnxruntime_real_time_factor": seconds / t_ort,
            "stream_max_abs_difference": float(np.abs(a - b).max()) if a.shape == b.shape else None}


def main(argv=None) -> int:
    import onnxruntime as ort
    import torch

    import cpc_speech
    from cpc_speech.config import ContextConfig, preset
    from cpc_speech.model.cpc import CPCModel
    from cpc_speech.onnx_export import OPSET, export_onnx

    p = argparse.ArgumentParser(prog="python -m benchmarks.onnx_speed", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    lstm = preset("default")
    lstm.context = ContextConfig(kind="lstm", hidden=256)
    wav = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * 16000))).astype(np.float32)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in (("default (GRU 256)", preset("default")), ("CPC_audio default (LSTM 256)", lstm)):
            model = CPCModel(cfg).eval()
            path = export_onnx(model, Path(tmp) / "m.onnx", overwrite=True)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            t_torch, ref = _best(lambda: cpc_speech.extract_features(wav, sample_rate=16000, model=model, precision="fp32"), args.repeats)
            t_ort, got = _best(lambda: sess.run(None, {"waveform": wav[None]})[0][0], args.repeats)
            row = {"model": name, "audio_seconds": args.seconds, "threads": args.threads,
                   "torch_seconds": t_torch, "onnxruntime_seconds": t_ort,
                   "torch_real_time_factor": args.seconds / t_torch, "onnxruntime_real_time_factor": args.seconds / t_ort,
                   "max_abs_difference": float(np.abs(got - ref).max())}
            row.update(_streaming(model, wav, Path(tmp) / "stream", args.threads, opts))
            results.append(row)
            print(f"{name}: torch {row['torch_real_time_factor']:.0f}x real time, onnxruntime {row['onnxruntime_real_time_factor']:.0f}x "
                  f"({args.threads} thread(s), {args.seconds:g} s); max |diff| {row['max_abs_difference']:.2e}; "
                  f"streaming at 20 ms: StreamingExtractor {row['stream_torch_real_time_factor']:.0f}x, onnxruntime graphs "
                  f"{row['stream_onnxruntime_real_time_factor']:.0f}x (max |diff| {row['stream_max_abs_difference']:.2e})")
    data = {"cpu": cpu_model(), "torch": torch.__version__, "onnxruntime": ort.__version__, "opset": OPSET,
            "command": "python -m benchmarks.onnx_speed " + " ".join(argv or sys.argv[1:]), "results": results}
    write_results(data, "onnx", socket.gethostname(), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
