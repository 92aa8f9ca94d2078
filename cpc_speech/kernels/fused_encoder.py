"""The encoder's (conv, norm, ReLU) blocks with each ReLU writing straight into the next
convolution's zero-padded input.

Run one after another, every block would pass over its activation three times after the norm:
the ReLU, then the next convolution copying it into a zero-padded buffer. Here the ReLU writes
into that buffer (:func:`~cpc_speech.kernels.strided_conv.relu_padded`) and the next convolution
reads it as it is (``StridedConv1d.forward(x, padded=True)``). The result equals the plain walk
``x = relu(norm(conv(x)))`` (tests/test_kernels.py).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

from cpc_speech.kernels.strided_conv import StridedConv1d, relu_padded


def fused_encoder(blocks: Sequence[Tuple[StridedConv1d, nn.Module, nn.Module]], x: torch.Tensor) -> torch.Tensor:
    """blocks: (conv, norm, ReLU) per layer; x (batch, samples, 1) -> (batch, frames, channels)."""
    padded = False
    for i, (conv, norm, relu) in enumerate(blocks):
        x = norm(conv(x, padded=padded))
        # (left, right) zero frames the next convolution reads around x, or None (it pads its own)
        pad = blocks[i + 1][0].input_padding(x.shape[1]) if i + 1 < len(blocks) else None
        x, padded = (relu(x), False) if pad is None else (relu_padded(x, *pad), True)
    return x
