"""Short clips never break a stage: stages 2-6 of recipes/librispeech (extract, phone probe, speaker
probes, ABX, units) on a generated corpus in which a third of the clips are cut to 0.3-1.2 s (shorter
than the speaker probe's 1.28 s window) and one more to 200 samples (shorter than the encoder's
465-sample receptive field, but one 10 ms MFCC frame). Every stage finishes, counts exactly the clips
the documented rule makes it leave out (``short_utterances``), warns once per featuriser (never
once per clip) and gives numbers that beat chance."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_speech.audio import read_audio, write_audio
from cpc_speech.engine.checkpoint import save_checkpoint
from cpc_speech.config import preset
from cpc_speech.corpora.manifest import read_manifest
from cpc_speech.evaluation.items import frame_ranges, items_from_alignments, read_item_file
from cpc_speech.features.store import read_index
from cpc_speech.model.cpc import CPCModel
from cpc_speech.corpora.labels import PhoneSet, read_id_list

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("espeakng_loader")

WINDOW = 128 * 160  # samples of the speaker probe's window protocol (1.28 s)
TINY = 200  # samples: below the model's receptive field (465), one MFCC frame (160 samples each)
UNITS = 8


def _cut_corpus(root: Path, seed: int = 0) -> dict:
    """Cut clips in place, audio and frame labels consistently (on the 10 ms grid): per speaker one
    train and one test clip to 0.3-1.2 s, and one more train clip of the first speaker to TINY
    samples. The corpus's own manifest and item file, now stale, are removed (the recipe builds
    its own). Returns {id: new length in samples}."""
    rng = np.random.default_rng(seed)
    rows = {r.id: r for r in read_manifest(root / "manifest.tsv")}
    train, test = read_id_list(root / "train_split.txt").ids, read_id_list(root / "test_split.txt").ids
    cuts = {}
    for i, spk in enumerate(sorted({r.speaker for r in rows.values()})):
        mine_train = [u for u in train if rows[u].speaker == spk]
        mine_test = [u for u in test if rows[u].speaker == spk]
        cuts[mine_train[0]] = int(rng.integers(int(0.3 * 16000), int(1.2 * 16000)))
        cuts[mine_test[0]] = int(rng.integers(int(0.3 * 16000), int(1.2 * 16000)))
        if i == 0:
            cuts[mine_train[1]] = TINY
    ali = root / "converted_aligned_phones.txt"
    lines = {ln.split(" ", 1)[0]: ln.split() for ln in ali.read_text().splitlines() if ln.strip()}
    for uid, n in cuts.items():
        wav = read_audio(rows[uid].path)
        start = 160 * int(rng.integers(0, (wav.size - n) // 160 + 1))
        write_audio(rows[uid].path, wav[start:start + n])
        labels = lines[uid][1:][start // 160:start // 160 + n // 160]
        assert len(labels) == n // 160
        lines[uid] = [uid] + labels
    ali.write_text("".join(" ".join(v) + "\n" for v in lines.values()))
    # ABX items of every clip (the test split alone has too few for an ABX cell), and one on the
    # tiny clip, which has too few labels for an item of its own
    labels = {u: np.array(v[1:], dtype=np.int64) for u, v in lines.items()}
    text = items_from_alignments(labels, {u: r.speaker for u, r in rows.items()}, PhoneSet.read(root / "phones.txt").name_of())
    tiny = next(u for u, n in cuts.items() if n == TINY)
    text += f"{tiny} 0.0000 0.0100 AA SIL SIL {rows[tiny].speaker}\n"
    (root / "abx.item").write_text(text)
    (root / "manifest.tsv").unlink()
    return cuts


def _recipe(tmp_path, *args):
    corpus = tmp_path / "corpus"
    env = dict(os.environ, OMP_NUM_THREADS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = ["bash", str(ROOT / "recipes" / "librispeech" / "run.sh"), "--conf", "fast", "--librispeech-root", str(corpus),
           "--valid-subsets", "", "--alignments", str(corpus / "converted_aligned_phones.txt"),
           "--train-split", str(corpus / "train_split.txt"), "--test-split", str(corpus / "test_split.txt"),
           "--phones", str(corpus / "phones.txt"), "--abx-item", str(corpus / "abx.item"), "--units", str(UNITS),
           "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"), *args]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done


def _fraction(x):
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_recipe_stages_2_to_6_on_a_corpus_with_short_clips(tmp_path):
    corpus = tmp_path / "corpus"
    subprocess.run([str(Path(sys.executable).parent / "cpc-speech"), "synth", str(corpus), "--speakers", "3",
                    "--utterances", "6", "--test-fraction", "0.34", "--no-progress"], check=True, capture_output=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1"))
    cuts = _cut_corpus(corpus)
    assert sum(int(0.3 * 16000) <= n < int(1.2 * 16000) for n in cuts.values()) == 6  # a third of the 18 clips

    _recipe(tmp_path, "--stage", "0", "--stop-stage", "0")
    exp = tmp_path / "exp"
    torch.manual_seed(1)  # stage 1 replaced by a random tiny model: these stages do not need a trained one
    model = CPCModel(preset("tiny"))
    save_checkpoint(exp / "checkpoints" / "best.pt", model, model.cfg)
    _recipe(tmp_path, "--stage", "2", "--stop-stage", "6")

    length = {r.id: r.num_samples for r in read_manifest(tmp_path / "data" / "train.tsv")}
    assert len(length) == 18 and all(length[u] == n for u, n in cuts.items())
    need = model.encoder.min_samples
    assert need == 465
    split_ids = read_id_list(corpus / "train_split.txt").ids + read_id_list(corpus / "test_split.txt").ids
    assert sorted(split_ids) == sorted(length)
    # the rules: no model frame below the receptive field, no MFCC frame below 160 samples, no
    # window below 1.28 s
    no_frame = {"model": sum(n < need for n in length.values()), "mfcc": sum(n < 160 for n in length.values())}
    no_frame["random_init"] = no_frame["model"]
    no_window = sum(n < WINDOW for n in length.values())
    assert (no_frame["model"], no_frame["mfcc"], no_window) == (1, 0, 7)
    logs = {i: (exp / "log" / f"stage{i}.log").read_text() for i in range(2, 7)}
    for i, text in logs.items():
        assert "skipping" not in text and "Traceback" not in text, (i, text[-2000:])

    # stage 2: every clip has features, the tiny one with 0 frames; one warning for it
    index = {r[0]: r[2] for r in read_index(exp / "features" / "model-context")}
    assert index == {u: (0 if n < need else model.encoder.num_frames(n)) for u, n in length.items()}
    assert "18 utterances" in logs[2] and "0 skipped, 1 with no frame" in logs[2]
    assert logs[2].count("warning:") == 1 and "too short for one frame" in logs[2]

    # stage 3: clips without a frame are left out and counted; every other clip is used whole
    phone = json.loads((exp / "results" / "phone_probe.json").read_text())
    for name, entry in phone["results"].items():
        assert entry["short_utterances"] == no_frame[name], name
        assert entry["train_utterances"] + entry["test_utterances"] + entry["short_utterances"] == 18
        assert _fraction(entry["accuracy"]), name
    frames = sum(n // 160 for n in length.values())
    mfcc = phone["results"]["mfcc"]
    assert mfcc["train_frames"] + mfcc["test_frames"] in range(frames - 18, frames + 1)  # one-frame trims at most
    assert mfcc["accuracy"] > phone["majority"]["accuracy"] + 0.1, (mfcc["accuracy"], phone["majority"])
    assert logs[3].count("shorter than one frame's receptive field") == 2  # model and random init, once each

    # stage 4: the utterance protocol loses the frameless clip, the window protocol every clip < 1.28 s
    for suffix, expected in (("", no_frame), ("_window", {n: no_window for n in no_frame})):
        spk = json.loads((exp / "results" / f"speaker_probe{suffix}.json").read_text())
        for name, entry in spk["results"].items():
            assert entry["short_utterances"] == expected[name], (suffix, name)
            assert entry["train_utterances"] + entry["test_utterances"] + entry["short_utterances"] == 18
            assert _fraction(entry["accuracy"]), (suffix, name)
        if suffix == "_window":
            assert all(e["test_frames"] == 128 * e["test_examples"] > 0 for e in spk["results"].values())
        else:  # 6 test utterances of 3 speakers, 2 of them 0.3-1.2 s long: chance is 1/3
            assert spk["results"]["mfcc"]["accuracy"] >= 0.5, spk["results"]["mfcc"]
    assert logs[4].count("shorter than one frame's receptive field") == 2
    assert logs[4].count("shorter than one 128-frame window") == 3

    # stage 5: items of the short clips are scored; exactly the items with no frame are skipped
    abx = json.loads((exp / "results" / "abx.json").read_text())
    items = read_item_file(corpus / "abx.item")
    assert set(items.files) >= set(cuts)  # the short clips have items
    for name, entry in abx["results"].items():
        per_file = np.array([length[f] // 160 if name == "mfcc" else model.encoder.num_frames(length[f]) for f in items.files])
        cut = frame_ranges(items.onsets, items.offsets, per_file, "libri-light")
        empty = int((cut[:, 1] <= cut[:, 0]).sum())
        assert entry["items"]["too_short"] == empty and entry["items"]["no_features"] == 0, name
        assert entry["items"]["used"] == len(items) - empty and entry["items"]["short_utterances"] == no_frame[name]
        assert _fraction(entry["within"]) and _fraction(entry["across"]), name
    assert abx["results"]["mfcc"]["within"] < 0.4  # chance is 0.5

    # stage 6: the frameless clip has an empty unit sequence, counted; the units carry phone information
    for name in ("model", "mfcc"):
        units = json.loads((exp / "results" / f"units_{name}.json").read_text())
        assert units["assigned_utterances"] == 18 and units["short_utterances"] == no_frame[name], name
        assert units["quality"]["utterances"] == 18 - no_frame[name]
        floor = 0.15 if name == "mfcc" else 0.02  # measured 0.30 and 0.09 (a random model)
        assert floor < units["quality"]["pnmi"] <= 1 and units["quality"]["used_units"] > 1, name
        tiny = [u for u, n in cuts.items() if n == TINY][0]
        assert np.load(exp / "units" / name / "units" / f"{tiny}.npy").size == (0 if name == "model" else 1)
    assert logs[6].count("no frame (clips shorter than the encoder's receptive field") == 1  # quantize, model


def test_extract_corpus_gives_clips_below_the_receptive_field_empty_features(tmp_path):
    """200 samples: no model frame (receptive field 465), one MFCC frame; 100 samples: no MFCC frame.
    Empty features are written and listed (frames 0), not skipped as unreadable, and cached."""
    from cpc_speech.features.corpus import extract_corpus
    from cpc_speech.features.store import load_feature_dir

    torch.manual_seed(0)
    model = CPCModel(preset("tiny")).eval()
    rng = np.random.default_rng(0)
    rows = [(uid, (0.1 * rng.standard_normal(n)).astype(np.float32)) for uid, n in (("tiny", 200), ("ok", 4000), ("tinier", 100))]
    res = extract_corpus(model, rows, tmp_path / "model", progress=False, workers=0)
    assert res.skipped == [] and res.ids == ["tiny", "ok", "tinier"] and res.empty == ["tiny", "tinier"]
    feats = load_feature_dir(tmp_path / "model")
    assert feats["tiny"].shape == (0, 64) and feats["ok"].shape == (model.encoder.num_frames(4000), 64) == (25, 64)
    again = extract_corpus(model, rows, tmp_path / "model", progress=False, workers=0)
    assert again.cached == 3 and again.empty == ["tiny", "tinier"]
    mfcc = extract_corpus("mfcc", rows, tmp_path / "mfcc", progress=False, workers=0)
    assert mfcc.empty == ["tinier"] and load_feature_dir(tmp_path / "mfcc")["tiny"].shape == (1, 39)


def test_a_split_left_with_only_short_clips_is_a_clear_error():
    from cpc_speech.probes.common import without_short
    from cpc_speech.corpora.labels import LabelFileError

    feats = {"a": np.zeros((0, 3), np.float32), "b": np.ones((2, 3), np.float32), "c": np.ones((1, 3), np.float32)}
    with pytest.warns(UserWarning, match=r"mfcc: 1 of 3 utterance\(s\) are shorter than one 128-frame window"):
        assert without_short(["a", "b"], ["c"], feats, "mfcc", "128-frame window") == (["b"], ["c"], ["a"])
    with pytest.warns(UserWarning), pytest.raises(LabelFileError, match="mfcc: every test utterance is shorter than one 128-frame window"):
        without_short(["b"], ["a"], feats, "mfcc", "128-frame window")
