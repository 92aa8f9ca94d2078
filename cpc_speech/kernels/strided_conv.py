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

from cpc_speech.kernels.switch import autocast_dtype, enabled


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


def _bias_row(bias: torch.Tensor | None, kernel: int, stride: int) -> torch.Tensor | None:
    """The bias on the first of the M partial outputs (added once per output frame)."""
    return None if bias is None else F.pad(bias, (0, (-(-kernel // stride) - 1) * bias.shape[0]))


def _zero_padded(x: torch.Tensor, left: int, right: int):
    """An empty (batch, left + kept + max(right, 0), C) buffer whose added frames are zeroed, its
    interior view (batch, kept, C) and the kept input x[:, :kept] (kept = frames + min(right, 0))."""
    b, frames, c = x.shape
    kept = frames + min(right, 0)
    out = x.new_empty(b, left + kept + max(right, 0), c)
    out[:, :left].zero_()
    out[:, left + kept:].zero_()
    return out, out[:, left:left + kept], x[:, :kept]


def pad_frames(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """x (batch, frames, C) -> contiguous (batch, left + frames + right, C) with zero frames added
    on both sides; a negative ``right`` drops frames at the end. Only the added frames are zeroed
    (``F.pad`` fills the whole output with zeros before copying the input in: one extra pass over
    the largest activations of the encoder)."""
    if left == 0 and right <= 0 and x[:, :x.shape[1] + right].is_contiguous():
        return x[:, :x.shape[1] + right]  # nothing to add (e.g. already padded by relu_padded)
    out, interior, kept = _zero_padded(x, left, right)
    interior.copy_(kept)
    return out


def _blocked_product(x, w, bias_row, c_out: int, k: int, stride: int, padding: int):
    """x (batch, frames, C_in), w = weight_to_matrix(weight) -> (out (batch, out frames, C_out),
    blocks (batch * blocks, s * C_in), geometry for the backward)."""
    b, frames, c_in = x.shape
    n_out, m, n_blocks = _geometry(frames, k, stride, padding)
    blocks = pad_frames(x, padding, n_blocks * stride - frames - padding).view(b * n_blocks, stride * c_in)
    if m == 1:  # kernel <= stride: one partial per block, written straight into the output (n_blocks = n_out);
        # a view of the product would be an output a following in-place ReLU may not modify
        out = blocks.new_empty(b, n_out, c_out)
        flat = out.view(b * n_out, c_out)
        torch.addmm(bias_row, blocks, w, out=flat) if bias_row is not None else torch.mm(blocks, w, out=flat)
        return out, blocks, (b, frames, c_in, c_out, k, stride, padding, n_out, m, n_blocks)
    y = (torch.addmm(bias_row, blocks, w) if bias_row is not None else blocks @ w).view(b, n_blocks, m, c_out)
    out = torch.add(y[:, :n_out, 0], y[:, 1:1 + n_out, 1])
    for j in range(2, m):
        out += y[:, j:j + n_out, j]
    return out, blocks, (b, frames, c_in, c_out, k, stride, padding, n_out, m, n_blocks)


def _unfolded_product(x, w, k: int, stride: int, padding: int) -> torch.Tensor:
    """x (batch, frames, C_in), w = :func:`unfolded_matrix` -> (batch, out frames, C_out): each
    output frame's k x C_in inputs copied into a row (plus a 1 for the bias row of ``w``), then one
    GEMM (no partial outputs to add up; ``addmm`` would first copy the bias into every output row,
    a full extra pass over the encoder's largest activation)."""
    b, _, c_in = x.shape
    windows = F.pad(x, (0, 0, padding, padding)).unfold(1, k, stride)  # (batch, out, C_in, k)
    n_out = windows.shape[1]
    cols = x.new_empty(b * n_out, w.shape[0])
    cols[:, :c_in * k].view(b, n_out, c_in, k).copy_(windows)
    if w.shape[0] > c_in * k:
        cols[:, c_in * k:] = 1
    return (cols @ w).view(b, n_out, w.shape[1])


def unfolded_matrix(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(C_out, C_in, k) weight and (C_out,) bias -> (C_in k [+ 1], C_out) for :func:`_unfolded_product`
    (row-major: autograd then takes the fast ``cols^T @ grad`` form for the weight gradient)."""
    c_out = weight.shape[0]
    w = weight.reshape(c_out, -1).t()
    return (torch.cat([w, bias.unsqueeze(0)]) if bias is not None else w).contiguous()


def _uses_unfolding(c_in: int, c_out: int, kernel: int, stride: int) -> bool:
    """Few input channels (the waveform layer): unfolding the input is cheaper than M partial outputs."""
    return c_in * kernel < -(-kernel // stride) * c_out


class _BlockedConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.dtypes = (x.dtype, weight.dtype)
        low = autocast_dtype(x.device.type)
        if low is not None:  # behave like an autocast matmul: compute (and save) in the low dtype
            x, weight = x.to(low), weight.to(low)
            bias = bias.to(low) if bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return _BlockedConv._forward(ctx, x, weight, bias, stride, padding)

    @staticmethod
    def _forward(ctx, x, weight, bias, stride: int, padding: int):
        c_out, c_in, k = weight.shape
        w = weight_to_matrix(weight, stride)
        out, blocks, geometry = _blocked_product(x, w, _bias_row(bias, k, stride), c_out, k, stride, padding)
        ctx.save_for_backward(blocks, w)
        ctx.geometry = geometry
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


class _ReluPadded(torch.autograd.Function):
    """relu(x) written straight into a zero-padded buffer (one pass instead of a ReLU pass and a
    padding copy); the backward masks the gradient of the kept frames by the saved output."""

    @staticmethod
    def forward(ctx, x, left: int, right: int):
        out, interior, kept = _zero_padded(x, left, right)
        torch.clamp_min(kept, 0, out=interior)
        ctx.save_for_backward(out)
        ctx.geometry = (left, kept.shape[1], x.shape[1])
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        left, kept, frames = ctx.geometry
        g = torch.ops.aten.threshold_backward(grad[:, left:left + kept], out[:, left:left + kept], 0)
        if kept < frames:  # frames the next layer never reads
            g = F.pad(g, (0, 0, 0, frames - kept))
        return g, None, None


def relu_padded(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``pad_frames(relu(x), left, right)`` in one pass: x (batch, frames, C) -> (batch, left +
    frames + right, C); a negative ``right`` drops frames at the end."""
    return _ReluPadded.apply(x, left, right)


def strided_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int) -> torch.Tensor:
    """``conv1d`` in channels-last layout: x (batch, frames, C_in) -> (batch, out frames, C_out),
    out frames = (frames + 2 padding - k) // stride + 1; weight (C_out, C_in, k) as ``nn.Conv1d``."""
    if x.dim() != 3 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"expected input (batch, frames, {weight.shape[1]}), got {tuple(x.shape)}")
    if (x.shape[1] + 2 * padding - weight.shape[-1]) // stride + 1 < 1:
        raise ValueError(f"{x.shape[1]} input frames are too few for kernel {weight.shape[-1]} with padding {padding}")
    c_out, c_in, k = weight.shape
    if _uses_unfolding(c_in, c_out, k, stride):
        return _unfolded_product(x, unfolded_matrix(weight, bias), k, stride, padding)
    return _BlockedConv.apply(x, weight, bias, stride, padding)


class StridedConv1d(nn.Module):
    """``nn.Conv1d`` twin for (batch, frames, channels) tensors (see the module docstring); with the
    kernels off (:func:`cpc_speech.kernels.disabled`) it runs ``F.conv1d`` on the transposed input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()
        self._inference_cache: tuple = ((), None, None)  # (key, weight matrix, bias row)

    def reset_parameters(self) -> None:
        """``nn.Conv1d``'s initialisation (Kaiming uniform, a = sqrt(5); bias uniform in +-1/sqrt(fan_in))."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_channels * self.kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)

    def input_padding(self, frames: int) -> Tuple[int, int] | None:
        """(left, right) frames to add around an input of ``frames`` frames so that ``forward(x,
        padded=True)`` reads it as it is (right < 0: frames the layer never reads), or None for the
        unfolded waveform layer, which pads its own (small) input."""
        if _uses_unfolding(self.in_channels, self.out_channels, self.kernel_size, self.stride):
            return None
        _, _, n_blocks = _geometry(frames, self.kernel_size, self.stride, self.padding)
        return self.padding, n_blocks * self.stride - frames - self.padding

    def forward(self, x: torch.Tensor, padded: bool = False) -> torch.Tensor:
        """x (batch, frames, C_in) -> (batch, out frames, C_out). ``padded``: x already carries the
        zero frames of :meth:`input_padding` (e.g. from :func:`relu_padded`)."""
        padding = 0 if padded else self.padding
        if not enabled():  # the reference: torch's channels-first convolution
            return F.conv1d(x.transpose(1, 2), self.weight, self.bias, stride=self.stride, padding=padding).transpose(1, 2)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if needs_grad or autocast_dtype(x.device.type) is not None or x.dim() != 3:
            return strided_conv1d(x, self.weight, self.bias, self.stride, padding)
        return self._inference(x, padding)

    def _inference(self, x: torch.Tensor, padding: int) -> torch.Tensor:
        """No-gradient forward with the weight matrix built once and reused while the weights are
        unchanged (feature extraction runs many chunks through the same layer)."""
        w, bias = self.weight, self.bias
        key = (w._version, w.data_ptr(), w.dtype, w.device, None if bias is None else (bias._version, bias.data_ptr()))
        cached_key, matrix, bias_row = self._inference_cache
        k, c_out, c_in = self.kernel_size, self.out_channels, self.in_channels
        unfold = _uses_unfolding(c_in, c_out, k, self.stride)
        if cached_key != key:
            with torch.no_grad():
                if unfold:
                    matrix, bias_row = unfolded_matrix(w, bias), None
                else:
                    matrix, bias_row = weight_to_matrix(w, self.stride), _bias_row(bias, k, self.stride)
            self._inference_cache = (key, matrix, bias_row)
        if x.shape[-1] != c_in or (x.shape[1] + 2 * padding - k) // self.stride + 1 < 1:
            return strided_conv1d(x, w, bias, self.stride, padding)  # its clear error
        if unfold:
            return _unfolded_product(x, matrix, k, self.stride, padding)
        return _blocked_product(x, matrix, bias_row, c_out, k, self.stride, padding)[0]

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
