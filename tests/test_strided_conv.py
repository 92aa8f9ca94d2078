"""The channels-last strided convolution equals nn.Conv1d, values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cpc_speech.config import EncoderConfig
from cpc_speech.model.encoder import Encoder
from cpc_speech.kernels.strided_conv import (
    StridedConv1d,
    matrix_to_weight,
    pad_frames,
    relu_padded,
    strided_conv1d,
    weight_to_matrix,
)


@pytest.mark.parametrize(
    "c_in,c_out,kernel,stride,padding,frames",
    [
        (1, 8, 10, 5, 3, 203),  # the waveform layer (unfolded path)
        (6, 8, 8, 4, 2, 64),  # encoder layer 2 geometry (blocked path, M = 2)
        (6, 8, 4, 2, 1, 33),  # layers 3-5 (odd length)
        (5, 7, 7, 3, 2, 31),  # kernel not a multiple of the stride (M = 3, zero taps)
        (5, 7, 3, 3, 0, 32),  # kernel = stride (M = 1), input longer than the blocks read
        (5, 7, 5, 1, 2, 12),  # stride 1
    ],
)
def test_matches_conv1d_values_and_gradients(c_in, c_out, kernel, stride, padding, frames):
    torch.manual_seed(0)
    conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=padding).double()
    x = torch.randn(3, frames, c_in, dtype=torch.float64, requires_grad=True)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    got = strided_conv1d(x, conv.weight, conv.bias, stride, padding)
    assert got.shape == ref.shape == (3, (frames + 2 * padding - kernel) // stride + 1, c_out)
    assert torch.allclose(got, ref, atol=1e-12)
    g = torch.randn_like(ref)
    want = torch.autograd.grad(ref, (x, conv.weight, conv.bias), g)
    have = torch.autograd.grad(got, (x, conv.weight, conv.bias), g)
    for name, a, b in zip(("input", "weight", "bias"), have, want):
        assert torch.allclose(a, b, atol=1e-11), name


def test_gradcheck_blocked_path():
    torch.manual_seed(1)
    x = torch.randn(2, 17, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: strided_conv1d(x, w, b, 2, 1), (x, w, b))


def test_weight_matrix_round_trip_is_exact():
    w = torch.randn(5, 3, 7)
    assert torch.equal(matrix_to_weight(weight_to_matrix(w, 3), 5, 3, 7, 3), w)


def test_parameters_and_init_match_conv1d():
    torch.manual_seed(3)
    ours = StridedConv1d(16, 32, 8, stride=4, padding=2)
    torch.manual_seed(3)
    ref = nn.Conv1d(16, 32, 8, stride=4, padding=2)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert torch.equal(ours.weight, ref.weight) and torch.equal(ours.bias, ref.bias)


def test_too_short_input_is_a_clear_error():
    with pytest.raises(ValueError, match="too few"):
        strided_conv1d(torch.randn(1, 3, 2), torch.randn(4, 2, 8), None, 4, 0)


@pytest.mark.parametrize("norm", ["channel", "batch", "instance", "none"])
def test_encoder_equals_channels_first_reference(norm):
    """The whole encoder equals the textbook channels-first stack (Conv1d, norm over channels,
    ReLU) built from the same state dict, in training mode and in eval mode."""
    torch.manual_seed(2)
    cfg = EncoderConfig(channels=16, norm=norm)
    enc = Encoder(cfg).double()
    wav = torch.randn(3, 20480, dtype=torch.float64)
    state = enc.state_dict()

    def reference(x, training):
        h = x.unsqueeze(1)
        for i, (k, s, p) in enumerate(zip(cfg.kernels, cfg.strides, cfg.paddings)):
            h = F.conv1d(h, state[f"layers.{3 * i}.weight"], state[f"layers.{3 * i}.bias"], stride=s, padding=p)
            pre = f"layers.{3 * i + 1}."
            if norm == "channel":
                var, mean = torch.var_mean(h, dim=1, keepdim=True, unbiased=False)
                h = (h - mean) / torch.sqrt(var + 1e-5) * state[pre + "weight"] + state[pre + "bias"]
            elif norm == "batch":
                h = F.batch_norm(h, state[pre + "running_mean"].clone(), state[pre + "running_var"].clone(),
                                 state[pre + "weight"], state[pre + "bias"], training=training)
            elif norm == "instance":
                h = F.instance_norm(h, weight=state[pre + "weight"], bias=state[pre + "bias"])
            h = F.relu(h)
        return h.transpose(1, 2)

    for training in (True, False):
        enc.train(training)
        with torch.no_grad():
            got = enc(wav)
        assert got.shape == (3, 128, 16)
        assert torch.allclose(got, reference(wav, training), atol=1e-9), (norm, training)

    # gradients in training mode (ReLUs written into the next layer's padded input, convolutions
    # reading it as it is) equal those of the reference built on the same parameters
    enc.train()
    state = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in enc.state_dict().items()}
    proj = torch.randn(3, 128, 16, dtype=torch.float64)
    want = torch.autograd.grad((reference(wav, True) * proj).sum(), [state[k] for k, _ in enc.named_parameters()])
    have = torch.autograd.grad((enc(wav) * proj).sum(), list(enc.parameters()))
    for (name, _), a, b in zip(enc.named_parameters(), have, want):
        assert torch.allclose(a, b, atol=1e-9), (norm, name)


def test_autocast_bf16_runs_in_bf16_and_keeps_fp32_gradients():
    torch.manual_seed(0)
    conv = StridedConv1d(8, 8, 8, stride=4, padding=2)
    x = torch.randn(2, 64, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert x.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    ref = F.conv1d(x.detach().transpose(1, 2), conv.weight.detach(), conv.bias.detach(), stride=4, padding=2).transpose(1, 2)
    assert torch.allclose(y.float(), ref, atol=0.05 * ref.abs().max().item())  # bf16 rounding only


@pytest.mark.parametrize("c_in,kernel,stride,padding", [(1, 10, 5, 3), (6, 8, 4, 2)])
def test_no_grad_path_reuses_weights_until_they_change(c_in, kernel, stride, padding):
    torch.manual_seed(0)
    conv = StridedConv1d(c_in, 8, kernel, stride=stride, padding=padding).double()
    x = torch.randn(2, 80, c_in, dtype=torch.float64)
    ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, stride=stride, padding=padding).transpose(1, 2)
    with torch.inference_mode():
        first = conv(x)
        again = conv(x)
    assert torch.allclose(first, ref, atol=1e-12) and torch.equal(first, again)
    with torch.no_grad():
        conv.weight.mul_(2.0)  # an optimiser step: the cached matrix must be rebuilt
        changed = conv(x)
    ref2 = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, stride=stride, padding=padding).transpose(1, 2)
    assert torch.allclose(changed, ref2, atol=1e-12) and not torch.allclose(changed, first)


@pytest.mark.parametrize("left,right", [(2, 3), (0, 0), (1, -2), (3, 0)])
def test_pad_frames_equals_f_pad(left, right):
    """The padding helper (zeroes only the added frames) gives F.pad's result, contiguous; a
    negative right side drops input frames."""
    x = torch.randn(3, 7, 5)
    got = pad_frames(x, left, right)
    want = torch.nn.functional.pad(x, (0, 0, left, right))
    assert got.is_contiguous() and got.shape == want.shape == (3, left + 7 + right, 5)
    assert torch.equal(got, want)


@pytest.mark.parametrize("left,right", [(2, 3), (1, -2), (0, 0)])
def test_relu_padded_equals_relu_then_pad(left, right):
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    got = relu_padded(x, left, right)
    assert torch.equal(got, pad_frames(F.relu(x), left, right))
    assert torch.autograd.gradcheck(lambda x: relu_padded(x, left, right), (x,))
