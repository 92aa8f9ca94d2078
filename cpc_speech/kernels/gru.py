"""Recurrent context networks on CPU: a GRU layer for training with a hand-written backward
through time, and :func:`cpu_recurrent`, which picks it or runs ``nn.GRU`` / ``nn.LSTM`` with the
thread and precision settings that are fastest there.

``nn.GRU`` on CPU records about ten autograd nodes per time step; for a training batch of
8 x 128 frames that bookkeeping, not arithmetic, is most of the context network's time (about
0.25 ms forward and 0.5 ms backward per step for 3 MFLOP of matrix products). Here the forward
runs without autograd and keeps only the gates; the backward walks the steps in reverse with plain
tensor ops and computes the weight gradients as two large matrix products over all frames.
Under autocast those large products run in the low dtype (bf16) while the per-step recurrence
stays in float32.

Same equations, parameters and layout as one layer of ``torch.nn.GRU`` (gate order r, z, n)::

    r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)
    z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)
    n = tanh(x W_in + b_in + r * (h W_hn + b_hn))
    h' = (1 - z) * n + z * h
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn

from cpc_speech.kernels.switch import autocast_dtype
from cpc_speech.kernels.threads import single_thread


def _forward_steps(gi, h0, w_hh, b_hh, outputs, gates, gh) -> torch.Tensor:
    """The recurrence over precomputed input projections gi (frames, batch, 3H); fills outputs
    (frames, batch, H), gates r, z, n and the recurrent projections gh = h W_hh + b_hh (frames,
    batch, 3H) and returns the last state (batch, H)."""
    hidden = h0.shape[1]
    w_hh_t = w_hh.t().contiguous()
    h = h0
    for s in range(gi.shape[0]):
        torch.addmm(b_hh, h, w_hh_t, out=gh[s])
        g = gates[s]
        torch.add(gi[s, :, : 2 * hidden], gh[s, :, : 2 * hidden], out=g[:, : 2 * hidden]).sigmoid_()
        n = torch.addcmul(gi[s, :, 2 * hidden :], g[:, :hidden], gh[s, :, 2 * hidden :], out=g[:, 2 * hidden :]).tanh_()
        h = torch.addcmul(n, g[:, hidden : 2 * hidden], h - n, out=outputs[s])  # n + z (h - n)
    return h


def _backward_steps(grad_out, dh, h_prev, w_hh, gates, gh, d_gh, d_gi_n) -> torch.Tensor:
    """Backpropagation through time. Fills d_gh, the gradient of gh = h W_hh + b_hh (frames,
    batch, 3H), and d_gi_n, that of the input-side pre-activation of n (frames, batch, H); the
    input-side gradients of r and z equal the recurrent ones. Returns the gradient of h0.

    The per-step factors are computed for all steps at once, so that a step is five element-wise
    products and one matrix product."""
    hidden = h_prev.shape[2]
    r, z, n = gates[..., :hidden], gates[..., hidden : 2 * hidden], gates[..., 2 * hidden :]
    through_n = (1 - z) * (1 - n * n)  # dL/d(n pre-activation) = dh * this
    through_r = gh[..., 2 * hidden :] * r * (1 - r)  # dL/d(r pre-activation) = that * this
    through_z = (h_prev - n) * z * (1 - z)  # dL/d(z pre-activation) = dh * this
    for s in range(gates.shape[0] - 1, -1, -1):
        dh += grad_out[s]
        d = d_gh[s]
        dn = torch.mul(dh, through_n[s], out=d_gi_n[s])
        torch.mul(dn, through_r[s], out=d[:, :hidden])
        torch.mul(dh, through_z[s], out=d[:, hidden : 2 * hidden])
        torch.mul(dn, r[s], out=d[:, 2 * hidden :])
        dh = torch.addmm(dh * z[s], d, w_hh)
    return dh


def _product(a: torch.Tensor, b: torch.Tensor, low: Optional[torch.dtype]) -> torch.Tensor:
    """a @ b, with the operands in ``low`` (e.g. bf16, accumulated in float32 by the kernel) when
    given; the result in the operands' wider dtype."""
    if low is None:
        return a @ b
    return (a.to(low) @ b.to(low)).to(torch.promote_types(a.dtype, b.dtype))


