"""The seam between the model and its CPU kernels: with the kernels on and off (plain torch:
F.conv1d, nn.GRU / nn.LSTM) the whole model gives the same values and gradients in float64."""

import pytest
import torch

from cpc_speech import kernels
from cpc_speech.config import ContextConfig, EncoderConfig, preset
from cpc_speech.model.cpc import CPCModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _graph_nodes(t: torch.Tensor) -> set:
    """Names of the autograd nodes that produced ``t``."""
    seen, names, todo = set(), set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(f for f, _ in fn.next_functions)
    return names


def _model(norm: str, kind: str, layers: int) -> CPCModel:
    cfg = preset("tiny")
    cfg.encoder = EncoderConfig(channels=16, norm=norm)
    cfg.context = ContextConfig(kind=kind, hidden=12, layers=layers)
    cfg.predictor.steps = 3
    torch.manual_seed(0)
    return CPCModel(cfg.validate()).double()


def _run(model: CPCModel, wav: torch.Tensor, state, h0: torch.Tensor):
    """Outputs, the autograd node names of z and c, and the gradients of the initial hidden state
    h0 and of every parameter for a fixed random projection of the outputs."""
    out = model(wav, state)
    g = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (out.z, out.c, out.predictions))
    leaves = [h0, *model.parameters()]
    grads = torch.autograd.grad(loss, leaves)
    return out, _graph_nodes(out.z), _graph_nodes(out.c), grads


@pytest.mark.parametrize("norm,kind,layers", [("channel", "gru", 2), ("batch", "gru", 1), ("instance", "lstm", 2), ("none", "gru", 1)])
def test_training_step_equals_plain_torch_through_the_switch(norm, kind, layers):
    model = _model(norm, kind, layers).train()
    wav = torch.randn(2, 8000, dtype=torch.float64)
    h0 = torch.randn(layers, 2, 12, dtype=torch.float64, requires_grad=True)
    state = h0 if kind == "gru" else (h0, torch.randn(layers, 2, 12, dtype=torch.float64))
    fast, fast_z, fast_c, fast_grads = _run(model, wav, state, h0)
    assert kernels.enabled()
    with kernels.disabled():
        assert not kernels.enabled()
        ref, ref_z, ref_c, ref_grads = _run(model, wav, state, h0)
    assert kernels.enabled()

    # the two sides really ran different code
    assert "_BlockedConvBackward" in fast_z and "_ReluPaddedBackward" in fast_z
    assert not any(n.startswith("_") for n in ref_z) and "ConvolutionBackward0" in ref_z
    assert ("_GRULayerBackward" in fast_c) == (kind == "gru") and not any(n.startswith("_GRU") for n in ref_c)

    assert fast.z.shape == (2, 50, 16) and fast.c.shape == (2, 50, 12)
    for name in ("z", "c", "predictions"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=0, atol=1e-10, msg=name)
    names = ["state"] + [n for n, _ in model.named_parameters()]
    for name, a, b in zip(names, fast_grads, ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_inference_equals_plain_torch_through_the_switch(kind):
    model = _model("channel", kind, 2).eval()
    wav = torch.randn(1, 12345, dtype=torch.float64)
    with torch.inference_mode():
        fast = model(wav)
        fast_again = model(wav)  # the convolutions' cached weight matrices
        with kernels.disabled():
            ref = model(wav)
    assert torch.equal(fast.c, fast_again.c)
    for name in ("z", "c", "predictions"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=0, atol=1e-10, msg=name)


def test_switch_is_restored_after_an_error():
    with pytest.raises(RuntimeError, match="boom"):
        with kernels.disabled():
            raise RuntimeError("boom")
    assert kernels.enabled()


@pytest.mark.parametrize("norm", ["none", "channel"])
@pytest.mark.parametrize("kernels_, strides, paddings", [((4, 4), (4, 4), (0, 0)), ((10, 4), (5, 4), (3, 0)), ((10, 3, 4), (5, 4, 2), (3, 0, 1))])
def test_encoder_with_kernel_not_above_stride_trains_like_plain_torch(norm, kernels_, strides, paddings):
    """A layer with kernel <= stride (one partial output per block) used to return a view that the
    next in-place ReLU could not modify: backward failed with norm none."""
    from cpc_speech.model.encoder import Encoder

    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(channels=8, kernels=kernels_, strides=strides, paddings=paddings, norm=norm)).double()
    wav = torch.randn(2, 1600, dtype=torch.float64)
    weights = torch.randn(2, enc.num_frames(1600), 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def run():
        x = wav.clone().requires_grad_(True)
        z = enc(x)
        grads = torch.autograd.grad((z * weights).sum(), [x, *enc.parameters()])
        return z, grads

    fast, fast_grads = run()
    with kernels.disabled():
        ref, ref_grads = run()
    assert fast.shape == (2, enc.num_frames(1600), 8)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)
    for name, a, b in zip(["wav"] + [n for n, _ in enc.named_parameters()], fast_grads, ref_grads):
        assert b.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)
