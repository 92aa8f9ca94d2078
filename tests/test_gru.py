"""The CPU training GRU (hand-written backward through time) against torch.nn.GRU."""

import pytest
import torch

from cpc_speech.config import ContextConfig
from cpc_speech.model.context import RecurrentContext
from cpc_speech.kernels.gru import gru_layer


def _grads(tensors):
    return [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("layers", [1, 2])
def test_training_context_matches_nn_gru_values_and_gradients(layers):
    torch.manual_seed(0)
    ctx = RecurrentContext(12, ContextConfig(kind="gru", hidden=10, layers=layers)).double().train()
    z = torch.randn(3, 17, 12, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(layers, 3, 10, dtype=torch.float64, requires_grad=True)
    leaves = [z, h0, *ctx.parameters()]

    c, state = ctx(z, h0)
    assert c.grad_fn is not None and "GRULayer" in type(c.grad_fn).__name__  # the custom path ran
    (c.sin().sum() + state.cos().sum()).backward()
    got = _grads(leaves)
    for t in leaves:
        t.grad = None

    ref_c, ref_state = ctx.rnn(z, h0)  # torch's own GRU on the same parameters
    assert "GRULayer" not in type(ref_c.grad_fn).__name__
    (ref_c.sin().sum() + ref_state.cos().sum()).backward()
    want = _grads(leaves)

    assert c.shape == (3, 17, 10) and state.shape == (layers, 3, 10)
    torch.testing.assert_close(c, ref_c, rtol=0, atol=1e-12)
    torch.testing.assert_close(state, ref_state, rtol=0, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)
    assert all(g.abs().sum() > 0 for g in got)


def test_gru_layer_gradcheck_without_initial_state_gradient():
    torch.manual_seed(1)
    w_ih = torch.randn(15, 4, dtype=torch.float64, requires_grad=True)
    w_hh = torch.randn(15, 5, dtype=torch.float64, requires_grad=True)
    b_ih = torch.randn(15, dtype=torch.float64, requires_grad=True)
    b_hh = torch.randn(15, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    h0 = torch.zeros(2, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda *a: gru_layer(a[0], h0, *a[1:]), (x, w_ih, w_hh, b_ih, b_hh))
    # only the outputs used, or only the last state
    assert torch.autograd.gradcheck(lambda *a: gru_layer(a[0], h0, *a[1:])[0], (x, w_ih, w_hh, b_ih, b_hh))
    assert torch.autograd.gradcheck(lambda *a: gru_layer(a[0], h0, *a[1:])[1], (x, w_ih, w_hh, b_ih, b_hh))


def test_float32_training_path_close_to_nn_gru_and_inference_uses_nn_gru():
    torch.manual_seed(2)
    ctx = RecurrentContext(32, ContextConfig(kind="gru", hidden=24))
    z = torch.randn(4, 50, 32, requires_grad=True)
    c, _ = ctx(z)
    ref, _ = ctx.rnn(z)
    torch.testing.assert_close(c, ref, rtol=1e-5, atol=1e-6)
    c.pow(2).sum().backward()
    g = z.grad.clone()
    z.grad = None
    ref.pow(2).sum().backward()
    torch.testing.assert_close(g, z.grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # extraction: torch's GRU, same values
        c_eval, _ = ctx(z)
    torch.testing.assert_close(c_eval, ref.detach(), rtol=1e-5, atol=1e-6)


def test_training_path_streams_exactly_in_chunks():
    torch.manual_seed(3)
    ctx = RecurrentContext(8, ContextConfig(kind="gru", hidden=6)).double()
    z = torch.randn(2, 30, 8, dtype=torch.float64, requires_grad=True)
    whole, last = ctx(z)
    first, state = ctx(z[:, :11])
    second, state = ctx(z[:, 11:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=0, atol=1e-13)
    torch.testing.assert_close(state, last, rtol=0, atol=1e-13)


def test_bf16_autocast_runs_the_training_gru_with_bf16_products_and_float32_state():
    """Under CPU bf16 autocast the custom layer runs (not nn.GRU): its input projection is a bf16
    product (as autocast's own linear layers), the recurrence runs in float32 (equal to a float64
    recurrence on that projection), and values and gradients stay within bf16 rounding of the
    float32 layer."""
    torch.manual_seed(4)
    ctx = RecurrentContext(32, ContextConfig(kind="gru", hidden=24)).train()
    z = torch.randn(3, 40, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c, state = ctx(z.bfloat16())
    assert "GRULayer" in type(c.grad_fn).__name__
    assert c.dtype == torch.float32 and state.dtype == torch.float32

    # reference: a float64 recurrence on the bf16 input projection
    rnn = ctx.rnn
    w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l0").detach().double() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    gi = (z.detach().bfloat16() @ rnn.weight_ih_l0.detach().bfloat16().t()).double() + b_ih
    h = torch.zeros(3, 24, dtype=torch.float64)
    outs = []
    for s in range(40):
        gh = h @ w_hh.t() + b_hh
        r = torch.sigmoid(gi[:, s, :24] + gh[:, :24])
        u = torch.sigmoid(gi[:, s, 24:48] + gh[:, 24:48])
        n = torch.tanh(gi[:, s, 48:] + r * gh[:, 48:])
        h = (1 - u) * n + u * h
        outs.append(h)
    torch.testing.assert_close(c.double(), torch.stack(outs, 1), rtol=0, atol=2e-5)

    c.pow(2).sum().backward()
    got = [z.grad.clone()] + [p.grad.clone() for p in ctx.parameters()]
    for t in [z, *ctx.parameters()]:
        t.grad = None
    ref, _ = ctx(z)  # float32 custom layer
    ref.pow(2).sum().backward()
    want = [z.grad.clone()] + [p.grad.clone() for p in ctx.parameters()]
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() <= 2e-2 * b.norm()  # bf16 has an 8-bit mantissa


def test_backward_leaves_the_incoming_state_gradient_untouched():
    torch.manual_seed(6)
    w_ih, w_hh = torch.randn(15, 4, requires_grad=True), torch.randn(15, 5, requires_grad=True)
    b_ih, b_hh = torch.randn(15, requires_grad=True), torch.randn(15, requires_grad=True)
    x = torch.randn(2, 6, 4, requires_grad=True)
    out, h = gru_layer(x, torch.zeros(2, 5), w_ih, w_hh, b_ih, b_hh)
    (out.sum() + h.sum()).backward()  # the gradient of a sum is an expanded (shared-memory) tensor
    g = torch.randn(2, 5)
    kept = g.clone()
    out, h = gru_layer(x, torch.zeros(2, 5), w_ih, w_hh, b_ih, b_hh)
    torch.autograd.backward([out, h], [torch.ones_like(out), g])
    assert torch.equal(g, kept)
