"""Feature extraction: frame counts, input forms, resampling, exact chunking, batching, corpus
extraction with its cache, checkpoint loading."""

from __future__ import annotations

import functools
import json
import time
import warnings

import numpy as np
import pytest
import torch

from cpc_speech.audio import write_audio
from cpc_speech.engine.checkpoint import load_model, save_checkpoint
from cpc_speech.config import ContextConfig, EncoderConfig, preset
from cpc_speech.corpora.manifest import Utterance
from cpc_speech import features
from cpc_speech.features import FeatureError, corpus, inference, load_feature_dir, read_index, read_meta, store
from cpc_speech.features.pipeline import ordered_map
from cpc_speech.model.cpc import CPCModel

# These tests pin float32: they check that chunking, batching and threading reproduce one pass of
# the model to float32 rounding on any CPU. bf16 extraction is tested in test_precision.py.
extract_features = functools.partial(features.extract_features, precision="fp32")
extract_features_batch = functools.partial(features.extract_features_batch, precision="fp32")
extract_corpus = functools.partial(features.extract_corpus, precision="fp32")


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(kind: str = "gru", norm: str = "channel", seed: int = 0) -> CPCModel:
    """A small random model: 32 encoder channels, 32-dim context (GRU, LSTM or 2-layer Transformer
    with a 24-frame attention span)."""
    cfg = preset("tiny")
    cfg.encoder = EncoderConfig(channels=32, norm=norm)
    cfg.context = ContextConfig(kind=kind, hidden=32, heads=4, window=24, layers=2 if kind == "transformer" else 1)
    torch.manual_seed(seed)
    return CPCModel(cfg).eval()


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (0.2 * env * np.sin(2 * np.pi * (200 + 100 * np.sin(t)) * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def gru():
    return small_model("gru")


def test_frame_counts(gru):
    for n in (465, 466, 639, 640, 16000, 16159, 20480, 33333):
        for layer, dim in (("context", 32), ("encoder", 32)):
            f = extract_features(speechlike(n), 16000, gru, layer=layer)
            assert f.shape == (gru.encoder.num_frames(n), dim) and f.dtype == np.float32
    assert extract_features(speechlike(20480), 16000, gru).shape[0] == 128
    with pytest.raises(ValueError, match="too short"):
        extract_features(speechlike(400), 16000, gru)


def test_model_required_and_layer_checked(gru):
    with pytest.raises(FeatureError, match="needs model="):
        extract_features(speechlike(1000), 16000)
    with pytest.raises(FeatureError, match="layer"):
        extract_features(speechlike(1000), 16000, gru, layer="heads")


def test_matches_model_forward(gru):
    x = speechlike(16000)
    with torch.inference_mode():
        out = gru(torch.from_numpy(x)[None], predict=False)
    np.testing.assert_allclose(extract_features(x, 16000, gru), out.c[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(extract_features(x, 16000, gru, layer="encoder"), out.z[0].numpy(), atol=1e-5)


def test_input_forms_agree(gru, tmp_path):
    x = speechlike(12345)
    ref = extract_features(x, 16000, gru)
    write_audio(tmp_path / "a.wav", x, subtype="FLOAT")
    for form in (tmp_path / "a.wav", str(tmp_path / "a.wav")):
        np.testing.assert_allclose(extract_features(form, model=gru), ref, atol=1e-6)
    for form in (torch.from_numpy(x), np.stack([x, x]), np.stack([x, x], 1), torch.from_numpy(np.stack([x, x], 1))):
        np.testing.assert_allclose(extract_features(form, 16000, gru), ref, atol=1e-6)


def test_resampled_input_matches_16k(gru):
    """The same band-limited signal given at 8 kHz and at 16 kHz: features agree (resampling of a
    signal below 4 kHz is nearly exact; the first/last frames see the resampler's edge effects)."""
    rng = np.random.default_rng(3)
    freqs, phases = rng.uniform(100, 3000, 12), rng.uniform(0, 6.28, 12)

    def at(rate, seconds=2.0):
        t = np.arange(int(seconds * rate)) / rate
        return (0.05 * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None]).sum(0)).astype(np.float32)

    f16 = extract_features(at(16000), 16000, gru, layer="encoder")
    f8 = extract_features(at(8000), 8000, gru, layer="encoder")
    assert f8.shape == f16.shape
    inner = slice(5, -5)
    err = np.abs(f8[inner] - f16[inner]).max()
    assert err < 0.02 * np.abs(f16[inner]).max(), err
    c16, c8 = extract_features(at(16000), 16000, gru), extract_features(at(8000), 8000, gru)
    assert np.abs(c8[inner] - c16[inner]).max() < 0.02


@pytest.mark.parametrize("kind", ["gru", "lstm", "transformer"])
def test_chunked_equals_one_pass_on_3_minutes(kind):
    """3 minutes of audio in 7.3 s chunks (encoder windows aligned to 160 samples with overlap,
    context state carried) equal one pass to 1e-4. The one-pass reference for the Transformer
    context is computed from overlapping segments (its output at t depends on the last
    layers x (window-1) frames only), since one call on 18000 frames would need a 18000^2 bias."""
    model = small_model(kind)
    x = speechlike(16000 * 180 + 77, seed=1)
    chunked = extract_features(x, 16000, model, chunk_seconds=7.3)
    z_chunked = extract_features(x, 16000, model, layer="encoder", chunk_seconds=7.3)
    with torch.inference_mode():
        z = model.encoder(torch.from_numpy(x)[None])
        if kind == "transformer":
            span = model.cfg.context.layers * (model.cfg.context.window - 1)
            parts = []
            for s in range(0, z.shape[1], 500):
                a = max(0, s - span)
                parts.append(model.context(z[:, a:s + 500])[0][0, s - a:])
            c = torch.cat(parts)
        else:
            c = model.context(z)[0][0]
    assert chunked.shape == (model.encoder.num_frames(x.size), 32) == tuple(c.shape)
    np.testing.assert_allclose(z_chunked, z[0].numpy(), atol=1e-4)
    np.testing.assert_allclose(chunked, c.numpy(), atol=1e-4)


def test_instance_norm_runs_whole():
    model = small_model("gru", norm="instance")
    x = speechlike(16000 * 4)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)[None], predict=False).c[0].numpy()
    np.testing.assert_allclose(extract_features(x, 16000, model, chunk_seconds=1.0), ref, atol=1e-5)


