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
  frames of each query are gathered once, (batch * frames, N, dim), and scored against its K
  predictions by a batched matrix product; the positive is a dot product;
* a set per step from the whole batch: one matrix product of all predictions against all frames,
  then a gather (8x the FLOPs of the gathered form at batch 8, kept for ``shared_negatives=False``).
"""

from __future__ import annotations

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


class _GatheredScores(torch.autograd.Function):
    """scores[q, k, n] = predictions[q, k] . frames[index[q, n]].

    Runs over chunks of queries whose gathered (chunk, N, dim) frames fit in the CPU cache; the
    backward gathers them again instead of keeping them, so memory stays at one chunk and the
    gradients come out in their natural layout (no transposed copies)."""

    @staticmethod
    def forward(ctx, predictions, frames, index):
        q, n = index.shape
        dim = frames.shape[1]
        chunk = max(1, GATHER_CHUNK_BYTES // max(1, n * dim * frames.element_size()))
        scores = predictions.new_empty(q, predictions.shape[1], n)
        with torch.autocast(predictions.device.type, enabled=False):  # inputs share one dtype already
            for a in range(0, q, chunk):
                gathered = frames.index_select(0, index[a:a + chunk].reshape(-1)).view(-1, n, dim)
                torch.bmm(predictions[a:a + chunk], gathered.transpose(1, 2), out=scores[a:a + chunk])
        ctx.save_for_backward(predictions, frames, index)
        ctx.chunk = chunk
        return scores

    @staticmethod
    def backward(ctx, grad):
        predictions, frames, index = ctx.saved_tensors
        q, n = index.shape
        dim = frames.shape[1]
        grad = grad.to(predictions.dtype)
        grad_pred = torch.empty_like(predictions) if ctx.needs_input_grad[0] else None
        grad_frames = torch.zeros_like(frames) if ctx.needs_input_grad[1] else None
        for a in range(0, q, ctx.chunk):
            idx = index[a:a + ctx.chunk].reshape(-1)
            gathered = frames.index_select(0, idx).view(-1, n, dim)
            g = grad[a:a + ctx.chunk]
            if grad_pred is not None:
                torch.bmm(g, gathered, out=grad_pred[a:a + ctx.chunk])
            if grad_frames is not None:
                grad_frames.index_add_(0, idx, torch.bmm(g.transpose(1, 2), predictions[a:a + ctx.chunk]).view(-1, dim))
        return grad_pred, grad_frames, None


def gathered_scores(predictions: torch.Tensor, frames: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """predictions (Q, K, dim), frames (F, dim), index (Q, N) int64 -> scores (Q, K, N), in the
    wider of the two input dtypes (under autocast the inputs may differ)."""
    dtype = torch.promote_types(predictions.dtype, frames.dtype)
    return _GatheredScores.apply(predictions.to(dtype), frames.to(dtype), index)


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
        temperature = float(self.temperature or dim)

        # candidate index per query: positive first, then negatives (global frame indices)
        base = torch.arange(b, device=device).view(b, 1, 1, 1) * t
        t_idx = torch.arange(t, device=device).view(1, t, 1, 1)
        k_idx = torch.arange(1, k_steps + 1, device=device).view(1, 1, k_steps, 1)
        positive = base + (t_idx + k_idx).clamp_max(t - 1)  # (b, t, K, 1)
        shared = negatives.shape[2] == 1

        window_local = remote is None and self.sampler.within_window_only and bool(
            (utterance.unsqueeze(0) != utterance.unsqueeze(1)).sum() == b * (b - 1)
        )
        if window_local:  # per-window scores: (b, t*K, t)
            candidates = torch.cat([positive, negatives.expand(b, t, k_steps, -1)], dim=-1)  # (b, t, K, 1 + N)
            scores = torch.bmm(predictions.reshape(b, t * k_steps, dim), z.transpose(1, 2))
            logits = scores.gather(2, (candidates - base).reshape(b, t * k_steps, -1))
        elif shared:  # gather each query frame's N negatives once, score its K predictions against them
            flat = z_all.reshape(-1, dim)
            pred = predictions.reshape(b * t, k_steps, dim)
            negative_scores = gathered_scores(pred, flat, negatives.reshape(b * t, -1))  # (b t, K, N)
            positive_z = flat.index_select(0, positive.reshape(-1)).view(b * t, k_steps, dim)
            positive_scores = (pred * positive_z).sum(-1, keepdim=True)
            logits = torch.cat([positive_scores, negative_scores], dim=-1)
        else:  # all frames of the batch: (b*t*K, frames_all)
            candidates = torch.cat([positive, negatives], dim=-1)
            scores = predictions.reshape(b * t * k_steps, dim) @ z_all.reshape(-1, dim).t()
            logits = scores.gather(1, candidates.reshape(b * t * k_steps, -1))
        logits = (logits / temperature).view(b, t, k_steps, -1)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()

        valid = (t_idx + k_idx < t).view(1, t, k_steps).expand(b, t, k_steps)  # query t has a z_{t+k}
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.zeros(logits.shape[:-1].numel(), dtype=torch.long, device=device), reduction="none").view(b, t, k_steps)
        correct = (logits.argmax(-1) == 0).float()
        n_valid = valid.sum(dim=(0, 1)).clamp_min(1).float()
        validf = valid.float()
        loss_per_step = (ce * validf).sum(dim=(0, 1)) / n_valid
        accuracy = (correct * validf).sum(dim=(0, 1)) / n_valid
        return InfoNCEResult(loss_per_step.sum(), loss_per_step.detach(), accuracy.detach(), negatives)
