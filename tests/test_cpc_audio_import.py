"""CPC_audio checkpoints: layout built here from CPC_audio's documented format (random weights),
features compared with a reference forward pass written below in plain torch ops."""

import functools

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cpc_speech
from cpc_speech.engine.checkpoint import CheckpointError
from cpc_speech.cli import main

# float32 references: these tests check exactness against one float32 pass on any CPU
extract_fp32 = functools.partial(cpc_speech.extract_features, precision="fp32")

KERNELS, STRIDES, PADDINGS = (10, 8, 4, 4, 4), (5, 4, 2, 2, 2), (3, 2, 1, 1, 1)
C, H = 16, 24


def make_state(norm: str, ar: str, levels: int, seed: int = 0, channels: int = C, hidden: int = H) -> "OrderedDict[str, torch.Tensor]":
    """A CPCModel state dict as CPC_audio names it: gEncoder.conv{i}, gEncoder.batchNorm{i}, gAR.baseNet.*"""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    s = OrderedDict()
    c_in = 1
    for i, k in enumerate(KERNELS):
        s[f"gEncoder.conv{i}.weight"] = rnd(channels, c_in, k, scale=1.0 / math.sqrt(c_in * k))
        s[f"gEncoder.conv{i}.bias"] = rnd(channels, scale=0.1)
        if norm == "layerNorm":
            s[f"gEncoder.batchNorm{i}.weight"] = 1 + rnd(1, channels, 1, scale=0.2)
            s[f"gEncoder.batchNorm{i}.bias"] = rnd(1, channels, 1, scale=0.2)
        elif norm == "batchNorm":
            s[f"gEncoder.batchNorm{i}.weight"] = 1 + rnd(channels, scale=0.2)
            s[f"gEncoder.batchNorm{i}.bias"] = rnd(channels, scale=0.2)
            s[f"gEncoder.batchNorm{i}.running_mean"] = rnd(channels, scale=0.3)
            s[f"gEncoder.batchNorm{i}.running_var"] = 0.5 + torch.rand(channels, generator=g)
            s[f"gEncoder.batchNorm{i}.num_batches_tracked"] = torch.tensor(123)
        elif norm == "instanceNorm":
            s[f"gEncoder.batchNorm{i}.weight"] = 1 + rnd(channels, scale=0.2)
            s[f"gEncoder.batchNorm{i}.bias"] = rnd(channels, scale=0.2)
        c_in = channels
    gates = {"LSTM": 4, "GRU": 3}[ar]
    x_in = channels
    for layer in range(levels):
        s[f"gAR.baseNet.weight_ih_l{layer}"] = rnd(gates * hidden, x_in, scale=1.0 / math.sqrt(x_in))
        s[f"gAR.baseNet.weight_hh_l{layer}"] = rnd(gates * hidden, hidden, scale=1.0 / math.sqrt(hidden))
        s[f"gAR.baseNet.bias_ih_l{layer}"] = rnd(gates * hidden, scale=0.3)
        s[f"gAR.baseNet.bias_hh_l{layer}"] = rnd(gates * hidden, scale=0.3)
        x_in = hidden
    return s


