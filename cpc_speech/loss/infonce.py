"""InfoNCE (contrastive predictive coding) loss.

For every step k = 1..K and query frame t < frames - k of every window, the prediction p = W_k c_t
is scored against its positive z_{t+k} and N negatives z_n drawn by a :class:`NegativeSampler`:
score = dot(p, z) / temperature (temperature = encoder dim by default). The loss is cross-entropy
with the positive at index 0, averaged over the valid (window, t) pairs of each step and summed over
steps.

How the scores are computed depends on where the negatives come from (no (batch, time, steps,
negatives, dim) tensor is ever built):

* every negative in the query's own window: one (T K x T) score matrix per window, then the N + 1
  candidate scores of each query are gathered from it;
* negatives shared by the K steps of a query frame (the default, as CPC_audio): the N negative
  frames of each query are gathered, chunk by chunk, and scored against its K predictions by a
  batched matrix product (the positive is a dot product); the cross-entropy and its gradients are
  computed in the same pass over the chunk (:class:`_SharedNegativesCE`);
* a set per step from the whole batch: one matrix product of all predictions against all frames,
  then a gather (8x the FLOPs of the gathered form at batch 8, kept for ``shared_negatives=False``).
"""

from __future__ import annotations

import math

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from cpc_speech.loss.negatives import NegativeSampler


class InfoNCEResult(NamedTuple):
    loss: torch.Tensor  # scalar: sum over steps of the mean cross-entropy
    loss_per_step: torch.Tensor  # (K,)
    accuracy: torch.Tensor  # (K,) fraction of queries whose positive scored highest
    negatives: torch.Tensor  # (batch, frames, K or 1, N) global frame indices used (1: shared by the K steps)


GATHER_CHUNK_BYTES = 4 << 20  # gathered negatives per chunk: small enough to stay in the CPU cache