def test_batch_equals_single(gru):
    xs = [speechlike(n, seed=n) for n in (465, 1000, 16000, 33333, 5000, 20480)]
    batch = extract_features_batch(xs, gru, sample_rate=16000, batch_seconds=3.0)
    for x, f in zip(xs, batch):
        np.testing.assert_allclose(f, extract_features(x, 16000, gru), atol=1e-5)
    long = speechlike(16000 * 3)
    f = extract_features_batch([long, xs[1]], gru, sample_rate=16000, chunk_seconds=1.0)[0]
    np.testing.assert_allclose(f, extract_features(long, 16000, gru), atol=1e-4)


def test_ordered_map_keeps_order_bounds_lookahead_and_raises_at_the_item():
    """Results come back in input order although later calls finish first; at most ``ahead``
    calls are submitted beyond the consumer; an exception surfaces at its own item."""
    import threading

    lock, running, seen_max = threading.Lock(), [0], [0]

    def slow_square(i):
        with lock:
            running[0] += 1
            seen_max[0] = max(seen_max[0], running[0])
        time.sleep(0.02 if i % 2 == 0 else 0.001)  # even items finish after the odd ones
        with lock:
            running[0] -= 1
        if i == 7:
            raise ValueError("item 7 is bad")
        return i * i

    got = []
    with pytest.raises(ValueError, match="item 7"):
        for i, sq in ordered_map(slow_square, range(10), workers=2, ahead=3):
            got.append((i, sq))
    assert got == [(i, i * i) for i in range(7)]
    assert seen_max[0] == 2  # two threads ran calls at the same time, never more
    assert list(ordered_map(lambda i: -i, range(4), workers=0, ahead=1)) == [(0, 0), (1, -1), (2, -2), (3, -3)]


