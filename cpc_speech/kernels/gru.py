"""One GRU layer for CPU training with a hand-written backward through time.

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

from typing import Optional, Tuple

import torch

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