class _SharedNegativesCE(torch.autograd.Function):
    """Cross-entropy of each query's K predictions against its positives and its N shared
    negatives, with the gradients computed in the same pass.

    Inputs: predictions (Q, K, dim), frames (F, dim), negatives (Q, N) and positives (Q, K) frame
    indices, weights (Q, K) of each cross-entropy in the loss. Outputs: loss = sum(weights * ce),
    ce (Q, K) and correct (Q, K) (positive scored at least as high as every negative).

    Runs over chunks of queries whose gathered (chunk, N, dim) frames fit in the CPU cache. While a
    chunk's frames are in cache, the softmax gradient of its scores is formed and multiplied back
    into gradients of the predictions and frames, so the frames are gathered once (not again in
    the backward), and no (Q, K, 1 + N) logits or probabilities are ever stored. The backward only
    scales the stored gradients by the loss's gradient. Without gradients (validation) the
    gradient work is skipped.

    bf16 inputs (under autocast) are gathered and multiplied in bf16 (half the memory traffic of
    the gathers, bf16 matrix products); scores, softmax and cross-entropy are float32, and the
    frames' gradient is accumulated in float32 before it is returned in bf16."""

    @staticmethod
    def forward(ctx, predictions, frames, negatives, positives, weights, temperature: float):
        q, k_steps, dim = predictions.shape
        n = negatives.shape[1]
        chunk = max(1, GATHER_CHUNK_BYTES // max(1, n * dim * frames.element_size()))
        want_pred, want_frames = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        low = frames.dtype  # the dtype of gathers and products; scores are at least float32
        acc = torch.promote_types(low, torch.float32)
        ce = predictions.new_empty(q, k_steps, dtype=acc)
        correct = torch.empty(q, k_steps, dtype=torch.bool, device=predictions.device)
        grad_pred = torch.empty(predictions.shape, dtype=acc, device=predictions.device) if want_pred else None
        grad_frames = torch.zeros(frames.shape, dtype=acc, device=frames.device) if want_frames else None
        weights = weights.to(acc)
        inv_t = 1.0 / temperature
        with torch.autocast(predictions.device.type, enabled=False):  # inputs share one dtype already
            for a in range(0, q, chunk):
                rows = slice(a, a + chunk)
                neg_idx, pos_idx = negatives[rows].reshape(-1), positives[rows].reshape(-1)
                pred = predictions[rows]
                neg_z = frames.index_select(0, neg_idx).view(-1, n, dim)
                pos_z = frames.index_select(0, pos_idx).view(-1, k_steps, dim)
                s_neg = torch.bmm(pred, neg_z.transpose(1, 2)).to(acc).mul_(inv_t)  # (chunk, K, N)
                s_pos = torch.linalg.vecdot(pred, pos_z).to(acc).mul_(inv_t)  # (chunk, K), rounded as s_neg
                top_neg = s_neg.amax(-1)
                correct[rows] = s_pos >= top_neg  # argmax over [positive, negatives] is index 0
                top = torch.maximum(top_neg, s_pos)
                e_neg = s_neg.sub_(top.unsqueeze(-1)).exp_()
                e_pos = (s_pos - top).exp_()
                denom = e_neg.sum(-1).add_(e_pos)
                ce[rows] = denom.log() - (s_pos - top)
                if not (want_pred or want_frames):
                    continue
                w = weights[rows] * inv_t
                g_neg = e_neg.mul_((w / denom).unsqueeze(-1))  # d loss / d (pred . z_neg): w softmax / T
                g_pos = (e_pos / denom - 1).mul_(w).unsqueeze(-1)  # (chunk, K, 1)
                g_neg_low = g_neg.to(low)
                if want_pred and low == acc:
                    out = grad_pred[rows]
                    torch.bmm(g_neg_low, neg_z, out=out)
                    out.addcmul_(g_pos, pos_z)
                elif want_pred:  # bf16 products, summed in float32
                    grad_pred[rows] = torch.bmm(g_neg_low, neg_z).to(acc).addcmul_(g_pos, pos_z.to(acc))
                if want_frames:
                    grad_frames.index_add_(0, neg_idx, torch.bmm(g_neg_low.transpose(1, 2), pred).view(-1, dim).to(acc))
                    grad_frames.index_add_(0, pos_idx, (g_pos * pred).view(-1, dim))
        ctx.grads = tuple(None if g is None else g.to(low) for g in (grad_pred, grad_frames))
        ctx.mark_non_differentiable(ce, correct)
        return (ce * weights).sum(), ce, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_ce, _grad_correct):
        grad_pred, grad_frames = ctx.grads  # kept (not scaled in place): a retained graph may run backward again
        return (
            grad_pred * grad_loss if grad_pred is not None else None,
            grad_frames * grad_loss if grad_frames is not None else None,
            None, None, None, None,
        )


def shared_negatives_ce(predictions, frames, negatives, positives, weights, temperature: float):
    """predictions (Q, K, dim), frames (F, dim), negatives (Q, N), positives (Q, K), weights (Q, K)
    -> (loss, ce (Q, K), correct (Q, K)); see :class:`_SharedNegativesCE`. Gathers and products run
    in bf16 when both inputs are bf16, else in the wider input dtype (at least float32); scores and
    cross-entropy are at least float32."""
    dtype = torch.promote_types(predictions.dtype, frames.dtype)
    if dtype != torch.bfloat16:
        dtype = torch.promote_types(dtype, torch.float32)
    return _SharedNegativesCE.apply(predictions.to(dtype), frames.to(dtype), negatives, positives, weights,
                                    float(temperature))