def test_parallel_chunk_encoding_equals_one_thread(gru, monkeypatch):
    """With 2 torch threads, the chunks of long inputs are encoded on 2 threads (one intra-op
    thread each) while the context runs in order: the features equal the 1-thread result and one
    pass, both worker threads did encode chunks, and torch's thread count is restored."""
    import threading

    xs = [speechlike(16000 * 3 + 321, seed=1), speechlike(16000 * 2, seed=2), speechlike(5000, seed=3)]
    serial = extract_features_batch(xs, gru, sample_rate=16000, chunk_seconds=0.5)
    calls = []
    encode = inference._encode_frames

    def recording(*args):
        calls.append((threading.get_ident(), torch.get_num_threads(), torch.is_inference_mode_enabled()))
        return encode(*args)

    monkeypatch.setattr(inference, "_encode_frames", recording)
    torch.set_num_threads(2)
    parallel = extract_features_batch(xs, gru, sample_rate=16000, chunk_seconds=0.5)
    assert torch.get_num_threads() == 2
    chunk_calls = [c for c in calls if c[0] != threading.get_ident()]
    assert len({c[0] for c in chunk_calls}) == 2, "chunks were not encoded on two threads"
    assert all(c[1] == 1 and c[2] for c in chunk_calls)  # one intra-op thread each, no autograd
    single = extract_features(xs[0], 16000, gru, chunk_seconds=0.5)
    assert torch.get_num_threads() == 2
    for x, a, b in zip(xs, serial, parallel):
        assert a.shape == b.shape == (gru.encoder.num_frames(x.size), 32)
        np.testing.assert_allclose(b, a, atol=1e-5)
    with torch.inference_mode():
        one_pass = gru(torch.from_numpy(xs[0])[None], predict=False).c[0].numpy()
    np.testing.assert_allclose(single, one_pass, atol=1e-4)


@pytest.fixture()
def small_corpus(tmp_path):
    rows = []
    for i, n in enumerate((16000, 7000, 24000, 3000)):
        p = tmp_path / "audio" / f"u{i}.flac"
        write_audio(p, speechlike(n, seed=i))
        rows.append(Utterance(f"u{i}", str(p), "spk", n, 16000))
    p = tmp_path / "audio" / "u8k.wav"
    write_audio(p, speechlike(8000, seed=9), sample_rate=8000)
    rows.append(Utterance("u8k", str(p), "spk", 8000, 8000))
    bad = tmp_path / "audio" / "broken.flac"
    bad.write_bytes(b"fLaC this is not audio")
    rows.append(Utterance("broken", str(bad), "spk", 16000, 16000))
    return rows


def test_extract_corpus_index_cache_and_invalidation(gru, small_corpus, tmp_path):
    out = tmp_path / "feats"
    good = [r for r in small_corpus if r.id != "broken"]
    with pytest.warns(UserWarning) as record:
        res = extract_corpus(gru, small_corpus, out, progress=False)
    messages = [str(w.message) for w in record]
    assert sum("broken" in m and "skipping" in m for m in messages) == 1
    assert any("skipped 1 of 6" in m for m in messages)
    assert res.ids == [r.id for r in good] and res.computed == 5 and res.skipped[0][0] == "broken"
    index = read_index(out)
    assert [r[0] for r in index] == res.ids
    feats = load_feature_dir(out)
    assert isinstance(feats["u0"], np.memmap)
    for r in good:
        expected = extract_features(r.path, model=gru)
        assert dict((row[0], row[2:]) for row in index)[r.id] == expected.shape
        np.testing.assert_allclose(feats[r.id], expected, atol=1e-5)
    meta = read_meta(out)
    assert meta["layer"] == "context" and meta["model_config"]["context"]["kind"] == "gru"

    # same model (a different object with equal weights): nothing recomputed
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    time.sleep(0.01)
    twin = small_model("gru")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = extract_corpus(twin, small_corpus, out, progress=False)
    assert again.computed == 0 and again.cached == 5
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")} == mtimes

    # another layer or another model invalidates the folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = extract_corpus(gru, good, out, layer="encoder", progress=False)
        assert enc.computed == 5 and read_meta(out)["layer"] == "encoder"
        other = extract_corpus(small_model("gru", seed=5), good, out, progress=False)
    assert other.computed == 5
    np.testing.assert_allclose(load_feature_dir(out)["u2"], extract_features(good[2].path, model=small_model("gru", seed=5)), atol=1e-5)


def test_extract_corpus_float16_mfcc_and_checkpoint(gru, small_corpus, tmp_path):
    good = [r for r in small_corpus if r.id != "broken"]
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "best.pt", gru, gru.cfg)
    loaded = load_model(run)
    for a, b in zip(loaded.state_dict().values(), gru.state_dict().values()):
        assert torch.equal(a, b)
    res = extract_corpus(run, good, tmp_path / "f16", dtype="float16", progress=False, workers=0)
    meta = read_meta(tmp_path / "f16")
    assert meta["checkpoint"] == str((run / "checkpoints" / "best.pt").resolve()) and meta["checkpoint_mtime"] > 0
    f = load_feature_dir(tmp_path / "f16")["u0"]
    assert f.dtype == np.float16
    np.testing.assert_allclose(f.astype(np.float32), extract_features(good[0].path, model=gru), atol=2e-2)
    # a checkpoint of the same weights uses the cache of the in-memory model
    assert extract_corpus(gru, good, tmp_path / "f16", dtype="float16", progress=False).cached == len(res.ids)
    m = extract_corpus("mfcc", good, tmp_path / "mfcc", progress=False)
    assert m.computed == 5 and load_feature_dir(tmp_path / "mfcc")["u0"].shape == (100, 39)


