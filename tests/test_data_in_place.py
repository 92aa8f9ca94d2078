"""Data in place: datasets objects (also streaming) and lhotse manifests, without copying audio."""

import functools

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import cpc_speech
from cpc_speech.cli import main
from cpc_speech.config import ContextConfig, CPCConfig, EncoderConfig
from cpc_speech.corpora.lhotse import load_lhotse
from cpc_speech.corpora.manifest import read_manifest
from cpc_speech.model.cpc import CPCModel

# float32 references: these tests check exactness against one float32 pass on any CPU
extract_fp32 = functools.partial(cpc_speech.extract_features, precision="fp32")


def tone(n, rate, freq=220.0, seed=0):
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def flac_bytes(wav, rate, fmt="FLAC"):
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format=fmt)
    return buf.getvalue()


# ------------------------------------------------------------------------------- datasets objects

ROWS = [("a-0", "spk1", 16000, 5000, "FLAC"), ("a-1", "spk2", 8000, 3000, "WAV"), ("b-0", "spk1", 16000, 700, "FLAC")]


def make_dataset():
    datasets = pytest.importorskip("datasets")
    audio = [{"bytes": flac_bytes(tone(n, r, seed=i), r, f), "path": f"{u}.{f.lower()}"} for i, (u, _, r, n, f) in enumerate(ROWS)]
    data = {"audio": audio, "speaker_id": [r[1] for r in ROWS], "id": [r[0] for r in ROWS]}
    return datasets, datasets.Dataset.from_dict(data).cast_column("audio", datasets.Audio())


def small_model():
    torch.manual_seed(0)
    return CPCModel(CPCConfig(encoder=EncoderConfig(channels=16, norm="channel"), context=ContextConfig(hidden=12))).eval()


def test_load_hf_accepts_dataset_objects(tmp_path):
    from cpc_speech.corpora.hf import load_hf

    datasets, ds = make_dataset()
    rows = load_hf(ds, tmp_path / "audio")
    assert [(u.id, u.speaker, u.sample_rate) for u in rows] == [(r[0], r[1], 16000) for r in ROWS]
    assert [u.num_samples for u in rows] == [5000, 6000, 700]  # 8 kHz row resampled to 16 kHz
    np.testing.assert_allclose(sf.read(rows[0].path, dtype="float32")[0], tone(5000, 16000, seed=0), atol=1 / 32767 + 1e-6)
    dd = datasets.DatasetDict({"train": ds.select([0, 1]), "test": ds.select([2])})
    rows = load_hf(dd, tmp_path / "dd", splits="test")
    assert [(u.id, u.path.endswith("/test/b-0.flac")) for u in rows] == [("b-0", True)]
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_hf(dd, tmp_path / "dd", splits="dev")


def test_extract_dataset_streaming_equals_files(tmp_path):
    from cpc_speech.features.datasets import extract_dataset

    datasets, ds = make_dataset()
    model = small_model()
    streaming = ds.to_iterable_dataset()
    assert type(streaming).__name__ == "IterableDataset"
    res = extract_dataset(model, streaming, tmp_path / "feats", block_rows=2, precision="fp32")
    assert res.ids == ["a-0", "a-1", "b-0"] and res.computed == 3
    feats = cpc_speech.features.load_feature_dir(tmp_path / "feats")
    for i, (uid, _, rate, n, fmt) in enumerate(ROWS):
        wav = sf.read(io.BytesIO(flac_bytes(tone(n, rate, seed=i), rate, fmt)), dtype="float32")[0]
        ref = extract_fp32(wav, sample_rate=rate, model=model)
        assert feats[uid].shape == ref.shape
        np.testing.assert_allclose(feats[uid], ref, atol=1e-5)
    again = extract_dataset(model, ds, tmp_path / "feats", block_rows=2, precision="fp32")  # same model: all cached
    assert again.cached == 3 and again.computed == 0


def test_extract_dataset_skips_undecodable_rows(tmp_path):
    from cpc_speech.features.datasets import extract_dataset

    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"audio": [{"bytes": flac_bytes(tone(4000, 16000), 16000), "path": "ok.flac"},
                                               {"bytes": b"garbage", "path": "bad.flac"}]}).cast_column("audio", datasets.Audio())
    got = []
    res = extract_dataset(small_model(), ds, tmp_path / "f", on_warning=got.append)
    assert res.ids == ["ok"] and [u for u, _ in res.skipped] == ["bad"]
    assert any("bad" in w and "cannot decode" in w for w in got)


# ------------------------------------------------------------------------------------ lhotse


def write_jsonl_gz(path, items):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item) + "\n")


