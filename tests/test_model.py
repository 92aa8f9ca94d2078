"""Model shapes, frame counts, causality, presets, save/load round trip."""

import pytest
import torch

from cpc_speech.engine.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig, PredictorConfig, preset
from cpc_speech.model.cpc import CPCModel
from cpc_speech.model.encoder import Encoder


def tiny(**kw) -> CPCConfig:
    cfg = preset("tiny")
    for section, values in kw.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg.validate()


def test_encoder_geometry_defaults():
    enc = Encoder(EncoderConfig())
    assert enc.downsampling == 160
    assert enc.receptive_field == 465
    assert enc.left_padding == 153
    assert enc.num_frames(20480) == 128


@pytest.mark.parametrize("norm", ["channel", "batch", "instance", "none"])
@pytest.mark.parametrize("samples", [465, 1000, 16000, 20480, 20480 + 159, 33333])
def test_frame_count_helper_matches_forward(norm, samples):
    enc = Encoder(EncoderConfig(channels=16, norm=norm)).eval()
    z = enc(torch.randn(2, samples))
    assert z.shape == (2, enc.num_frames(samples), 16)
    assert torch.isfinite(z).all()


def test_frame_count_is_samples_over_160_on_frame_boundaries():
    enc = Encoder(EncoderConfig(channels=8))
    for frames in (3, 10, 128, 1000):
        assert enc.num_frames(160 * frames) == frames


def test_short_input_is_a_clear_error():
    model = CPCModel(preset("tiny"))
    with pytest.raises(ValueError, match="shorter than the encoder needs"):
        model(torch.randn(1, 400))


def test_channel_norm_normalises_each_frame():
    enc = Encoder(EncoderConfig(channels=32, norm="channel"))
    x = torch.randn(2, 50, 32) * 5 + 3  # (batch, frames, channels)
    y = enc.layers[1](x)  # weight 1, bias 0 at init
    assert torch.allclose(y.mean(-1), torch.zeros(2, 50), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(2, 50), atol=1e-3)


@pytest.mark.parametrize("name,params_m", [("paper", 7.42), ("default", 2.50), ("tiny", 0.158)])
def test_presets_shapes_and_sizes(name, params_m):
    cfg = preset(name)
    model = CPCModel(cfg).eval()
    out = model(torch.randn(2, 20480))
    assert out.z.shape == (2, 128, cfg.encoder.channels)
    assert out.c.shape == (2, 128, cfg.context.hidden)
    assert out.predictions.shape == (2, 128, 12, cfg.encoder.channels)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    assert n == pytest.approx(params_m, rel=0.01)
    assert (cfg.encoder.channels, cfg.encoder.norm) == {"paper": (512, "batch"), "default": (256, "channel"), "tiny": (64, "batch")}[name]


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_context_is_causal(kind):
    """Perturbing samples after frame t's receptive field leaves c_1..c_t unchanged, and changes later frames."""
    model = CPCModel(tiny(context={"kind": kind, "layers": 2, "window": 16})).eval()
    wav = torch.randn(1, 16000)
    t = 40  # frames 0..t see samples < 160 t + 312
    cut = 160 * t + 312
    wav2 = wav.clone()
    wav2[:, cut:] += torch.randn_like(wav2[:, cut:])
    with torch.no_grad():
        c1, c2 = model(wav, predict=False).c, model(wav2, predict=False).c
    assert torch.equal(c1[:, : t + 1], c2[:, : t + 1])
    assert (c1[:, t + 2 :] - c2[:, t + 2 :]).abs().max() > 1e-3


@pytest.mark.parametrize("kind,shared", [("linear", False), ("transformer", False), ("transformer", True)])
def test_prediction_heads_any_window_length(kind, shared):
    model = CPCModel(tiny(predictor={"kind": kind, "steps": 5, "shared": shared})).eval()
    for samples in (3200, 20480, 40960):
        out = model(torch.randn(2, samples))
        assert out.predictions.shape == (2, samples // 160, 5, 64)


@pytest.mark.parametrize("shared", [False, True])
def test_transformer_heads_are_causal(shared):
    model = CPCModel(tiny(predictor={"kind": "transformer", "steps": 3, "shared": shared})).eval()
    c = torch.randn(1, 50, 64)
    c2 = c.clone()
    c2[:, 30:] += 1.0
    with torch.no_grad():
        p1, p2 = model.heads(c), model.heads(c2)
    assert torch.equal(p1[:, :30], p2[:, :30])
    assert (p1[:, 30:] - p2[:, 30:]).abs().max() > 1e-3
    # steps differ from each other: a shared block still has one output map per step
    assert (p1[:, :, 0] - p1[:, :, 1]).abs().max() > 1e-3


def test_shared_transformer_heads_hold_one_block():
    per_step = CPCModel(tiny(predictor={"kind": "transformer", "steps": 4})).heads
    shared = CPCModel(tiny(predictor={"kind": "transformer", "steps": 4, "shared": True})).heads
    assert len(per_step.blocks) == 4 and len(shared.blocks) == 1
    block = sum(p.numel() for p in shared.blocks[0].parameters())
    assert sum(p.numel() for p in per_step.parameters()) == 4 * block + 4 * (64 * 64 + 64)
    assert sum(p.numel() for p in shared.parameters()) == block + 64 * 4 * 64 + 4 * 64


def test_transformer_block_projects_once_and_streams_exactly():
    """One q/k/v projection per call (queries are the last t rows of the projection of past + x),
    and running 40 frames as 25 + 15 with the first part as ``past`` equals one pass."""
    from cpc_speech.model.transformer import CausalTransformerBlock

    torch.manual_seed(0)
    block = CausalTransformerBlock(32, 4, window=8).double().eval()
    calls = []
    block.qkv.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[1]))
    x = torch.randn(2, 40, 32, dtype=torch.float64)
    with torch.no_grad():
        whole = block(x)
        assert calls == [40]
        tail = block(x[:, 25:], past=x[:, 18:25])  # the last window - 1 inputs before frame 25
    assert calls == [40, 22]
    assert torch.allclose(tail, whole[:, 25:], atol=1e-12)


def test_invalid_config_values_are_clear_errors():
    with pytest.raises(ValueError, match="encoder.norm"):
        CPCModel(CPCConfig(encoder=EncoderConfig(norm="layer")))
    with pytest.raises(ValueError, match="context.kind"):
        CPCModel(CPCConfig(context=ContextConfig(kind="rnn")))
    with pytest.raises(ValueError, match="predictor.kind"):
        CPCModel(CPCConfig(predictor=PredictorConfig(kind="mlp")))


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_save_load_round_trip_is_exact(tmp_path, name):
    cfg = preset(name)
    model = CPCModel(cfg)
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.train()(torch.randn(2, 8000))
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, cfg)
    loaded = load_model(path)
    assert not loaded.training
    wav = torch.randn(2, 12345)
    with torch.no_grad():
        a, b = model(wav), loaded(wav)
    assert torch.equal(a.c, b.c) and torch.equal(a.z, b.z) and torch.equal(a.predictions, b.predictions)
    state = torch.load(path, weights_only=True)  # safe loading works: only plain types inside
    assert state["format_version"] == 1 and state["config"]["encoder"]["channels"] == cfg.encoder.channels


class Evil:
    """Not an allowed type for weights_only loading."""


def test_loading_rejects_pickled_objects_and_garbage(tmp_path):
    bad = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": {}, "config": {}, "x": Evil()}, bad)
    with pytest.raises(CheckpointError, match="evil.pt"):
        read_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(junk)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_model(tmp_path / "missing")
