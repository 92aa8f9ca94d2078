"""The eSpeak NG corpus generator (``cpc-speech synth``): layouts, alignments, splits, determinism,
label meaning, CLI."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")

from cpc_speech.audio import read_audio  # noqa: E402
from cpc_speech.corpora.labels import PhoneSet, read_id_list  # noqa: E402
from cpc_speech.corpora.manifest import read_manifest  # noqa: E402
from cpc_speech.synth.corpus import synthesize_corpus  # noqa: E402
from cpc_speech.synth.espeak import PhonemeEvent, Synthesis, Voice, phone_segments, synthesize  # noqa: E402
from cpc_speech.synth.inventory import ARPABET, ESPEAK_EN_TO_ARPABET, inventory_for  # noqa: E402
from cpc_speech.synth.layouts import CV_HEADER  # noqa: E402
from cpc_speech.synth.render import estimate_lag, frame_labels  # noqa: E402

SPEAKERS, UTTERANCES = 3, 3


@pytest.fixture(scope="module")
def libri(tmp_path_factory):
    out = tmp_path_factory.mktemp("libri") / "corpus"
    summary = synthesize_corpus(out, speakers=SPEAKERS, utterances=UTTERANCES, seed=0, jobs=2, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "corpus"
    summary = synthesize_corpus(
        out, speakers=SPEAKERS, utterances=UTTERANCES, languages="en-us,fr", layout="commonvoice", seed=1,
        jobs=2, progress=False,
    )
    return out, summary


def _files(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _hashes(root: Path):
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in _files(root)}


def _alignments(path: Path):
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        out[parts[0]] = np.array([int(x) for x in parts[1:]])
    return out


# --------------------------------------------------------------------------------------------------
# LibriSpeech layout


def test_librispeech_layout(libri):
    out, summary = libri
    files = _files(out)
    top = {"SPEAKERS.TXT", "phones.txt", "converted_aligned_phones.txt", "train_split.txt", "test_split.txt",
           "phone_transcripts.txt", "manifest.tsv", "abx.item"}
    assert top <= set(files)
    audio = [f for f in files if f.endswith(".flac")]
    trans = [f for f in files if f.endswith(".trans.txt")]
    assert len(audio) == SPEAKERS * UTTERANCES and len(trans) == SPEAKERS
    assert set(files) == top | set(audio) | set(trans)
    from cpc_speech.evaluation.items import read_item_file

    items = read_item_file(out / "abx.item")  # one item per non-silent phone between two neighbours
    assert len(items) > 10 * SPEAKERS and {f"{u}.flac".split("-")[0] for u in items.files} <= {f.split("/")[1] for f in audio}
    assert "SIL" not in items.phones and set(items.speakers) == {f.split("/")[1] for f in audio}
    for f in audio:
        m = re.fullmatch(r"train-clean-100/(\d+)/(\d+)/(\d+)-(\d+)-(\d{4})\.flac", f)
        assert m and m.group(1) == m.group(3) and m.group(2) == m.group(4), f
        info = sf.info(str(out / f))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "FLAC")
    for f in trans:
        spk, chapter = Path(f).parts[1:3]
        assert Path(f).name == f"{spk}-{chapter}.trans.txt"
        lines = (out / f).read_text().splitlines()
        assert len(lines) == UTTERANCES
        for line in lines:
            uid, text = line.split(" ", 1)
            assert uid.startswith(f"{spk}-{chapter}-") and (out / Path(f).parent / f"{uid}.flac").is_file()
            assert re.fullmatch(r"[A-Z' ]+", text) and len(text.split()) >= 3
    speakers_txt = (out / "SPEAKERS.TXT").read_text().splitlines()
    assert speakers_txt[0].startswith(";")
    assert ";ID  |SEX| SUBSET           |MINUTES| NAME" in speakers_txt
    rows = [ln for ln in speakers_txt if not ln.startswith(";")]
    assert len(rows) == SPEAKERS
    spk_dirs = {Path(f).parts[1] for f in audio}
    for row in rows:
        fields = [x.strip() for x in row.split("|")]
        assert len(fields) == 5 and fields[0] in spk_dirs and fields[1] in ("M", "F")
        assert fields[2] == "train-clean-100" and float(fields[3]) > 0 and fields[4]
        assert re.match(r"\d+ +\| [MF] \| train-clean-100  \| +\d+\.\d\d \| ", row)
    assert summary.utterances == SPEAKERS * UTTERANCES and summary.speakers == SPEAKERS
    assert summary.phone_classes == {"en-us": 40}


def test_phone_inventory_files(libri):
    out, _ = libri
    names = PhoneSet.read(out / "phones.txt").indexed_names()
    assert names[0] == "SIL" and names[1:] == list(ARPABET) and len(names) == 40
    inv = inventory_for("en-us")
    for phones in ESPEAK_EN_TO_ARPABET.values():
        for p in phones:
            assert inv.id(p) > 0
    fr = inventory_for("fr")
    assert fr.phones[0] == "SIL" and all("'" not in p and "," not in p for p in fr.phones)


def _check_alignments(folder: Path, audio_of):
    names = PhoneSet.read(folder / "phones.txt").indexed_names()
    ali = _alignments(folder / "converted_aligned_phones.txt")
    rows = read_manifest(folder / "manifest.tsv")
    assert set(ali) == {r.id for r in rows}
    transcripts = {ln.split()[0]: ln.split()[1:] for ln in (folder / "phone_transcripts.txt").read_text().splitlines()}
    assert set(transcripts) == set(ali)
    for r in rows:
        wav = read_audio(r.path)
        labels = ali[r.id]
        assert len(labels) == wav.shape[0] // 160 == r.num_samples_16k // 160
        assert labels.min() >= 0 and labels.max() < len(names)
        assert labels[0] == 0 and labels[-1] == 0  # silence at both edges
        assert (labels > 0).mean() > 0.5
        assert Path(r.path) == audio_of(r.id)
        phones = transcripts[r.id]
        assert phones and "SIL" not in phones and set(phones) <= set(names)
        # every phone seen in the frames is in the transcript, in order of first appearance
        seen = [names[x] for x in labels if x]
        assert set(seen) <= set(phones)
        assert wav.shape[0] > 20480 or len(phones) > 5
    return ali


def test_librispeech_alignments(libri):
    out, summary = libri

    def audio_of(uid):
        spk, chapter, _ = uid.split("-")
        return out / "train-clean-100" / spk / chapter / f"{uid}.flac"

    ali = _check_alignments(out, audio_of)
    assert sorted(ali) == list(ali)  # one line per utterance, sorted ids
    long = sum(len(v) * 160 > 20480 for v in ali.values())
    assert long >= len(ali) * 2 // 3 and summary.longer_than_window == long


def _check_splits(folder: Path, speaker_of):
    train, test = read_id_list(folder / "train_split.txt"), read_id_list(folder / "test_split.txt")
    rows = read_manifest(folder / "manifest.tsv")
    assert not set(train) & set(test)
    assert set(train) | set(test) == {r.id for r in rows}
    speakers = {r.speaker for r in rows}
    assert {speaker_of(u) for u in train} == speakers == {speaker_of(u) for u in test}
    return train, test


def test_librispeech_splits_and_manifest(libri):
    out, _ = libri
    _check_splits(out, lambda u: u.split("-")[0])
    rows = read_manifest(out / "manifest.tsv")
    assert len(rows) == SPEAKERS * UTTERANCES
    header = (out / "manifest.tsv").read_text().splitlines()[1].split("\t")
    assert header[1].startswith("train-clean-100/")  # relative paths
    for r in rows:
        info = sf.info(r.path)
        assert r.num_samples == info.frames and r.sample_rate == 16000 and r.id.startswith(r.speaker + "-")
        assert 1.5 < r.duration < 7.5


# --------------------------------------------------------------------------------------------------
# Common Voice layout


def test_commonvoice_layout(cv):
    out, summary = cv
    assert sorted(p.name for p in out.iterdir()) == ["en", "fr"]
    assert summary.languages == ["en", "fr"] and summary.speakers == 2 * SPEAKERS
    clip_ids = set()
    for locale in ("en", "fr"):
        folder = out / locale
        expected = {"validated.tsv", "train.tsv", "dev.tsv", "test.tsv", "clip_durations.tsv", "phones.txt",
                    "converted_aligned_phones.txt", "phone_transcripts.txt", "train_split.txt", "test_split.txt",
                    "manifest.tsv", "abx.item"}
        clips = sorted((folder / "clips").iterdir())
        assert {p.name for p in folder.iterdir() if p.is_file()} == expected
        assert len(clips) == SPEAKERS * UTTERANCES
        for c in clips:
            assert re.fullmatch(rf"common_voice_{locale}_\d+\.mp3", c.name)
            info = sf.info(str(c))
            assert info.samplerate == 48000 and info.channels == 1 and info.format == "MP3"
        lines = (folder / "validated.tsv").read_text().splitlines()
        assert lines[0].split("\t") == list(CV_HEADER)
        rows = [ln.split("\t") for ln in lines[1:]]
        assert len(rows) == len(clips) and {r[1] for r in rows} == {c.name for c in clips}
        for r in rows:
            assert len(r) == len(CV_HEADER)
            assert re.fullmatch(r"[0-9a-f]{128}", r[0]) and re.fullmatch(r"[0-9a-f]{64}", r[2])
            assert r[11] == locale and r[3].endswith(".") and r[8] in ("male_masculine", "female_feminine")
        assert len({r[0] for r in rows}) == SPEAKERS
        # train/dev/test TSVs: same header, speaker-disjoint, together = validated
        parts = {}
        for name in ("train", "dev", "test"):
            tl = (folder / f"{name}.tsv").read_text().splitlines()
            assert tl[0] == lines[0]
            parts[name] = [ln.split("\t") for ln in tl[1:]]
        assert sum(len(v) for v in parts.values()) == len(rows)
        spk = {k: {r[0] for r in v} for k, v in parts.items()}
        assert not (spk["train"] & spk["dev"]) and not (spk["train"] & spk["test"]) and not (spk["dev"] & spk["test"])
        clip_ids |= {c.stem for c in clips}
    assert len(clip_ids) == 2 * SPEAKERS * UTTERANCES


def test_commonvoice_alignments_and_splits(cv):
    out, _ = cv
    for locale in ("en", "fr"):
        folder = out / locale
        client = {}
        for ln in (folder / "validated.tsv").read_text().splitlines()[1:]:
            f = ln.split("\t")
            client[Path(f[1]).stem] = f[0]
        _check_alignments(folder, lambda uid: folder / "clips" / f"{uid}.mp3")
        _check_splits(folder, lambda u: client[u])
        rows = read_manifest(folder / "manifest.tsv")
        for r in rows:
            assert r.speaker == client[r.id] and r.sample_rate == 48000
    assert PhoneSet.read(out / "en" / "phones.txt").indexed_names()[1:] == list(ARPABET)
    fr = PhoneSet.read(out / "fr" / "phones.txt").indexed_names()
    assert fr[0] == "SIL" and "A~" in fr and "AA" not in fr


def test_mp3_offset_handling():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(16000).astype(np.float32)
    for shift in (0, 37, -120, 1105 // 3):
        dec = np.roll(ref, shift)
        assert estimate_lag(ref, dec) == shift
    # labels follow the decoded audio: a span [a, b) at 22050 Hz moves by the lag
    spans = [(0, 0, 22050), (5, 22050, 44100), (0, 44100, 66150)]
    labels = frame_labels(spans, 48000, lag=0)
    shifted = frame_labels(spans, 48000 + 1600, lag=1600)
    assert len(labels) == 300 and len(shifted) == 310
    assert np.array_equal(shifted[10:], labels) and not shifted[:10].any()
    assert labels[99] == 0 and labels[100] == 5 and labels[199] == 5 and labels[200] == 0


# --------------------------------------------------------------------------------------------------
# determinism


def test_same_seed_is_byte_identical_whatever_jobs(libri, tmp_path):
    out, _ = libri
    again = tmp_path / "again"
    synthesize_corpus(again, speakers=SPEAKERS, utterances=UTTERANCES, seed=0, jobs=1, progress=False)
    assert _hashes(again) == _hashes(out)


def test_commonvoice_byte_identical_and_seed_changes_audio(tmp_path):
    kw = dict(speakers=2, utterances=2, languages="es", layout="commonvoice", progress=False)
    synthesize_corpus(tmp_path / "a", seed=5, jobs=2, **kw)
    synthesize_corpus(tmp_path / "b", seed=5, jobs=1, **kw)
    synthesize_corpus(tmp_path / "c", seed=6, jobs=2, **kw)
    a, b, c = (_hashes(tmp_path / x) for x in "abc")
    assert a == b
    audio_a = {v for k, v in a.items() if k.endswith(".mp3")}
    audio_c = {v for k, v in c.items() if k.endswith(".mp3")}
    assert len(audio_a) == 4 and not audio_a & audio_c


def test_synthesize_is_reproducible():
    voice = Voice("en-us", "f2", rate=170, pitch=60, range=50)  # f2 breathes: uses the noise generator
    a = synthesize("The garden was quiet this morning.", voice, seed=3)
    b = synthesize("The garden was quiet this morning.", voice, seed=3)
    c = synthesize("The garden was quiet this morning.", voice, seed=4)
    assert a.sample_rate == 22050 and a.waveform.dtype == np.int16 and a.waveform.size > 22050
    assert np.array_equal(a.waveform, b.waveform) and a.events == b.events
    assert not np.array_equal(a.waveform, c.waveform)
    names = [e.phoneme for e in a.events]
    assert "g" in names and "A@" in names and all(not n.startswith(("'", ",")) for n in names)
    assert [e.sample for e in a.events] == sorted(e.sample for e in a.events)


# --------------------------------------------------------------------------------------------------
# labels mean something


def test_labels_are_meaningful(libri):
    out, _ = libri
    names = PhoneSet.read(out / "phones.txt").indexed_names()
    ali = _alignments(out / "converted_aligned_phones.txt")
    vowels = {names.index(v) for v in ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "UW")}
    energy = {"sil": [], "vowel": [], "s": []}
    centroid = {"vowel": [], "s": []}
    freqs = np.fft.rfftfreq(160, 1 / 16000)
    for r in read_manifest(out / "manifest.tsv"):
        wav = read_audio(r.path)
        labels = ali[r.id]
        frames = wav[: len(labels) * 160].reshape(-1, 160).astype(np.float64)
        e = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        spec = np.abs(np.fft.rfft(frames * np.hanning(160), axis=1)) ** 2
        c = (spec * freqs).sum(1) / (spec.sum(1) + 1e-12)
        for i, lab in enumerate(labels):
            if lab == 0:
                energy["sil"].append(e[i])
            elif lab in vowels:
                energy["vowel"].append(e[i])
                centroid["vowel"].append(c[i])
            elif names[lab] in ("S", "SH", "Z"):
                energy["s"].append(e[i])
                centroid["s"].append(c[i])
    assert np.median(energy["vowel"]) > np.median(energy["sil"]) + 30  # dB
    assert np.median(energy["s"]) > np.median(energy["sil"]) + 15
    assert np.median(centroid["s"]) > np.median(centroid["vowel"]) + 1500  # Hz: sibilants are hissy


def test_phone_segments_quirks():
    wav = np.full(1000, 500, dtype=np.int16)
    wav[:50] = 0  # lead-in before the first event
    wav[400:500] = 0  # stop closure inside the vowel's segment, before the stop's event at 500
    events = [
        PhonemeEvent("a", 50, "'"),
        PhonemeEvent("t", 500),
        PhonemeEvent("E", 600),
        PhonemeEvent("l", 800),  # zero length
        PhonemeEvent("_", 800),  # zero-length pause
        PhonemeEvent("n", 800),
    ]
    segs = phone_segments(Synthesis(wav, events))
    assert [(s.phoneme, s.start, s.end) for s in segs] == [
        ("_", 0, 50), ("a", 50, 400), ("t", 400, 600), ("E", 600, 720), ("l", 720, 800), ("n", 800, 1000),
    ]


def test_en_mapping_splits_and_merges():
    inv = inventory_for("en")

    class S:
        def __init__(self, p, a, b):
            self.phoneme, self.start, self.end = p, a, b

    spans, unknown = inv.label_segments(
        [S("_", 0, 10), S("D", 10, 20), S("e@", 20, 40), S("r", 40, 50), S(";", 50, 60), S("@L", 60, 80),
         S("zz#", 80, 90), S("_:", 90, 100)]
    )
    named = [(inv.phones[p], a, b) for p, a, b in spans]
    assert named == [("SIL", 0, 10), ("DH", 10, 20), ("EH", 20, 40), ("R", 40, 60), ("AH", 60, 70), ("L", 70, 80),
                     ("Z", 80, 85), ("Z", 85, 90), ("SIL", 90, 100)]
    assert unknown == 0


# --------------------------------------------------------------------------------------------------
# CLI


def test_cli(tmp_path, capsys):
    from cpc_speech.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--speakers", "2", "--utterances", "2", "--seed", "3", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "4 utterances, 2 speakers" in text and "40 phone classes" in text and "manifest" in text
    assert len(read_manifest(out / "manifest.tsv")) == 4
    # errors are messages, exit code 2
    assert main(["synth", str(out), "--no-progress"]) == 2  # not empty
    assert main(["synth", str(tmp_path / "x"), "--languages", "en,fr", "--no-progress"]) == 2
    assert main(["synth", str(tmp_path / "y"), "--languages", "klingon", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "one language" in err and "unsupported language" in err