class InfoNCELoss(nn.Module):
    """``forward(z, predictions, speaker=None, utterance=None, generator=None, remote=None)``.

    z: (batch, frames, dim) encoder output; predictions: (batch, frames, K, dim).
    speaker / utterance: (batch,) integer ids (needed by ``same_speaker`` / ``same_utterance``).
    remote: optional (z, speaker, utterance) of windows from other processes: extra candidates
    (no gradient) for the pools, queries stay local.
    """

    def __init__(self, negatives: int = 128, sampling: str = "cross_batch", temperature: Optional[float] = None,
                 shared_negatives: bool = True):
        super().__init__()
        self.sampler = NegativeSampler(sampling, negatives, shared=shared_negatives)
        if temperature is not None and not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"loss.temperature must be null (default: the encoder dimension) or > 0, got {temperature!r}")
        self.temperature = temperature

    def forward(
        self,
        z: torch.Tensor,
        predictions: torch.Tensor,
        speaker: Optional[torch.Tensor] = None,
        utterance: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
        remote: Optional[tuple] = None,
        negatives: Optional[torch.Tensor] = None,
    ) -> InfoNCEResult:
        b, t, k_steps, dim = predictions.shape
        if z.shape != (b, t, dim):
            raise ValueError(f"z {tuple(z.shape)} does not match predictions {tuple(predictions.shape)}")
        if t <= k_steps:
            raise ValueError(f"windows of {t} frames are too short for {k_steps} prediction steps")
        device = z.device
        if utterance is None:
            utterance = torch.arange(b, device=device)
        z_all, spk_all, utt_all = z, speaker, utterance
        if remote is not None:
            rz, rspk, rutt = remote
            z_all = torch.cat([z, rz.to(z.dtype)], 0)
            spk_all = None if speaker is None else torch.cat([speaker, rspk])
            utt_all = torch.cat([utterance, rutt])
        if negatives is None:
            negatives = self.sampler.sample(
                z_all.shape[0], t, k_steps, spk_all, utt_all, generator=generator, device=device
            )[:b]
        temperature = float(dim if self.temperature is None else self.temperature)

        # candidate index per query: positive first, then negatives (global frame indices)
        base = torch.arange(b, device=device).view(b, 1, 1, 1) * t
        t_idx = torch.arange(t, device=device).view(1, t, 1, 1)
        k_idx = torch.arange(1, k_steps + 1, device=device).view(1, 1, k_steps, 1)
        positive = base + (t_idx + k_idx).clamp_max(t - 1)  # (b, t, K, 1)
        shared = negatives.shape[2] == 1

        valid = (t_idx + k_idx < t).view(1, t, k_steps).expand(b, t, k_steps)  # query t has a z_{t+k}
        n_valid = valid.sum(dim=(0, 1)).clamp_min(1).float()
        validf = valid.float()
        window_local = remote is None and self.sampler.within_window_only and bool(
            (utterance.unsqueeze(0) != utterance.unsqueeze(1)).sum() == b * (b - 1)
        )
        if shared and not window_local:  # each query frame's N negatives gathered once for its K predictions
            loss, ce, correct = shared_negatives_ce(
                predictions.reshape(b * t, k_steps, dim), z_all.reshape(-1, dim), negatives.reshape(b * t, -1),
                positive.reshape(b * t, k_steps), (validf.double() / n_valid.double()).reshape(b * t, k_steps), temperature,
            )
            ce, correct = ce.view(b, t, k_steps), correct.float().view(b, t, k_steps)
            loss_per_step = (ce.detach() * validf).sum(dim=(0, 1)) / n_valid
        else:
            if window_local:  # per-window scores: (b, t*K, t)
                candidates = torch.cat([positive, negatives.expand(b, t, k_steps, -1)], dim=-1)  # (b, t, K, 1 + N)
                scores = torch.bmm(predictions.reshape(b, t * k_steps, dim), z.transpose(1, 2))
                logits = scores.gather(2, (candidates - base).reshape(b, t * k_steps, -1))
            else:  # all frames of the batch: (b*t*K, frames_all)
                candidates = torch.cat([positive, negatives], dim=-1)
                scores = predictions.reshape(b * t * k_steps, dim) @ z_all.reshape(-1, dim).t()
                logits = scores.gather(1, candidates.reshape(b * t * k_steps, -1))
            logits = (logits / temperature).view(b, t, k_steps, -1)
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.zeros(logits.shape[:-1].numel(), dtype=torch.long, device=device), reduction="none").view(b, t, k_steps)
            correct = (logits.argmax(-1) == 0).float()
            loss_per_step = (ce * validf).sum(dim=(0, 1)) / n_valid
            loss = loss_per_step.sum()
        accuracy = (correct * validf).sum(dim=(0, 1)) / n_valid
        return InfoNCEResult(loss, loss_per_step.detach(), accuracy.detach(), negatives)
