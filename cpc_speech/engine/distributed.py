"""Process-group helpers for ``torchrun`` (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch (or a single process): the one that owns the run folder."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_choice(value: str, choices: "tuple[str, ...]", info: DistInfo, device: torch.device) -> str:
    """Rank 0's ``value`` (one of ``choices``) on every rank: a decision every rank must share,
    such as the precision that ``auto`` picked from a timing."""
    return choices[broadcast_int(choices.index(value), info, device)]


def broadcast_int(value: int, info: DistInfo, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (e.g. the step count a time budget buys)."""
    if not info.enabled:
        return value
    t = torch.tensor([int(value)], dtype=torch.long, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def all_gather_windows(z: torch.Tensor, speaker: torch.Tensor, utterance: torch.Tensor, info: DistInfo):
    """Encoder frames and ids of the *other* ranks' windows, without gradient.

    Batches may differ in size across ranks (dropped unreadable windows), so sizes are exchanged
    first. Utterance ids stay global (manifest row indices are the same on every rank)."""
    sizes = [torch.zeros(1, dtype=torch.long, device=z.device) for _ in range(info.world_size)]
    dist.all_gather(sizes, torch.tensor([z.shape[0]], device=z.device))
    biggest = int(max(s.item() for s in sizes))
    pad = biggest - z.shape[0]
    zp = torch.cat([z.detach(), z.new_zeros((pad,) + z.shape[1:])]) if pad else z.detach()
    ids = torch.stack([speaker, utterance], 1)
    idp = torch.cat([ids, ids.new_full((pad, 2), -1)]) if pad else ids
    zs = [torch.empty_like(zp) for _ in range(info.world_size)]
    idl = [torch.empty_like(idp) for _ in range(info.world_size)]
    dist.all_gather(zs, zp.contiguous())
    dist.all_gather(idl, idp.contiguous())
    others = [r for r in range(info.world_size) if r != info.rank]
    rz = torch.cat([zs[r][: int(sizes[r].item())] for r in others])
    rid = torch.cat([idl[r][: int(sizes[r].item())] for r in others])
    return rz, rid[:, 0], rid[:, 1]


def cleanup(finished: bool = False) -> None:
    """Leave the process group. ``finished`` (every rank completed normally): meet at a barrier
    first, since a rank that tears down its gloo connections while the other still uses them can
    abort at exit ("terminate called without an active exception"). After a failure no barrier is
    attempted: the other ranks may be inside another collective, and waiting would turn a quick
    failure into a hang."""
    if dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
