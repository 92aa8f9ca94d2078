"""``extract_dataset`` in one pass: the feature folder it writes from a parquet dataset equals corpus
extraction of the same clips row by row (files, index, meta), whatever the block size, and a
re-run reuses it as corpus extraction does."""

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig
from cpc_speech.corpora.hf_audio import decode_audio_value
from cpc_speech.features import store
from cpc_speech.features.corpus import extract_corpus
from cpc_speech.features.datasets import extract_dataset
from cpc_speech.model.cpc import CPCModel

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# id, rate, samples (300: shorter than the encoder's receptive field -> 0 frames), or None: undecodable
CLIPS = [("u0", 16000, 5000), ("u1", 8000, 3000), ("u2", 16000, 300), ("bad", None, None), ("u3", 16000, 9000),
         ("u4", 22050, 4000), ("u5", 16000, 2000)]


def _flac(n, rate, seed):
    t = np.arange(n) / rate
    wav = 0.3 * np.sin(2 * np.pi * (150 + 40 * seed) * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)
    buf = io.BytesIO()
    sf.write(buf, wav.astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


def _parquet(path):
    cells = [{"bytes": b"not audio" if rate is None else _flac(n, rate, i), "path": f"{uid}.flac"}
             for i, (uid, rate, n) in enumerate(CLIPS)]
    table = pa.table({"id": [c[0] for c in CLIPS], "speaker_id": ["s1"] * len(CLIPS), "audio": cells})
    pq.write_table(table, path)
    return cells


def _model():
    torch.manual_seed(0)
    return CPCModel(CPCConfig(encoder=EncoderConfig(channels=16, norm="channel"), context=ContextConfig(hidden=12))).eval()


def _index(folder):
    sources = store.index_sources(folder)
    return sorted((*row, sources.get(row[0])) for row in store.read_index(folder))


def test_one_pass_equals_per_utterance_extraction_and_resumes(tmp_path, monkeypatch):
    cells = _parquet(tmp_path / "clips.parquet")
    model = _model()
    # the reference: corpus extraction of the decoded clips, one (id, waveform) row each
    rows = [(uid, decode_audio_value(cell, uid)) for (uid, rate, _), cell in zip(CLIPS, cells) if rate is not None]
    ref = extract_corpus(model, rows, tmp_path / "ref", precision="fp32", progress=False, workers=0)

    calls = []
    begin = store.begin_writing
    monkeypatch.setattr(store, "begin_writing", lambda *a, **k: calls.append(1) or begin(*a, **k))
    got = []
    for block_rows in (1, 3, 64):
        out = tmp_path / f"b{block_rows}"
        calls.clear()
        res = extract_dataset(model, tmp_path / "clips.parquet", out, block_rows=block_rows, precision="fp32", on_warning=got.append)
        assert calls == [1], block_rows  # one pass: the folder is opened once, not once per block
        assert res.ids == ref.ids == ["u0", "u1", "u2", "u3", "u4", "u5"]
        assert res.empty == ref.empty == ["u2"]
        assert (res.computed, res.cached) == (6, 0) and [u for u, _ in res.skipped] == ["bad"]
        assert res.audio_seconds == pytest.approx(ref.audio_seconds, rel=1e-9)
        mine, theirs = store.load_feature_dir(out), store.load_feature_dir(tmp_path / "ref")
        assert sorted(mine) == sorted(theirs)
        for uid in theirs:
            assert mine[uid].dtype == theirs[uid].dtype and np.array_equal(mine[uid], theirs[uid]), uid
        assert _index(out) == _index(tmp_path / "ref")
        assert [r[0] for r in store.read_index(out)] == ref.ids  # dataset order
        meta, ref_meta = store.read_meta(out), store.read_meta(tmp_path / "ref")
        assert {k: v for k, v in meta.items() if k != "created"} == {k: v for k, v in ref_meta.items() if k != "created"}
    assert sum("bad" in w and "cannot decode" in w for w in got) == 3

    # resume: everything cached; a lost feature file is computed again, alone
    out = tmp_path / "b3"
    again = extract_dataset(model, tmp_path / "clips.parquet", out, block_rows=3, precision="fp32", on_warning=got.append)
    assert (again.computed, again.cached) == (0, 6)
    (out / store.feature_file_name("u3")).unlink()
    once_more = extract_dataset(model, tmp_path / "clips.parquet", out, block_rows=3, precision="fp32", on_warning=got.append)
    assert (once_more.computed, once_more.cached) == (1, 5)
    assert np.array_equal(store.load_feature_dir(out)["u3"], store.load_feature_dir(tmp_path / "ref")["u3"])
    assert _index(out) == _index(tmp_path / "ref")


def test_foreign_feature_files_are_refused_not_overwritten(tmp_path):
    _parquet(tmp_path / "clips.parquet")
    (tmp_path / "taken").mkdir()
    np.save(tmp_path / "taken" / store.feature_file_name("u1"), np.zeros((2, 2), np.float32))
    with pytest.raises(Exception, match="already holds u1.npy"):
        extract_dataset(_model(), tmp_path / "clips.parquet", tmp_path / "taken", precision="fp32", on_warning=lambda m: None)
    assert np.load(tmp_path / "taken" / store.feature_file_name("u1")).shape == (2, 2)  # never overwritten


def test_two_processes_write_the_same_folder_as_one(tmp_path, monkeypatch):
    """``processes=2``: blocks of rows go to two worker processes; files, index and skips equal the
    single-process folder exactly, in dataset order."""
    from cpc_speech.features import datasets

    _parquet(tmp_path / "clips.parquet")
    model = _model()
    one = extract_dataset(model, tmp_path / "clips.parquet", tmp_path / "one", block_rows=2, precision="fp32", on_warning=lambda m: None)
    blocks = []
    real = datasets.extract_in_processes
    monkeypatch.setattr(datasets, "extract_in_processes", lambda feat, block, *a, **k: blocks.append(len(block)) or real(feat, block, *a, **k))
    two = extract_dataset(model, tmp_path / "clips.parquet", tmp_path / "two", block_rows=2, processes=2, precision="fp32",
                          on_warning=lambda m: None)
    assert two.ids == one.ids == ["u0", "u1", "u2", "u3", "u4", "u5"]
    assert (two.computed, two.cached, two.empty) == (one.computed, one.cached, one.empty) == (6, 0, ["u2"])
    assert [u for u, _ in two.skipped] == ["bad"]
    mine, theirs = store.load_feature_dir(tmp_path / "two"), store.load_feature_dir(tmp_path / "one")
    assert sorted(mine) == sorted(theirs)
    for uid in theirs:
        assert np.array_equal(mine[uid], theirs[uid]), uid
    assert _index(tmp_path / "two") == _index(tmp_path / "one")
    assert [r[0] for r in store.read_index(tmp_path / "two")] == one.ids
    assert blocks and sum(blocks) == 6  # the decodable rows went through the worker processes