def reference_forward(s, norm: str, ar: str, levels: int, wav: np.ndarray):
    """CPC_audio's CPCEncoder + CPCAR forward, from the weights, in plain torch ops:
    returns (z (frames, C), c (frames, H))."""
    x = torch.from_numpy(wav).float().view(1, 1, -1)
    for i, (k, st, p) in enumerate(zip(KERNELS, STRIDES, PADDINGS)):
        x = F.conv1d(x, s[f"gEncoder.conv{i}.weight"], s[f"gEncoder.conv{i}.bias"], stride=st, padding=p)
        pre = f"gEncoder.batchNorm{i}."
        if norm == "layerNorm":  # unbiased variance over channels
            mean = x.mean(dim=1, keepdim=True)
            var = ((x - mean) ** 2).sum(dim=1, keepdim=True) / (x.shape[1] - 1)
            x = (x - mean) / torch.sqrt(var + 1e-5) * s[pre + "weight"] + s[pre + "bias"]
        elif norm == "batchNorm":  # eval mode: running statistics
            x = (x - s[pre + "running_mean"].view(1, -1, 1)) / torch.sqrt(s[pre + "running_var"].view(1, -1, 1) + 1e-5)
            x = x * s[pre + "weight"].view(1, -1, 1) + s[pre + "bias"].view(1, -1, 1)
        elif norm == "instanceNorm":  # statistics over time, biased
            mean = x.mean(dim=2, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=2, keepdim=True)
            x = (x - mean) / torch.sqrt(var + 1e-5) * s[pre + "weight"].view(1, -1, 1) + s[pre + "bias"].view(1, -1, 1)
        x = torch.clamp(x, min=0)
    z = x[0].t()  # (frames, C)
    seq = z
    for layer in range(levels):
        w_ih, w_hh = s[f"gAR.baseNet.weight_ih_l{layer}"], s[f"gAR.baseNet.weight_hh_l{layer}"]
        b_ih, b_hh = s[f"gAR.baseNet.bias_ih_l{layer}"], s[f"gAR.baseNet.bias_hh_l{layer}"]
        hid = w_hh.shape[1]
        h = torch.zeros(hid)
        cell = torch.zeros(hid)
        outs = []
        for t in range(seq.shape[0]):
            gi = w_ih @ seq[t] + b_ih
            gh = w_hh @ h + b_hh
            if ar == "LSTM":  # gates i, f, g, o
                i_, f_, g_, o_ = (gi + gh).split(hid)
                cell = torch.sigmoid(f_) * cell + torch.sigmoid(i_) * torch.tanh(g_)
                h = torch.sigmoid(o_) * torch.tanh(cell)
            else:  # GRU gates r, z, n; bias_hh_n inside the reset product
                r = torch.sigmoid(gi[:hid] + gh[:hid])
                u = torch.sigmoid(gi[hid:2 * hid] + gh[hid:2 * hid])
                n = torch.tanh(gi[2 * hid:] + r * gh[2 * hid:])
                h = (1 - u) * n + u * h
            outs.append(h)
        seq = torch.stack(outs)
    return z.numpy(), seq.numpy()


def save_training_checkpoint(folder, state, args=None, criterion=None, epoch=3, legacy=False):
    folder.mkdir(parents=True, exist_ok=True)
    obj = {"gEncoder": state, "cpcCriterion": criterion or OrderedDict(), "optimizer": {"state": {}, "param_groups": [{"lr": 2e-4, "params": [0, 1]}]}, "best": state}
    path = folder / f"checkpoint_{epoch}.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    if args is not None:
        (folder / "checkpoint_args.json").write_text(json.dumps(args))
    return path


def waveform(n, seed=1):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


CASES = [
    # (normMode, arMode, levels, how the architecture is known, legacy torch format)
    ("layerNorm", "LSTM", 2, "args", False),
    ("batchNorm", "GRU", 1, "shapes", True),
    ("instanceNorm", "LSTM", 1, "hub", False),
    ("ID", "GRU", 2, "shapes", False),
]


@pytest.mark.parametrize("norm,ar,levels,known,legacy", CASES)
def test_features_match_reference_forward(tmp_path, norm, ar, levels, known, legacy):
    torch.set_num_threads(1)
    state = make_state(norm, ar, levels)
    args = {"hiddenEncoder": C, "hiddenGar": H, "normMode": norm, "arMode": ar, "nLevelsGRU": levels, "cpc_mode": None, "samplingType": "samespeaker", "nPredicts": 12}
    if known == "hub":
        path = tmp_path / "hub.pt"
        torch.save({"config": args, "weights": state}, path)
    else:
        path = save_training_checkpoint(tmp_path / "run", state, args if known == "args" else None, legacy=legacy)
    model = cpc_speech.load_model(path)
    assert model.cfg.encoder.norm == {"layerNorm": "channel", "batchNorm": "batch", "instanceNorm": "instance", "ID": "none"}[norm]
    assert model.cfg.context.kind == ar.lower() and model.cfg.context.layers == levels and model.cfg.context.hidden == H
    for n in (8000, 8159, 12319):
        wav = waveform(n)
        z_ref, c_ref = reference_forward(state, norm, ar, levels, wav)
        assert z_ref.shape[0] == (n + 1) // 160  # CPC_audio's frame count
        z = extract_fp32(wav, sample_rate=16000, model=model, layer="encoder")
        c = extract_fp32(wav, sample_rate=16000, model=model, layer="context")
        assert z.shape == z_ref.shape and c.shape == c_ref.shape
        assert np.abs(z - z_ref).max() <= 1e-4 * max(1.0, np.abs(z_ref).max())
        assert np.abs(c - c_ref).max() <= 1e-4


