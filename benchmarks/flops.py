"""Analytic FLOP counts of a CPC model's training step (method in ``benchmarks/NOTES.md``).

Multiply-add = 2 FLOPs; norms, activations, softmax, negative sampling and Adam are not counted.
"""

from __future__ import annotations

from typing import Any, Dict


def _block_flops(d: int, t: int, window: int) -> int:
    """Forward FLOPs of one CausalTransformerBlock on ``t`` frames of width ``d``: q, k, v
    projections (once), dense causal attention scores and weighted sum over min(t, window) keys
    per query, output projection and the 4x feed-forward."""
    keys = min(t, window)
    return 2 * t * d * 3 * d + 2 * 2 * t * keys * d + 2 * t * d * d + 2 * 2 * t * d * 4 * d


def analytic_flops(cfg, batch: int, samples: int, negatives: int, sampling: str, shared: bool = True) -> Dict[str, Any]:
    """Forward FLOPs per batch (multiply-add = 2 FLOPs) of a :class:`CPCConfig` on ``batch``
    windows of ``samples`` samples; a training step counts 3x (backward = 2x forward).

    encoder: sum over conv layers of 2 * k * Cin * Cout * frames_out (norms and ReLU ignored);
    context: GRU 3 gates / LSTM 4 gates, each 2 * (in * H + H * H) per frame and layer;
    heads: linear 2 * H * K * D per frame, or per step one Transformer block + 2 * H * D;
    loss: the score products the loss computes, 2 * (B T K) * D * candidates, candidates = T frames
    of the own window (same_utterance only: one score matrix per window), 1 + N (negatives shared
    by the K steps: gathered and scored by a batched product) or B * T (a set per step: dense
    product against all frames).
    Also returned: ``loss_gather`` (what scoring only the 1 + N candidates would need).
    """
    from cpc_speech.loss.negatives import parse_sampling

    enc = cfg.encoder
    n, cin, conv = samples, 1, 0
    for k, s, p in zip(enc.kernels, enc.strides, enc.paddings):
        n = (n + 2 * p - k) // s + 1
        conv += 2 * k * cin * enc.channels * n
        cin = enc.channels
    t, d_enc, h = n, enc.channels, cfg.context.hidden
    ctx = cfg.context
    if ctx.kind in ("gru", "lstm"):
        gates = 3 if ctx.kind == "gru" else 4
        context = sum(gates * 2 * ((d_enc if layer == 0 else h) * h + h * h) * t for layer in range(ctx.layers))
    else:
        context = 2 * d_enc * h * t + ctx.layers * _block_flops(h, t, ctx.window)
    pred = cfg.predictor
    k_steps = pred.steps
    if pred.kind == "linear":
        heads = 2 * h * k_steps * d_enc * t
    else:
        heads = k_steps * (_block_flops(h, t, pred.window) + 2 * h * d_enc * t)
    modes = {m for m, _ in parse_sampling(sampling, negatives)}
    candidates = t if modes == {"same_utterance"} else (negatives + 1 if shared else batch * t)
    loss = 2 * batch * t * k_steps * d_enc * candidates
    per_batch = {"encoder": conv * batch, "context": context * batch, "heads": heads * batch, "loss": loss}
    forward = sum(per_batch.values())
    return {
        **per_batch,
        "forward": forward,
        "step": 3 * forward,
        "frames": t,
        "loss_gather": 2 * batch * t * k_steps * d_enc * (negatives + 1),
    }