def lhotse_corpus(root):
    """recordings.jsonl.gz + supervisions.jsonl.gz as lhotse writes them (paths relative to root)."""
    (root / "audio").mkdir(parents=True)
    recs, sups = [], []
    for i, (rid, rate, n) in enumerate([("rec1", 16000, 8000), ("rec2", 22050, 4410), ("rec3", 16000, 3200)]):
        sf.write(root / "audio" / f"{rid}.flac", tone(n, rate, seed=i), rate)
        recs.append({"id": rid, "sources": [{"type": "file", "channels": [0], "source": f"audio/{rid}.flac"}],
                     "sampling_rate": rate, "num_samples": n, "duration": n / rate, "channel_ids": [0]})
    recs.append({"id": "remote", "sources": [{"type": "url", "channels": [0], "source": "https://example.org/x.flac"}],
                 "sampling_rate": 16000, "num_samples": 16000, "duration": 1.0, "channel_ids": [0]})
    sups = [
        {"id": "rec1-0", "recording_id": "rec1", "start": 0.0, "duration": 0.3, "channel": 0, "text": "A", "speaker": "s1", "language": "English"},
        {"id": "rec1-1", "recording_id": "rec1", "start": 0.3, "duration": 0.1, "channel": 0, "text": "B", "speaker": "s9"},
        {"id": "rec2-0", "recording_id": "rec2", "start": 0.0, "duration": 0.2, "channel": 0, "text": "C", "speaker": "s2"},
    ]
    write_jsonl_gz(root / "recordings.jsonl.gz", recs)
    write_jsonl_gz(root / "supervisions.jsonl.gz", sups)
    return recs, sups


def test_lhotse_recordings_and_supervisions(tmp_path):
    recs, sups = lhotse_corpus(tmp_path / "ls")
    got = []
    rows = load_lhotse(tmp_path / "ls" / "recordings.jsonl.gz", root=tmp_path / "ls", on_warning=got.append)
    assert [(u.id, u.speaker, u.num_samples, u.sample_rate) for u in rows] == [
        ("rec1", "s1", 8000, 16000), ("rec2", "s2", 4410, 22050), ("rec3", "unknown", 3200, 16000)]
    assert rows[0].path == str(tmp_path / "ls" / "audio" / "rec1.flac")  # in place, not copied
    assert any("'remote'" in w and "url" in w for w in got) and any("several speakers" in w for w in got)
    # the same corpus as a cuts manifest
    cuts = [{"id": f"{r['id']}-cut", "start": 0.0, "duration": r["duration"], "channel": 0, "type": "MonoCut", "recording": r,
             "supervisions": [s for s in sups if s["recording_id"] == r["id"]]} for r in recs[:3]]
    write_jsonl_gz(tmp_path / "ls" / "cuts.jsonl.gz", cuts)
    assert load_lhotse(tmp_path / "ls" / "cuts.jsonl.gz", root=tmp_path / "ls", on_warning=got.append) == rows

    class CutSetLike:  # what a lhotse CutSet object offers
        def to_dicts(self):
            return iter(cuts)

    assert load_lhotse(CutSetLike(), root=tmp_path / "ls", on_warning=got.append) == rows


def test_cli_prepare_lhotse_and_errors(tmp_path, capsys, monkeypatch):
    lhotse_corpus(tmp_path / "ls")
    monkeypatch.chdir(tmp_path / "ls")  # lhotse's relative paths are relative to the working folder
    out = tmp_path / "man" / "lhotse.tsv"
    assert main(["prepare", "lhotse", "recordings.jsonl.gz", "--out", str(out)]) == 0
    assert "3 utterances, 3 speakers" in capsys.readouterr().out
    back = read_manifest(out)
    assert [(u.id, u.speaker) for u in back] == [("rec1", "s1"), ("rec2", "s2"), ("rec3", "unknown")]
    assert Path(back[1].path).resolve() == tmp_path / "ls" / "audio" / "rec2.flac"
    bad = tmp_path / "ls" / "mixed.jsonl.gz"
    write_jsonl_gz(bad, [{"id": "m", "type": "MixedCut", "tracks": []}])
    assert main(["prepare", "lhotse", str(bad), "--out", str(tmp_path / "m.tsv")]) == 2
    assert "MixedCut cuts are not supported" in capsys.readouterr().err
    broken = tmp_path / "ls" / "broken.jsonl.gz"
    with gzip.open(broken, "wt") as f:
        f.write('{"id": "r", "sources": []}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl.gz: line 2: not valid JSON"):
        load_lhotse(broken)