def test_channel_norm_fold_is_needed():
    """The biased form with the raw weights differs measurably: the fold is what makes it exact."""
    x = torch.randn(1, 8, 5)
    mean = x.mean(dim=1, keepdim=True)
    unbiased = (x - mean) / torch.sqrt(x.var(dim=1, keepdim=True) + 1e-5)
    biased = F.layer_norm(x.transpose(1, 2), (8,), eps=1e-5).transpose(1, 2)
    folded = F.layer_norm(x.transpose(1, 2), (8,), weight=torch.full((8,), math.sqrt(7 / 8)), eps=1e-5 * 7 / 8).transpose(1, 2)
    assert (unbiased - biased).abs().max() > 1e-2
    assert (unbiased - folded).abs().max() < 1e-6


def test_linear_heads_imported_and_cli_import(tmp_path, capsys):
    state = make_state("layerNorm", "GRU", 1, seed=3)
    heads = OrderedDict((f"wPrediction.predictors.{k}.weight", torch.randn(C, H)) for k in range(4))
    path = save_training_checkpoint(tmp_path / "cpc", state, None, criterion=heads, epoch=7)
    save_training_checkpoint(tmp_path / "cpc", make_state("layerNorm", "GRU", 1, seed=9), None, epoch=2)  # older epoch
    model = cpc_speech.load_model(tmp_path / "cpc")  # folder: its highest checkpoint_<N>.pt
    assert model.checkpoint_path == str(path)
    assert model.import_info["heads_imported"] and model.cfg.predictor.steps == 4
    torch.testing.assert_close(model.heads.proj.weight[2 * C:3 * C], heads["wPrediction.predictors.2.weight"], rtol=0, atol=0)
    assert main(["import", "cpc_audio", str(path), "--out", str(tmp_path / "imported")]) == 0
    assert "GRU 24" in capsys.readouterr().out
    again = cpc_speech.load_model(tmp_path / "imported")
    wav = waveform(6000, seed=4)
    np.testing.assert_array_equal(
        extract_fp32(wav, sample_rate=16000, model=again),
        extract_fp32(wav, sample_rate=16000, model=model),
    )
    assert main(["import", "cpc_audio", str(path), "--out", str(tmp_path / "imported")]) == 2  # exists
    assert "exists" in capsys.readouterr().err


