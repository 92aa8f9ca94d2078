"""InfoNCE (contrastive predictive coding) loss.

For every step k = 1..K and query frame t < frames - k of every window, the prediction p = W_k c_t
is scored against its positive z_{t+k} and N negatives z_n drawn by a :class:`NegativeSampler`:
score = dot(p, z) / temperature (temperature = encoder dim by default). The loss is cross-entropy
with the positive at index 0, averaged over the valid (window, t) pairs of each step and summed over
steps.

Scores are computed as one matrix product of predictions against the candidate frames (the frames
of each window when every negative comes from the query's own window, else all frames of the
batch), then the N + 1 candidate scores are gathered per query: no (batch, time, steps, negatives,
dim) tensor is ever built.
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
    negatives: torch.Tensor  # (batch, frames, K, N) global frame indices used


class InfoNCELoss(nn.Module):
    """``forward(z, predictions, speaker=None, utterance=None, generator=None, remote=None)``.

    z: (batch, frames, dim) encoder output; predictions: (batch, frames, K, dim).
    speaker / utterance: (batch,) integer ids (needed by ``same_speaker`` / ``same_utterance``).
    remote: optional (z, speaker, utterance) of windows from other processes: extra candidates
    (no gradient) for the pools, queries stay local.
    """

    def __init__(self, negatives: int = 128, sampling: str = "cross_batch", temperature: Optional[float] = None):
        super().__init__()
        self.sampler = NegativeSampler(sampling, negatives)
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
        positive = base + (t_idx + k_idx).clamp_max(t - 1)
        candidates = torch.cat([positive, negatives], dim=-1)  # (b, t, K, 1 + N)

        window_local = remote is None and self.sampler.within_window_only and bool(
            (utterance.unsqueeze(0) != utterance.unsqueeze(1)).sum() == b * (b - 1)
        )
        if window_local:  # per-window scores: (b, t*K, t)
            scores = torch.bmm(predictions.reshape(b, t * k_steps, dim), z.transpose(1, 2))
            logits = scores.gather(2, (candidates - base).reshape(b, t * k_steps, -1))
        else:  # all frames of the batch: (b*t*K, frames_all)
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
