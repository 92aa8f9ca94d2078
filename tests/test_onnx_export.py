"""ONNX export: onnxruntime outputs equal torch's (offline and streaming graphs)."""

import functools

import numpy as np
import pytest

import cpc_speech
from cpc_speech.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
from cpc_speech.onnx_export import OnnxExportError, export_onnx, initial_streaming_state, recurrent_names, state_names  # noqa: E402

# float32 references: these tests check exactness against one float32 pass on any CPU
extract_fp32 = functools.partial(cpc_speech.extract_features, precision="fp32")

pytestmark = pytest.mark.usefixtures("one_thread")

from test_streaming import small_model  # noqa: E402  (the same small models as the streaming tests)




def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("norm,kind,layer", [("channel", "gru", "context"), ("batch", "lstm", "context"), ("instance", "gru", "context"),
                                             ("none", "transformer", "context"), ("channel", "lstm", "encoder")])
def test_offline_graph_matches_torch(tmp_path, norm, kind, layer):
    model = small_model(norm, kind)
    path = export_onnx(model, tmp_path / "m.onnx", layer=layer)
    sess = session(path)
    rng = np.random.default_rng(1)
    for n in (465, 8159, 20000):  # dynamic length, not the export example's
        wav = (0.3 * rng.standard_normal(n)).astype(np.float32)
        ref = extract_fp32(wav, sample_rate=16000, model=model, layer=layer)
        (got,) = sess.run(None, {"waveform": wav[None]})
        assert got.shape == (1,) + ref.shape
        assert np.abs(got[0] - ref).max() <= 1e-4
    batch = (0.3 * rng.standard_normal((3, 4000))).astype(np.float32)
    (got,) = sess.run(None, {"waveform": batch})
    for row in range(3):
        ref = extract_fp32(batch[row], sample_rate=16000, model=model, layer=layer)
        assert np.abs(got[row] - ref).max() <= 1e-4


@pytest.mark.parametrize("norm,kind", [("channel", "gru"), ("batch", "lstm"), ("none", "transformer")])
def test_streaming_graphs_match_offline(tmp_path, norm, kind):
    model = small_model(norm, kind)
    folder = export_onnx(model, tmp_path / "stream", streaming=True)
    enc, ctx = session(folder / "encoder_stream.onnx"), session(folder / "context_step.onnx")
    pend_names, rec_names = state_names(model), recurrent_names(model)
    rng = np.random.default_rng(2)
    wav = (0.3 * rng.standard_normal(9000)).astype(np.float32)
    ref = extract_fp32(wav, sample_rate=16000, model=model)
    state = initial_streaming_state(model)
    pending = {k: state[k] for k in pend_names}
    rec = {k: state[k] for k in rec_names}
    pieces, i, cuts = [], 0, [1, 300, 170, 2000, 7, 160, 320, 0] * 10

    def step(chunk, final):
        nonlocal pending, rec
        z, *rest = enc.run(None, {"waveform": chunk[None], "final": np.array(final, np.int64), **pending})
        pending = dict(zip(pend_names, rest))
        if z.shape[1]:
            c, *rest = ctx.run(None, {"z": z, **rec})
            rec = dict(zip(rec_names, rest))
            pieces.append(c[0])

    while i < wav.size:
        n = cuts.pop(0)
        step(wav[i:i + n], 0)
        i += n
    step(np.zeros(0, np.float32), 1)
    got = np.concatenate(pieces)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_cli_export_onnx_and_refusals(tmp_path, capsys):
    from cpc_speech.engine.checkpoint import save_checkpoint

    model = small_model("channel", "transformer")
    save_checkpoint(tmp_path / "m.pt", model, model.cfg)
    assert main(["export", str(tmp_path / "m.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert "opset 17" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "m.pt"), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(OnnxExportError, match="instance norm"):
        export_onnx(small_model("instance", "gru"), tmp_path / "i.onnx", streaming=True)