def test_wrong_architectures_refused(tmp_path):
    state = make_state("layerNorm", "LSTM", 1)
    args = {"hiddenEncoder": C, "hiddenGar": H, "normMode": "layerNorm", "arMode": "GRU", "nLevelsGRU": 1}
    p = save_training_checkpoint(tmp_path / "a", state, args)
    with pytest.raises(CheckpointError, match="arMode 'GRU'.*LSTM"):
        cpc_speech.load_model(p)
    p = save_training_checkpoint(tmp_path / "b", state, dict(args, arMode="LSTM", normMode="batchNorm"))
    with pytest.raises(CheckpointError, match="normMode 'batchNorm'.*channel"):
        cpc_speech.load_model(p)
    p = save_training_checkpoint(tmp_path / "c", state, dict(args, arMode="LSTM", hiddenGar=2 * H))
    with pytest.raises(CheckpointError, match="hiddenGar 48"):
        cpc_speech.load_model(p)
    extra = OrderedDict(state, **{"gAR.baseNet.weight_hr_l0": torch.zeros(H, H)})
    with pytest.raises(CheckpointError, match="unexpected key 'gAR.baseNet.weight_hr_l0'"):
        cpc_speech.load_model(save_training_checkpoint(tmp_path / "d", extra))
    missing = OrderedDict((k, v) for k, v in state.items() if k != "gAR.baseNet.bias_hh_l0")
    with pytest.raises(CheckpointError, match="missing key 'gAR.baseNet.bias_hh_l0'"):
        cpc_speech.load_model(save_training_checkpoint(tmp_path / "e", missing))
    missing = OrderedDict((k, v) for k, v in state.items() if k != "gEncoder.batchNorm3.bias")
    with pytest.raises(CheckpointError, match="missing key 'gEncoder.batchNorm3.bias'"):
        cpc_speech.load_model(save_training_checkpoint(tmp_path / "f", missing))
    transformer = OrderedDict((k, v) for k, v in state.items() if not k.startswith("gAR."))
    transformer["gAR.layers.0.multihead.Wq.weight"] = torch.zeros(C, C)
    with pytest.raises(CheckpointError, match="not its Transformer"):
        cpc_speech.load_model(save_training_checkpoint(tmp_path / "g", transformer))
    rnn = make_state("layerNorm", "GRU", 1)
    rnn["gAR.baseNet.weight_hh_l0"] = torch.zeros(H, H)
    rnn["gAR.baseNet.weight_ih_l0"] = torch.zeros(H, C)
    with pytest.raises(CheckpointError, match="only LSTM"):
        cpc_speech.load_model(save_training_checkpoint(tmp_path / "h", rnn))
    p = save_training_checkpoint(tmp_path / "i", state, dict(args, arMode="LSTM", cpc_mode="reverse"))
    with pytest.raises(CheckpointError, match="cpc_mode 'reverse'"):
        cpc_speech.load_model(p)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="bad.pt"):
        cpc_speech.load_model(bad)


def test_imported_run_exports_a_bundle_with_its_origin(tmp_path):
    state = make_state("batchNorm", "LSTM", 1, seed=5)
    path = save_training_checkpoint(tmp_path / "cpc", state, None, epoch=31)
    assert main(["import", "cpc_audio", str(path), "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run"), "--format", "bundle", "--out", str(tmp_path / "bundle")]) == 0
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert "imported from a cpc_audio checkpoint (checkpoint_31.pt, epoch 31); architecture: inferred from tensor shapes" in card
    assert "prediction heads not imported" in card
    wav = waveform(7000, seed=6)
    _, c_ref = reference_forward(state, "batchNorm", "LSTM", 1, wav)
    c = extract_fp32(wav, sample_rate=16000, model=cpc_speech.load_model(tmp_path / "bundle"))
    assert np.abs(c - c_ref).max() <= 1e-4


def test_best_state_and_keeping_the_first_context_layers(tmp_path, capsys):
    last = make_state("layerNorm", "LSTM", 3, seed=11)
    best = make_state("layerNorm", "LSTM", 3, seed=12)
    folder = tmp_path / "cpc"
    folder.mkdir()
    torch.save({"gEncoder": last, "cpcCriterion": OrderedDict(), "optimizer": {}, "best": best}, folder / "checkpoint_9.pt")
    wav = waveform(5000, seed=8)
    assert main(["import", "cpc_audio", str(folder / "checkpoint_9.pt"), "--out", str(tmp_path / "l2"), "--state", "best", "--context-layers", "2"]) == 0
    assert "(first 2 of 3 kept) from the 'best' state" in capsys.readouterr().out
    model = cpc_speech.load_model(tmp_path / "l2")
    assert model.cfg.context.layers == 2
    _, c_ref = reference_forward(best, "layerNorm", "LSTM", 2, wav)  # the 2nd layer's outputs of the best state
    assert np.abs(extract_fp32(wav, sample_rate=16000, model=model) - c_ref).max() <= 1e-4
    _, c_last = reference_forward(last, "layerNorm", "LSTM", 3, wav)
    assert np.abs(extract_fp32(wav, sample_rate=16000, model=cpc_speech.load_model(folder)) - c_last).max() <= 1e-4
    assert main(["import", "cpc_audio", str(folder), "--out", str(tmp_path / "x"), "--context-layers", "4"]) == 2
    assert "between 1 and 3" in capsys.readouterr().err
