"""Strided 1-D convolution in (batch, time, channels) layout, computed as one large matrix product.

A convolution with kernel ``k`` and stride ``s`` reads, for output frame ``t``, the padded input
samples ``[t s, t s + k)``. Cut the padded input into blocks of ``s`` frames: output ``t`` then
reads blocks ``t .. t + M - 1`` with ``M = ceil(k / s)`` (2 for every layer of the CPC encoder,
where ``k = 2 s``). So one GEMM ``blocks (batch * blocks, s * C_in) @ W (s * C_in, M * C_out)`` gives
``M`` partial outputs per block, and output ``t`` is the sum of partial ``m`` of block ``t + m``.

A layer with few input channels (the first, on the waveform) instead copies each output frame's
``k x C_in`` inputs into a row (cheaper than ``M`` partial outputs of ``C_out`` channels).

Compared with ``nn.Conv1d`` on this CPU (oneDNN), this is one well-shaped GEMM per pass, needs no
layout change between layers, and its hand-written backward skips the input gradient of the first
layer (the waveform) and never materialises zero-filled slice gradients. The parameters have
``nn.Conv1d``'s shapes and names (``weight`` (C_out, C_in, k), ``bias`` (C_out,)) and its
initialisation, so checkpoints are interchangeable with a channels-first ``nn.Conv1d``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _geometry(frames: int, kernel: int, stride: int, padding: int) -> Tuple[int, int, int]:
    """(output frames, kernel blocks M, input blocks) for ``frames`` input frames."""
    out = (frames + 2 * padding - kernel) // stride + 1
    blocks_per_out = -(-kernel // stride)
    return out, blocks_per_out, out + blocks_per_out - 1


def weight_to_matrix(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """(C_out, C_in, k) -> (s * C_in, M * C_out): row ``j * C_in + c``, column ``m * C_out + o`` holds
    tap ``m s + j`` (zero past ``k``)."""
    c_out, c_in, k = weight.shape
    m = -(-k // stride)
    w = F.pad(weight, (0, m * stride - k)).view(c_out, c_in, m, stride)
    return w.permute(3, 1, 2, 0).reshape(stride * c_in, m * c_out)


def matrix_to_weight(matrix: torch.Tensor, c_out: int, c_in: int, kernel: int, stride: int) -> torch.Tensor:
    """Inverse of :func:`weight_to_matrix` (drops the zero taps)."""
    m = -(-kernel // stride)
    w = matrix.view(stride, c_in, m, c_out).permute(3, 1, 2, 0).reshape(c_out, c_in, m * stride)
    return w[:, :, :kernel].contiguous()


def _autocast_dtype(device_type: str):
    """The dtype autocast would run a matrix product in here, or None when autocast is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


class _BlockedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.dtypes = (x.dtype, weight.dtype)
        low = _autocast_dtype(x.device.type)
        if low is not None:  # behave like an autocast matmul: compute (and save) in the low dtype
            x, weight = x.to(low), weight.to(low)
            bias = bias.to(low) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return _BlockedConv._forward(ctx, x, weight, bias, stride, padding)

    @staticmethod
    def _forward(ctx, x, weight, bias, stride: int, padding: int):
        b, frames, c_in = x.shape
        c_out, _, k = weight.shape
        n_out, m, n_blocks = _geometry(frames, k, stride, padding)
        need = n_blocks * stride
        right = need - frames - padding
        xp = F.pad(x, (0, 0, padding, max(right, 0)))
        if right < 0:
            xp = xp[:, :need]
        blocks = xp.reshape(b * n_blocks, stride * c_in)
        w = weight_to_matrix(weight, stride)
        bias_row = F.pad(bias, (0, (m - 1) * c_out)) if bias is not None else None
        y = (torch.addmm(bias_row, blocks, w) if bias_row is not None else blocks @ w).view(b, n_blocks, m, c_out)
        out = torch.add(y[:, :n_out, 0], y[:, 1:1 + n_out, 1]) if m > 1 else y[:, :n_out, 0].contiguous()
        for j in range(2, m):
            out += y[:, j:j + n_out, j]
        ctx.save_for_backward(blocks, w)
        ctx.geometry = (b, frames, c_in, c_out, k, stride, padding, n_out, m, n_blocks)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        blocks, w = ctx.saved_tensors
        b, frames, c_in, c_out, k, stride, padding, n_out, m, n_blocks = ctx.geometry
        grad_out = grad_out.to(blocks.dtype).contiguous()
        grad_y = grad_out.new_empty(b, n_blocks, m, c_out)
        for j in range(m):  # partial j of block t + j feeds output t
            grad_y[:, j:j + n_out, j] = grad_out
            grad_y[:, :j, j] = 0
            grad_y[:, j + n_out:, j] = 0
        grad_y = grad_y.view(b * n_blocks, m * c_out)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_xp = (grad_y @ w.t().contiguous()).view(b, n_blocks * stride, c_in)
            grad_x = grad_xp[:, padding:padding + frames]
            if grad_x.shape[1] < frames:  # input frames past the last block were never read
                grad_x = F.pad(grad_x, (0, 0, 0, frames - grad_x.shape[1]))
        if ctx.needs_input_grad[1]:
            grad_w = matrix_to_weight(blocks.t() @ grad_y, c_out, c_in, k, stride)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 1)).to(ctx.dtypes[1])
        if grad_x is not None:
            grad_x = grad_x.to(ctx.dtypes[0])
        if grad_w is not None:
            grad_w = grad_w.to(ctx.dtypes[1])
        return grad_x, grad_w, grad_b, None, None


def strided_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int) -> torch.Tensor:
    """``conv1d`` in channels-last layout: x (batch, frames, C_in) -> (batch, out frames, C_out),
    out frames = (frames + 2 padding - k) // stride + 1; weight (C_out, C_in, k) as ``nn.Conv1d``."""
    if x.dim() != 3 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"expected input (batch, frames, {weight.shape[1]}), got {tuple(x.shape)}")
    if (x.shape[1] + 2 * padding - weight.shape[-1]) // stride + 1 < 1:
        raise ValueError(f"{x.shape[1]} input frames are too few for kernel {weight.shape[-1]} with padding {padding}")
    c_out, c_in, k = weight.shape
    if c_in * k < -(-k // stride) * c_out:  # unfolding the input is cheaper than M partial outputs
        return _unfolded_conv(x, weight, bias, stride, padding)
    return _BlockedConv.apply(x, weight, bias, stride, padding)


def _unfolded_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int) -> torch.Tensor:
    """Few input channels (the waveform layer): copy each output frame's k x C_in inputs into a row,
    then one GEMM (no partial outputs to add up)."""
    b = x.shape[0]
    c_out, c_in, k = weight.shape
    cols = F.pad(x, (0, 0, padding, padding)).unfold(1, k, stride)  # (batch, out, C_in, k)
    n_out = cols.shape[1]
    cols = cols.reshape(b * n_out, c_in * k)
    w = weight.reshape(c_out, c_in * k).t().contiguous()  # row-major: its gradient is the fast cols^T @ grad
    out = torch.addmm(bias, cols, w) if bias is not None else cols @ w
    return out.view(b, n_out, c_out)


class StridedConv1d(nn.Module):
    """``nn.Conv1d`` twin for (batch, frames, channels) tensors (see the module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv1d``'s initialisation (Kaiming uniform, a = sqrt(5); bias uniform in +-1/sqrt(fan_in))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return strided_conv1d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
