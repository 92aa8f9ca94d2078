"""StreamingExtractor: pushed chunks of random sizes give extract_features' frames."""

import functools

import numpy as np
import pytest
import torch

import cpc_speech
from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig
from cpc_speech.model.cpc import CPCModel
from cpc_speech.features.streaming import StreamingError, StreamingExtractor

# float32 references: these tests check exactness against one float32 pass on any CPU
extract_fp32 = functools.partial(cpc_speech.extract_features, precision="fp32")

pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(norm, kind, seed=0):
    torch.manual_seed(seed)
    ctx = ContextConfig(kind=kind, hidden=16, layers=2 if kind != "transformer" else 1, heads=2, window=7)
    model = CPCModel(CPCConfig(encoder=EncoderConfig(channels=16, norm=norm), context=ctx)).eval()
    for layer in model.encoder.layers:
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.normal_()
            layer.running_var.uniform_(0.5, 2.0)
    return model


def random_chunks(wav, rng, max_len):
    out, i = [], 0
    while i < wav.size:
        n = int(rng.choice([1, 2, 7, 159, 160, 161, 320, int(rng.integers(1, max_len + 1))]))
        out.append(wav[i:i + n])
        i += n
    return out


@pytest.mark.parametrize("norm,kind", [("channel", "gru"), ("batch", "lstm"), ("none", "transformer"), ("channel", "lstm")])
@pytest.mark.parametrize("layer", ["context", "encoder"])
def test_random_chunkings_equal_offline(norm, kind, layer):
    model = small_model(norm, kind)
    rng = np.random.default_rng(hash((norm, kind, layer)) % 2**32)
    for n, max_len in ((3211, 50), (9000, 4000), (48000, 48000)):
        wav = (0.3 * rng.standard_normal(n)).astype(np.float32)
        offline = extract_fp32(wav, sample_rate=16000, model=model, layer=layer)
        stream = StreamingExtractor(model, layer=layer)
        pieces = [stream.push(c) for c in random_chunks(wav, rng, max_len)]
        pieces.append(stream.flush())
        got = np.concatenate(pieces)
        assert got.shape == offline.shape
        assert np.abs(got - offline).max() <= 1e-4


def test_frames_arrive_with_their_receptive_field():
    model = small_model("channel", "gru")
    stream = StreamingExtractor(model)
    wav = np.random.default_rng(0).standard_normal(2000).astype(np.float32)
    assert stream.push(wav[:464]).shape == (0, 16)  # < one receptive field: nothing yet
    for n in range(465, 2000):  # frame t is out once its receptive field [160 t - 153, 160 t + 312) is in
        stream.push(wav[n - 1:n])
        assert stream.frames == (n - 312) // 160 + 1, n
    assert stream.frames + stream.flush().shape[0] == model.encoder.num_frames(1999)
    with pytest.raises(StreamingError, match="reset"):
        stream.push(np.zeros(10, np.float32))
    stream.reset()
    assert stream.push(np.zeros(100, np.float32)).shape[0] == 0 and stream.flush().shape[0] == 0


def test_instance_norm_refused():
    with pytest.raises(StreamingError, match="instance norm"):
        StreamingExtractor(small_model("instance", "gru"))
    with pytest.raises(StreamingError, match="1-D"):
        StreamingExtractor(small_model("none", "gru")).push(np.zeros((2, 10), np.float32))


def test_minutes_in_second_long_pushes():
    model = small_model("channel", "gru", seed=3)
    rng = np.random.default_rng(7)
    wav = (0.3 * rng.standard_normal(16000 * 75)).astype(np.float32)  # 75 s: chunked offline path
    offline = extract_fp32(wav, sample_rate=16000, model=model)
    stream = StreamingExtractor(model)
    cuts = np.cumsum(rng.integers(1, 16000 * 20, size=20))
    pieces = [stream.push(c) for c in np.split(wav, cuts[cuts < wav.size])] + [stream.flush()]
    got = np.concatenate(pieces)
    assert got.shape == offline.shape and np.abs(got - offline).max() <= 1e-4
