"""SpecAugment-style masking of frame features for CTC training (Park et al. 2019).

Time masks zero spans of whole frames, channel masks zero bands of feature dimensions; both act on
the head's standardised input, where zero is the training-set mean. Only valid (unpadded) frames
are masked, and the masks are drawn from a given generator, so a seeded epoch masks the same way
when it is rerun (resumption stays exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskingConfig:
    """How much to mask. ``time_masks_per_second``: expected time masks per second of audio
    (100 frames), each 1..``time_mask_frames`` frames wide; ``channel_masks`` bands per utterance,
    each 1..``channel_mask_dims`` dimensions wide. Zero turns a kind off."""

    time_masks_per_second: float = 0.0
    time_mask_frames: int = 0
    channel_masks: int = 0
    channel_mask_dims: int = 0

    @property
    def enabled(self) -> bool:
        time = self.time_masks_per_second > 0 and self.time_mask_frames > 0
        return time or (self.channel_masks > 0 and self.channel_mask_dims > 0)


def keep_mask(lengths: torch.Tensor, frames: int, dim: int, cfg: MaskingConfig,
              generator: torch.Generator, frame_rate: float = 100.0) -> torch.Tensor:
    """(batch, frames, dim) float mask: 0 where a time or channel mask falls, 1 elsewhere.

    ``lengths`` (batch,) valid frames per utterance; the number of time masks of an utterance is
    ``round(time_masks_per_second * seconds)``, their starts uniform over its valid frames.
    """
    b = lengths.shape[0]
    time_keep = torch.ones(b, frames)
    channel_keep = torch.ones(b, dim)
    if not cfg.enabled:
        return time_keep.unsqueeze(-1) * channel_keep.unsqueeze(1)
    frame_index = torch.arange(frames)
    dim_index = torch.arange(dim)
    for i in range(b):
        n = int(lengths[i])
        count = int(round(cfg.time_masks_per_second * n / frame_rate)) if cfg.time_mask_frames > 0 else 0
        if count > 0 and n > 0:
            width = torch.randint(1, cfg.time_mask_frames + 1, (count,), generator=generator)
            start = (torch.rand(count, generator=generator) * (n - width + 1).clamp_min(1)).long()
            end = torch.minimum(start + width, torch.tensor(n))
            hit = (frame_index[None] >= start[:, None]) & (frame_index[None] < end[:, None])
            time_keep[i, hit.any(0)] = 0.0
        if cfg.channel_masks > 0 and cfg.channel_mask_dims > 0:
            width = torch.randint(1, min(cfg.channel_mask_dims, dim) + 1, (cfg.channel_masks,), generator=generator)
            start = (torch.rand(cfg.channel_masks, generator=generator) * (dim - width + 1)).long()
            hit = (dim_index[None] >= start[:, None]) & (dim_index[None] < (start + width)[:, None])
            channel_keep[i, hit.any(0)] = 0.0
    return time_keep.unsqueeze(-1) * channel_keep.unsqueeze(1)
