"""Interleaved A/Bs of the CPU kernels in float32 and bf16: ``python -m benchmarks.kernels``.

Each pair below is timed in one process, alternating A and B for ``--rounds`` rounds after a
warm-up, with an explicit torch thread count; the medians, the ratio B/A of each round's pair
(median and range) and the achieved GFLOP/s are printed and written as JSON
(``benchmarks/results/kernels-<machine>-<date>.json``):

* ``encoder``: forward + backward of the ``default`` encoder on a training batch (8 x 20480
  samples): our blocked-GEMM strided convolutions (``model/strided_conv.py``) against torch's
  ``nn.Conv1d`` (oneDNN, channels-first with the same weights), each in float32 and under bf16
  autocast;
* ``gru``: forward + backward of the 256-unit GRU context on 8 x 128 frames: our training layer
  (``model/gru.py``) in float32 and under bf16 autocast, and ``nn.GRU`` under bf16 autocast (what
  ran before the layer supported autocast);
* ``loss``: the shared-negatives InfoNCE of a ``default`` training batch (128 negatives, 12 steps),
  forward + backward, on float32 and on bf16 inputs;
* ``extract``: the encoder and the context network of extraction (batch 1, 10 s), float32 against
  bf16 autocast;
* ``chunks``: ``extract_features`` on 60 s by chunk length (0.5 to 5 s), in float32 and ``auto``.
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ab(name, variants, rounds: int, warmup: int = 2, flop: float = 0.0):
    """Time ``variants`` ({label: fn}) in turn for ``rounds`` rounds; ratios against the first."""
    labels = list(variants)
    for _ in range(warmup):
        for fn in variants.values():
            fn()
    times = {k: [] for k in labels}
    for _ in range(rounds):
        for k in labels:
            times[k].append(_timed(variants[k]))
    base = labels[0]
    out = {"name": name, "rounds": rounds, "baseline": base, "variants": {}}
    for k in labels:
        med = statistics.median(times[k])
        ratios = [b / a for a, b in zip(times[base], times[k])]
        out["variants"][k] = {
            "median_ms": 1e3 * med, "min_ms": 1e3 * min(times[k]), "max_ms": 1e3 * max(times[k]),
            "time_ratio_vs_baseline": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "gflops": flop / med / 1e9 if flop else None,
        }
    return out


def encoder_pair(torch, rounds):
    from torch import nn

    from cpc_speech.config import preset
    from cpc_speech.model.encoder import Encoder

    enc = Encoder(preset("default").encoder).train()
    convs = [m for m in enc.layers if hasattr(m, "kernel_size")]
    ref_convs = nn.ModuleList()
    for c in convs:
        r = nn.Conv1d(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride, padding=c.padding)
        with torch.no_grad():
            r.weight.copy_(c.weight)
            r.bias.copy_(c.bias)
        ref_convs.append(r)
    norms = [m for m in enc.layers if m not in convs and not isinstance(m, nn.ReLU)]
    wav = 0.1 * torch.randn(8, 20480)

    def torch_conv_forward(x):
        x = x.unsqueeze(1)
        for conv, norm in zip(ref_convs, norms):
            x = torch.relu(norm(conv(x).transpose(1, 2)).transpose(1, 2))
        return x.transpose(1, 2)

    def run(fwd, bf16):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = fwd(wav)
            z.float().square().mean().backward()
        return step

    frames = [4096, 1024, 512, 256, 128]
    flop = 3 * 8 * 2 * sum(c.kernel_size * c.in_channels * c.out_channels * f for c, f in zip(convs, frames))
    return ab("encoder forward+backward (default, 8 x 20480)", {
        "strided fp32": run(enc, False), "strided bf16": run(enc, True),
        "nn.Conv1d fp32": run(torch_conv_forward, False), "nn.Conv1d bf16": run(torch_conv_forward, True),
    }, rounds, flop=flop)


def gru_pair(torch, rounds):
    import cpc_speech.kernels.gru as context
    from cpc_speech.config import ContextConfig
    from cpc_speech.model.context import RecurrentContext

    ctx = RecurrentContext(256, ContextConfig(kind="gru", hidden=256)).train()
    z = torch.randn(8, 128, 256, requires_grad=True)

    def ours(bf16):
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                c, _ = ctx(z.bfloat16() if bf16 else z)
            c.float().sum().backward()
        return step

    def torch_gru():
        real = context._compiling
        context._compiling = lambda: True  # the path that bypasses our layer
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                c, _ = ctx(z.bfloat16())
        finally:
            context._compiling = real
        c.float().sum().backward()

    flop = 3 * 8 * 128 * 2 * 3 * (256 * 256 + 256 * 256)
    return ab("GRU context forward+backward (8 x 128 x 256)", {
        "ours fp32": ours(False), "ours bf16": ours(True), "nn.GRU bf16": torch_gru}, rounds, flop=flop)


def loss_pair(torch, rounds):
    from cpc_speech.loss import InfoNCELoss

    b, t, k, d = 8, 128, 12, 256
    fn = InfoNCELoss(128, "cross_batch")
    z = torch.randn(b, t, d)
    p = torch.randn(b, t, k, d)
    neg = fn.sampler.sample(b, t, k, None, torch.arange(b), generator=torch.Generator().manual_seed(0))

    def run(dtype):
        zz, pp = z.to(dtype).requires_grad_(), p.to(dtype).requires_grad_()

        def step():
            fn(zz, pp, negatives=neg).loss.backward()
        return step

    return ab("InfoNCE shared negatives forward+backward (8 x 128 x 12, 128 negatives)",
              {"fp32 inputs": run(torch.float32), "bf16 inputs": run(torch.bfloat16)}, rounds)


def extract_pair(torch, rounds):
    from cpc_speech.config import preset
    from cpc_speech.model.cpc import CPCModel

    m = CPCModel(preset("default")).eval()
    wav = 0.1 * torch.randn(1, 160000)

    def run(part, bf16):
        def step():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                z = m.encoder(wav)
                if part == "context":
                    m.context(z)
        return step

    return ab("extraction of 10 s (batch 1): encoder, encoder + context", {
        "encoder fp32": run("encoder", False), "encoder bf16": run("encoder", True),
        "encoder+context fp32": run("context", False), "encoder+context bf16": run("context", True)}, rounds)


def chunk_sweep(torch, rounds):
    import numpy as np

    from cpc_speech.config import preset
    from cpc_speech.features.api import extract_features
    from cpc_speech.model.cpc import CPCModel

    m = CPCModel(preset("default")).eval()
    wav = (0.1 * np.random.default_rng(0).standard_normal(16000 * 60)).astype(np.float32)

    def run(chunk, precision):
        return lambda: extract_features(wav, 16000, m, chunk_seconds=chunk, precision=precision)

    variants = {f"{prec} chunks {c:g} s": run(c, prec) for prec in ("fp32", "auto") for c in (0.5, 1.0, 2.5, 5.0)}
    return ab("extract_features of 60 s (c_t) by chunk length and precision", variants, max(2, rounds // 3), warmup=1)


PAIRS = {"encoder": encoder_pair, "gru": gru_pair, "loss": loss_pair, "extract": extract_pair, "chunks": chunk_sweep}


def main(argv=None) -> int:
    from benchmarks.results_file import write_results

    p = argparse.ArgumentParser(prog="python -m benchmarks.kernels", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(PAIRS), help="comma-separated: %(default)s")
    p.add_argument("--rounds", type=int, default=10, help="A/B rounds (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    p.add_argument("--output", help="JSON path (default benchmarks/results/kernels-<machine>-<date>.json)")
    args = p.parse_args(argv)
    import torch

    from benchmarks.machine import cpu_model
    from cpc_speech.engine.precision import resolve

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    auto = resolve("auto", "cpu")
    res = {"schema": "cpc_speech.kernels/1", "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": socket.gethostname(), "cpu_model": cpu_model(), "threads": args.threads, "torch": torch.__version__,
           "auto_precision": {"name": auto.name, "reason": auto.reason}, "pairs": []}
    print(f"{res['cpu_model']}, {args.threads} threads, torch {torch.__version__}; auto = {auto.describe()}")
    for name in [s.strip() for s in args.only.split(",") if s.strip()]:
        r = PAIRS[name](torch, args.rounds)
        res["pairs"].append(r)
        print(f"\n{r['name']}  ({r['rounds']} rounds, ratio = time / {r['baseline']})")
        for k, v in r["variants"].items():
            g = f"{v['gflops']:7.0f} GFLOP/s" if v["gflops"] else ""
            print(f"  {k:<24}{v['median_ms']:9.1f} ms  x{v['time_ratio_vs_baseline']:.2f} "
                  f"[{v['ratio_range'][0]:.2f}..{v['ratio_range'][1]:.2f}]  {g}")
    print()
    write_results(res, "kernels", res["machine"], args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