def test_cli_extract(gru, small_corpus, tmp_path, capsys):
    from cpc_speech.cli import main
    from cpc_speech.corpora.manifest import write_manifest

    save_checkpoint(tmp_path / "m.pt", gru, gru.cfg)
    write_manifest(small_corpus, tmp_path / "manifest.tsv")
    code = main(["extract", "--model", str(tmp_path / "m.pt"), "--manifest", str(tmp_path / "manifest.tsv"),
                 "--out", str(tmp_path / "out"), "--layer", "encoder", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and "5 utterances" in captured.out and "1 skipped" in captured.out
    assert "broken" in captured.err
    assert len(read_index(tmp_path / "out")) == 5 and json.loads((tmp_path / "out" / "meta.json").read_text())["layer"] == "encoder"


def test_extract_corpus_batch_norm_model(small_corpus, tmp_path):
    """Models with 0-dim buffers (BatchNorm's num_batches_tracked) are fingerprinted for the cache."""
    model = small_model("gru", norm="batch")
    good = [r for r in small_corpus if r.id != "broken"]
    res = extract_corpus(model, good, tmp_path / "bn", progress=False)
    assert res.computed == 5
    assert extract_corpus(model, good, tmp_path / "bn", progress=False).cached == 5


def _long_corpus(tmp_path, lengths=(16000 * 3 + 77, 5000, 16000 * 4, 9000, 16000 * 2 + 1)):
    rows = []
    for i, n in enumerate(lengths):
        p = tmp_path / "long" / f"l{i}.flac"
        write_audio(p, speechlike(n, seed=20 + i))
        rows.append(Utterance(f"l{i}", str(p), "spk", n, 16000))
    return rows


def test_corpus_chunks_form_one_stream_across_files(gru, tmp_path, monkeypatch):
    """With 2 torch threads the chunks of every file of the corpus go through one encoder stream:
    the stream is created once for the whole corpus (not per group of files), both worker threads
    encode, and each file's features equal extract_features on it alone."""
    rows = _long_corpus(tmp_path)
    streams = []
    real = inference.encode_in_order

    def counting(*args, **kwargs):
        streams.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "encode_in_order", counting)
    torch.set_num_threads(2)
    res = extract_corpus(gru, rows, tmp_path / "out", progress=False, chunk_seconds=0.7, batch_seconds=3.0)
    assert len(streams) == 1 and res.computed == 5
    monkeypatch.setattr(inference, "encode_in_order", real)
    feats = load_feature_dir(tmp_path / "out")
    for r in rows:
        np.testing.assert_allclose(feats[r.id], extract_features(r.path, model=gru), atol=1e-5)


def test_corpus_extraction_in_two_processes_equals_one(gru, tmp_path):
    rows = _long_corpus(tmp_path)
    one = extract_corpus(gru, rows, tmp_path / "one", progress=False)
    two = extract_corpus(gru, rows, tmp_path / "two", progress=False, processes=2)
    assert one.ids == two.ids == [r.id for r in rows] and two.computed == 5
    assert read_index(tmp_path / "one") == read_index(tmp_path / "two")
    a, b = load_feature_dir(tmp_path / "one"), load_feature_dir(tmp_path / "two")
    for r in rows:
        np.testing.assert_allclose(b[r.id], a[r.id], atol=1e-6)
    assert read_meta(tmp_path / "two")["precision"] == "fp32"


def test_killed_corpus_extraction_resumes(gru, tmp_path, monkeypatch):
    """The index is rewritten while the run goes; a run killed after some files (what SIGKILL
    leaves: finished .npy files, meta.json, an index of what was done) resumes with only the rest."""
    rows = _long_corpus(tmp_path)
    monkeypatch.setattr(corpus, "INDEX_EVERY_SECONDS", 0.0)
    save = store.save_npy
    seen_index = []

    def dying(path, array):
        if len(list(path.parent.glob("l*.npy"))) == 3:
            seen_index.append((path.parent / "features.tsv").read_bytes())
            raise KeyboardInterrupt  # stands for the kill
        save(path, array)

    monkeypatch.setattr(store, "save_npy", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_corpus(gru, rows, tmp_path / "out", progress=False)
    # what a kill leaves: the index as last written while running (no final write)
    (tmp_path / "out" / "features.tsv").write_bytes(seen_index[0])
    assert len(read_index(tmp_path / "out")) == 3  # it already listed the finished files
    monkeypatch.setattr(store, "save_npy", save)
    again = extract_corpus(gru, rows, tmp_path / "out", progress=False)
    assert again.cached == 3 and again.computed == 2 and len(read_index(tmp_path / "out")) == 5
    extract_corpus(gru, rows, tmp_path / "fresh", progress=False)
    for r in rows:
        np.testing.assert_array_equal(load_feature_dir(tmp_path / "out")[r.id], load_feature_dir(tmp_path / "fresh")[r.id])


def test_a_file_that_fails_in_the_chunk_stream_is_skipped_not_fatal(gru, tmp_path, monkeypatch):
    rows = _long_corpus(tmp_path)
    real = inference._encode_frames
    bad = rows[2]

    def failing(model, wav, f0, f1):
        if wav.shape[-1] == bad.num_samples and f0 > 0:
            raise RuntimeError("simulated kernel failure")
        return real(model, wav, f0, f1)

    monkeypatch.setattr(inference, "_encode_frames", failing)
    with pytest.warns(UserWarning, match=r"skipping l2: feature extraction failed \(RuntimeError: simulated"):
        res = extract_corpus(gru, rows, tmp_path / "out", progress=False, chunk_seconds=0.7)
    assert res.ids == [r.id for r in rows if r.id != "l2"] and [s[0] for s in res.skipped] == ["l2"]
    feats = load_feature_dir(tmp_path / "out")
    monkeypatch.setattr(inference, "_encode_frames", real)
    for r in rows:
        if r.id != "l2":  # the files after the failure are exact: the context state restarted
            np.testing.assert_allclose(feats[r.id], extract_features(r.path, model=gru), atol=1e-5)


def test_feature_modes_are_typed_and_keep_their_strings(gru, tmp_path):
    """``frames`` / ``windows:N`` parse to FrameMode / WindowMode and print back; bad ones are
    refused by name. A window vector is, for the context, the last c_t of the window run alone, for
    the encoder and MFCC the mean over it; the typed and the string mode give the same folder."""
    from cpc_speech.features.featurizer import FRAMES, FrameMode, WindowMode, make_featurizer, parse_mode
    from cpc_speech.features.mfcc import mfcc_features

    assert parse_mode("frames") == FrameMode() == FRAMES and str(FRAMES) == "frames"
    assert parse_mode("windows:2400") == WindowMode(2400) and str(WindowMode(2400)) == "windows:2400"
    assert parse_mode(WindowMode(7)) == WindowMode(7)
    for bad, message in (("windows:0", "N >= 1"), ("windows:x", "must be an integer"), ("frame", "unknown feature mode")):
        with pytest.raises(FeatureError, match=message):
            parse_mode(bad)
    x = speechlike(6000, seed=4)  # two whole windows of 2400 samples and a rest
    halves = [x[:2400], x[2400:4800]]
    ctx = make_featurizer(gru, "context", "windows:2400", precision="fp32")
    assert ctx.mode == WindowMode(2400) and ctx.window_samples == 2400 and ctx.meta("float32")["mode"] == "windows:2400"
    expect = np.stack([extract_features(h, 16000, gru)[-1] for h in halves])
    np.testing.assert_allclose(ctx.features([x])[0], expect, atol=1e-5)
    enc = make_featurizer(gru, "encoder", WindowMode(2400), precision="fp32")
    expect = np.stack([extract_features(h, 16000, gru, layer="encoder").mean(0) for h in halves])
    np.testing.assert_allclose(enc.features([x])[0], expect, atol=1e-5)
    mf = make_featurizer("mfcc", mode=WindowMode(2400))
    full = mfcc_features(x)  # 37 frames: windows are frames [0, 15) and [15, 30)
    np.testing.assert_allclose(mf.features([x])[0], np.stack([full[:15].mean(0), full[15:30].mean(0)]), rtol=1e-6)
    assert make_featurizer(gru).mode is FRAMES
    write_audio(tmp_path / "a.flac", x)
    rows = [("a", str(tmp_path / "a.flac"))]
    first = extract_corpus(gru, rows, tmp_path / "out", progress=False, mode=WindowMode(2400))
    again = extract_corpus(gru, rows, tmp_path / "out", progress=False, mode="windows:2400")
    assert (first.computed, again.computed, again.cached) == (1, 0, 1)
    assert read_meta(tmp_path / "out")["mode"] == "windows:2400" and read_index(tmp_path / "out") == [("a", "a.npy", 2, 32)]