class _GRULayer(torch.autograd.Function):
    # buffers are time-major, (frames, batch, ...), so that every step reads and writes contiguous
    # rows; the steps run on one thread, the large products over all frames on all threads.
    # ``low``: the dtype of the large products over all frames (input projection, input and weight
    # gradients) under autocast; the recurrence, gates and state stay in the weights' dtype.

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, low):
        b, t, in_dim = x.shape
        hidden = w_hh.shape[1]
        dtype = w_hh.dtype
        with torch.autocast(x.device.type, enabled=False):
            x_tm = x.transpose(0, 1).reshape(t * b, in_dim)
            if low is None:
                x_tm = x_tm.to(dtype)
                gi = torch.addmm(b_ih, x_tm, w_ih.t())
            else:
                x_tm = x_tm.to(low)  # kept in low precision for the weight gradient
                gi = _product(x_tm, w_ih.t(), low).to(dtype).add_(b_ih)
            gi = gi.view(t, b, 3 * hidden)
            outputs = w_hh.new_empty(t, b, hidden)
            gates = w_hh.new_empty(t, b, 3 * hidden)  # r, z, n of every step
            gh = w_hh.new_empty(t, b, 3 * hidden)  # h W_hh + b_hh of every step
            with single_thread():
                h = _forward_steps(gi, h0.to(dtype), w_hh, b_hh, outputs, gates, gh)
        ctx.low, ctx.x_dtype, ctx.h0_dtype = low, x.dtype, h0.dtype
        ctx.save_for_backward(x_tm, h0, w_ih, w_hh, outputs, gates, gh)
        return outputs.transpose(0, 1), h.clone()

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        x_tm, h0, w_ih, w_hh, outputs, gates, gh = ctx.saved_tensors
        low = ctx.low
        t, b, hidden = outputs.shape
        dtype = outputs.dtype
        with torch.autocast(outputs.device.type, enabled=False):
            grad_out = grad_out.transpose(0, 1).to(dtype) if grad_out is not None else torch.zeros_like(outputs)
            h_prev = torch.cat([h0.to(dtype).unsqueeze(0), outputs[:-1]], 0)
            d_gh = torch.empty_like(gates)
            d_gi_n = torch.empty_like(outputs)
            dh = grad_last.to(dtype, copy=True) if grad_last is not None else outputs.new_zeros(b, hidden)  # updated in place
            with single_thread():
                dh = _backward_steps(grad_out, dh, h_prev, w_hh, gates, gh, d_gh, d_gi_n)
            d_gh = d_gh.view(t * b, 3 * hidden)
            d_gi = torch.cat([d_gh[:, : 2 * hidden], d_gi_n.view(t * b, hidden)], 1)
            need = ctx.needs_input_grad
            grad_x = _product(d_gi, w_ih, low).to(ctx.x_dtype).view(t, b, -1).transpose(0, 1) if need[0] else None
            grad_h0 = dh.to(ctx.h0_dtype) if need[1] else None
            grad_w_ih = _product(d_gi.t(), x_tm, low).to(w_ih.dtype) if need[2] else None
            grad_w_hh = _product(d_gh.t(), h_prev.view(t * b, hidden), low).to(w_hh.dtype) if need[3] else None
            grad_b_ih = d_gi.sum(0) if need[4] else None
            grad_b_hh = d_gh.sum(0) if need[5] else None
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None


def gru_layer(
    x: torch.Tensor, h0: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor, b_hh: torch.Tensor,
    low: Optional[torch.dtype] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer: x (batch, frames, in_dim), h0 (batch, hidden) -> outputs (batch, frames,
    hidden) and the last state (batch, hidden), both in the weights' dtype. Weights as ``nn.GRU``'s
    ``weight_ih_l0`` (3H, in_dim), ``weight_hh_l0`` (3H, H) and biases (3H,).

    ``low`` (e.g. ``torch.bfloat16`` under autocast): the products over all frames (input
    projection, gradients of the input and the weights) take their operands in that dtype; the
    recurrence, its gates and state stay in the weights' dtype."""
    return _GRULayer.apply(x, h0, w_ih, w_hh, b_ih, b_hh, low)


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, "compiler", None), "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling and is_compiling())


def _uses_training_gru(rnn: nn.RNNBase, z: torch.Tensor) -> bool:
    """Whether :func:`gru_layer` runs: a GRU on CPU with gradients wanted, in float32/64 or bf16."""
    return (
        isinstance(rnn, nn.GRU)
        and not z.is_cuda
        and torch.is_grad_enabled()
        and z.dtype in (torch.float32, torch.float64, torch.bfloat16)
        and autocast_dtype("cpu") in (None, torch.bfloat16)
        # torch.compile traces nn.GRU as one operation; tracing this layer would unroll its steps
        and not _compiling()
        and (z.requires_grad or rnn.weight_hh_l0.requires_grad)
    )


def _training_gru(rnn: nn.GRU, z: torch.Tensor, state: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``rnn(z, state)`` layer by layer through :func:`gru_layer`."""
    b = z.shape[0]
    low = autocast_dtype("cpu")
    # the state's dtype: the weights' under autocast or for bf16 input, else the input's (float64 tests)
    dtype = rnn.weight_hh_l0.dtype if low is not None or z.dtype == torch.bfloat16 else z.dtype
    x, last = z, []
    for layer in range(rnn.num_layers):
        h0 = state[layer] if state is not None else z.new_zeros(b, rnn.hidden_size, dtype=dtype)
        weights = [getattr(rnn, f"{name}_l{layer}").to(dtype) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        x, h = gru_layer(x, h0, *weights, low=low)  # threads: set inside (one for the steps)
        last.append(h)
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            x = nn.functional.dropout(x, rnn.dropout, rnn.training)
    return x, torch.stack(last)


def cpu_recurrent(rnn: nn.RNNBase, z: torch.Tensor, state: Optional[Any] = None) -> Tuple[torch.Tensor, Any]:
    """``rnn(z, state)`` for a batch_first ``nn.GRU`` / ``nn.LSTM`` on CPU: z (batch, frames, in_dim)
    -> (outputs (batch, frames, hidden), state).

    Training a GRU runs :func:`gru_layer` (under bf16 autocast its large products in bf16, the
    recurrence in float32). Otherwise torch's module runs, in float32 also under autocast (torch's
    bf16 recurrent kernels on CPU are slower than float32: benchmarks/NOTES.md), its steps on
    one thread (:class:`~cpc_speech.kernels.threads.single_thread`) and, when gradients flow, its
    backward too: hooks set one thread between the gradient of the outputs and that of z."""
    if _uses_training_gru(rnn, z):
        return _training_gru(rnn, z, state)
    if autocast_dtype("cpu") is not None:
        with torch.autocast("cpu", enabled=False):
            return cpu_recurrent(rnn, z.float(), state)
    with single_thread():
        c, state = rnn(z, state)
    if c.requires_grad and z.requires_grad and torch.get_num_threads() > 1:
        # the recurrent backward runs between the gradient of c and the gradient of z
        threads = torch.get_num_threads()
        c.register_hook(lambda g: (torch.set_num_threads(1), g)[1])
        z.register_hook(lambda g: (torch.set_num_threads(threads), g)[1])
    return c, state
