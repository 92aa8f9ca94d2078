"""Layer choice: encoder, context, context.N of multi-layer GRU/LSTM/Transformer contexts,
encoder+context; exact against the plain model, chunked (streamed) like one pass, in extraction,
batched extraction and the probes' feature folders."""

import functools

import numpy as np
import pytest
import torch

from cpc_speech.config import ContextConfig, EncoderConfig, preset
from cpc_speech import features
from cpc_speech.features import FeatureError, load_feature_dir

from cpc_speech.model.cpc import CPCModel
from cpc_speech.model.layers import layer_dim, parse_layer

# float32: these tests check exactness against one float32 pass (bf16 is tested in test_precision.py)
extract_features = functools.partial(features.extract_features, precision="fp32")
extract_features_batch = functools.partial(features.extract_features_batch, precision="fp32")
extract_corpus = functools.partial(features.extract_corpus, precision="fp32")

pytestmark = pytest.mark.usefixtures("one_thread")


def model(kind: str, layers: int, seed: int = 0) -> CPCModel:
    cfg = preset("tiny")
    cfg.encoder = EncoderConfig(channels=16)
    cfg.context = ContextConfig(kind=kind, hidden=24, heads=4, window=16, layers=layers)
    torch.manual_seed(seed)
    return CPCModel(cfg).eval()


def wav(n: int, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_layer_names():
    assert parse_layer("encoder") == (True, None) and parse_layer("context") == (False, -1)
    assert parse_layer("context.2") == (False, 2) and parse_layer("encoder+context.1") == (True, 1)
    for bad in ("ctx", "context.", "context.-1", "encoder+encoder", "context+encoder"):
        with pytest.raises(ValueError, match="layer must be"):
            parse_layer(bad)
    m = model("gru", 2)
    assert layer_dim(m.cfg, "encoder+context") == 40 and layer_dim(m.cfg, "context.0") == 24
    with pytest.raises(FeatureError, match="has 2 layer"):
        extract_features(wav(3200), 16000, m, layer="context.2")


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_context_layers_are_exact(kind):
    m = model(kind, 2)
    x = wav(16000)
    with torch.inference_mode():
        out = m(torch.from_numpy(x)[None], predict=False)
    full = extract_features(x, 16000, m, layer="context")
    np.testing.assert_allclose(full, out.c[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(extract_features(x, 16000, m, layer="context.1"), full)
    # layer 0 of the 2-layer network = a 1-layer network holding the same layer-0 weights
    one = model(kind, 1)
    state = {k: v for k, v in m.state_dict().items() if k in one.state_dict()
             and not k.startswith("context.norm") and "_l1" not in k and not k.startswith("context.blocks.1")}
    one.load_state_dict({**one.state_dict(), **state})
    with torch.inference_mode():
        z = one.encoder(torch.from_numpy(x)[None])
        want = one.context.rnn(z)[0][0] if kind != "transformer" else one.context.blocks[0](one.context.inp(z), None)[0]
    np.testing.assert_allclose(extract_features(x, 16000, m, layer="context.0"), want.numpy(), atol=1e-5)
    both = extract_features(x, 16000, m, layer="encoder+context.0")
    np.testing.assert_array_equal(both[:, :16], extract_features(x, 16000, m, layer="encoder"))
    np.testing.assert_allclose(both[:, 16:], want.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", ["gru", "transformer"])
def test_inner_layer_streams_exactly(kind):
    m = model(kind, 3)
    x = wav(16000 * 4, seed=1)
    one_pass = extract_features(x, 16000, m, layer="context.1", chunk_seconds=10.0)
    chunked = extract_features(x, 16000, m, layer="context.1", chunk_seconds=0.7)
    np.testing.assert_allclose(chunked, one_pass, atol=1e-5)
    batch = extract_features_batch([wav(5000, 2), x[:24000]], m, layer="encoder+context.1", sample_rate=16000)
    np.testing.assert_allclose(batch[1], extract_features(x[:24000], 16000, m, layer="encoder+context.1"), atol=1e-5)


def test_corpus_extraction_records_the_layer(tmp_path):
    import soundfile as sf

    m = model("gru", 2)
    rows = []
    for i in range(2):
        p = tmp_path / f"u{i}.flac"
        sf.write(p, wav(8000, i), 16000)
        rows.append((f"u{i}", str(p)))
    res = extract_corpus(m, rows, tmp_path / "f", layer="context.0", progress=False)
    feats = load_feature_dir(res.out_dir)
    assert feats["u0"].shape[1] == 24
    import json

    assert json.loads((tmp_path / "f" / "meta.json").read_text())["layer"] == "context.0"
    np.testing.assert_allclose(feats["u1"], extract_features(str(rows[1][1]), model=m, layer="context.0"), atol=1e-5)
