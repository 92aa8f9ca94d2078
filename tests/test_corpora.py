"""Corpus loaders on small fixtures laid out exactly like the real corpora, and ``cpc-speech prepare``."""

import hashlib
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cpc_speech.audio import SAMPLE_RATE, audio_info, read_audio, resampled_length
from cpc_speech.cli import main
from cpc_speech.corpora.commonvoice import available_locales, load_commonvoice, read_tsv
from cpc_speech.corpora.folder import load_filelist, load_folder, read_filelist
from cpc_speech.corpora.librispeech import available_subsets, load_librispeech, read_speakers
from cpc_speech.corpora.manifest import read_manifest, write_manifest


def tone(n, rate, freq=220.0, seed=0):
    t = np.arange(n) / rate
    noise = np.random.default_rng(seed).standard_normal(n) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def same_file(a, b):
    return os.path.samefile(a, b)


class Collect(list):
    """on_warning callback that keeps the messages."""

    def __call__(self, message):
        self.append(message)


# ============================================================================ LibriSpeech

SPEAKERS_TXT = """\
; Speakers in this corpus; the name may hold any character, '|' included
; (made-up names for the test fixture)
;
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Reader Nineteen
26   | M | train-clean-100  | 25.08 | Reader Twenty-Six
60   | M | train-clean-100  | 20.18 | |XYZ|Pipe Name
84   | F | dev-clean        |  8.02 | Reader Eighty-Four
174  | M | dev-clean        |  8.04 | Reader 174
"""

# subset -> speaker -> chapter -> number of utterances
LS_LAYOUT = {
    "train-clean-100": {"19": {"198": 3, "227": 1}, "26": {"495": 2}},
    "dev-clean": {"84": {"121123": 2}, "174": {"50561": 1}},
}


def ls_len(spk, chap, i):
    return 1600 + 37 * i + int(spk) % 50 + int(chap) % 97


def make_librispeech(parent: Path) -> Path:
    root = parent / "LibriSpeech"
    root.mkdir(parents=True)
    (root / "SPEAKERS.TXT").write_text(SPEAKERS_TXT, encoding="utf-8")
    for subset, speakers in LS_LAYOUT.items():
        for spk, chapters in speakers.items():
            for chap, n in chapters.items():
                d = root / subset / spk / chap
                d.mkdir(parents=True)
                lines = []
                for i in range(n):
                    uid = f"{spk}-{chap}-{i:04d}"
                    sf.write(str(d / f"{uid}.flac"), tone(ls_len(spk, chap, i), SAMPLE_RATE, seed=i), SAMPLE_RATE, subtype="PCM_16")
                    lines.append(f"{uid} WORDS OF UTTERANCE {i} IN CHAPTER {chap}")
                (d / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    return make_librispeech(tmp_path_factory.mktemp("ls"))


def expected_ls(subsets):
    out = []
    for subset in subsets:
        for spk in sorted(LS_LAYOUT[subset]):
            for chap in sorted(LS_LAYOUT[subset][spk]):
                for i in range(LS_LAYOUT[subset][spk][chap]):
                    out.append((f"{spk}-{chap}-{i:04d}", spk, ls_len(spk, chap, i), subset))
    return out


def test_librispeech_several_subsets(librispeech, tmp_path):
    rows = load_librispeech(librispeech, ["train-clean-100", "dev-clean"], workers=2)
    want = expected_ls(["train-clean-100", "dev-clean"])
    assert [u.id for u in rows] == [w[0] for w in want]
    assert [u.speaker for u in rows] == [w[1] for w in want]
    assert [u.num_samples for u in rows] == [w[2] for w in want]
    assert {u.sample_rate for u in rows} == {16000}
    for u, (uid, spk, _, subset) in zip(rows, want):
        assert Path(u.path) == (librispeech / subset / spk / uid.split("-")[1] / f"{uid}.flac").resolve()
    # through a manifest in another folder: relative paths resolve back to the same files
    manifest = write_manifest(rows, tmp_path / "manifests" / "ls.tsv")
    back = read_manifest(manifest)
    assert [(u.id, u.speaker, u.num_samples, u.sample_rate) for u in back] == [
        (u.id, u.speaker, u.num_samples, u.sample_rate) for u in rows
    ]
    assert all(same_file(a.path, b.path) for a, b in zip(back, rows))
    assert len(read_audio(back[0].path)) == back[0].num_samples


def test_librispeech_root_forms(librispeech):
    assert available_subsets(librispeech) == ["train-clean-100", "dev-clean"]
    # the folder holding LibriSpeech/, one subset as a comma string
    rows = load_librispeech(librispeech.parent, "dev-clean")
    assert [u.id for u in rows] == [w[0] for w in expected_ls(["dev-clean"])]
    # default: every subset present, in the usual order
    assert [u.id for u in load_librispeech(librispeech)] == [w[0] for w in expected_ls(["train-clean-100", "dev-clean"])]
    # a subset folder itself
    assert [u.id for u in load_librispeech(librispeech / "dev-clean")] == [u.id for u in rows]


def test_librispeech_transcripts(librispeech):
    rows, texts = load_librispeech(librispeech, "train-clean-100", with_transcripts=True)
    assert set(texts) == {u.id for u in rows}
    assert texts["19-198-0002"] == "WORDS OF UTTERANCE 2 IN CHAPTER 198"


def test_librispeech_speakers_txt(librispeech):
    spk = read_speakers(librispeech / "SPEAKERS.TXT")
    assert sorted(spk, key=int) == ["19", "26", "60", "84", "174"]
    assert (spk["19"].sex, spk["19"].subset, spk["19"].minutes) == ("F", "train-clean-100", 25.19)
    assert spk["60"].name == "|XYZ|Pipe Name"
    assert spk["174"].subset == "dev-clean"


def test_librispeech_missing_subset_names_folder_and_lists(librispeech):
    with pytest.raises(FileNotFoundError) as err:
        load_librispeech(librispeech, ["train-clean-100", "test-other"])
    msg = str(err.value)
    assert str(librispeech / "test-other") in msg
    assert "train-clean-100, dev-clean" in msg


def test_librispeech_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="LibriSpeech root not found: .*nowhere"):
        load_librispeech(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no LibriSpeech subsets in .*empty"):
        load_librispeech(tmp_path / "empty")


def test_librispeech_subset_without_flac(tmp_path):
    root = tmp_path / "LibriSpeech"
    (root / "test-clean" / "1089" / "134686").mkdir(parents=True)
    (root / "test-clean" / "1089" / "134686" / "1089-134686.trans.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"subset test-clean has no \.flac files"):
        load_librispeech(tmp_path, "test-clean")


def test_librispeech_bad_files_skipped_with_warning(tmp_path):
    root = make_librispeech(tmp_path)
    chap = root / "dev-clean" / "84" / "121123"
    (chap / "84-121123-0005.flac").write_bytes(b"not a flac at all" * 20)
    sf.write(str(chap / "misnamed.flac"), tone(800, SAMPLE_RATE), SAMPLE_RATE)
    got = Collect()
    rows = load_librispeech(root, "dev-clean", on_warning=got)
    assert [u.id for u in rows] == [w[0] for w in expected_ls(["dev-clean"])]
    assert any("misnamed.flac" in m for m in got)
    assert any("84-121123-0005.flac" in m for m in got)


# ============================================================================ Common Voice

CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"


def client(name):
    return hashlib.sha256(name.encode()).hexdigest() * 2  # 128 hex digits, like recent releases


# locale -> (rate, [(clip number, speaker, sentence, in which split TSVs)])
CV_LAYOUT = {
    "en": (
        48000,
        [
            (101, "alice", "Hello there.", ("validated", "train")),
            (102, "alice", '"Quoted at the start, never closed', ("validated", "train")),
            (103, "bob", 'He said "yes" twice.', ("validated", "dev")),
            (104, "carol", "A test sentence.", ("validated", "test")),
        ],
    ),
    "de": (32000, [(201, "dora", "Guten Tag.", ("validated", "train")), (202, "emil", "Danke schön.", ("validated", "dev"))]),
}


def cv_len(num):
    return 4000 + 17 * num


def make_commonvoice(parent: Path) -> Path:
    root = parent / "cv-corpus-17.0-2024-03-15"
    for loc, (rate, clips) in CV_LAYOUT.items():
        d = root / loc
        (d / "clips").mkdir(parents=True)
        tsvs = {s: [CV_HEADER] for s in ("validated", "train", "dev", "test", "invalidated", "other")}
        for num, spk, sentence, splits in clips:
            name = f"common_voice_{loc}_{num}.mp3"
            sf.write(str(d / "clips" / name), tone(cv_len(num), rate, seed=num), rate, format="MP3")
            row = f"{client(spk)}\t{name}\t{num:064x}\t{sentence}\t\t2\t0\tthirties\t\t\t\t{loc}\t"
            for s in splits:
                tsvs[s].append(row)
        for s, lines in tsvs.items():
            (d / f"{s}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (d / "clip_durations.tsv").write_text("clip\tduration[ms]\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def commonvoice(tmp_path_factory):
    return make_commonvoice(tmp_path_factory.mktemp("cv"))


def test_commonvoice_locales_and_manifest(commonvoice, tmp_path):
    assert available_locales(commonvoice) == ["de", "en"]
    rows = load_commonvoice(commonvoice, ["en", "de"], "validated", workers=2)
    want = [(loc, num, spk) for loc in ("en", "de") for num, spk, _, _ in CV_LAYOUT[loc][1]]
    assert [u.id for u in rows] == [f"common_voice_{loc}_{num}" for loc, num, _ in want]
    assert [u.speaker for u in rows] == [client(spk) for _, _, spk in want]
    assert [u.num_samples for u in rows] == [cv_len(num) for _, num, _ in want]
    assert [u.sample_rate for u in rows] == [CV_LAYOUT[loc][0] for loc, _, _ in want]
    back = read_manifest(write_manifest(rows, tmp_path / "cv.tsv"))
    for u, (loc, num, _) in zip(back, want):
        assert same_file(u.path, commonvoice / loc / "clips" / f"common_voice_{loc}_{num}.mp3")
    assert len(read_audio(back[0].path)) == back[0].num_samples_16k == resampled_length(cv_len(101), 48000)


def test_commonvoice_split_selection(commonvoice):
    rows = load_commonvoice(commonvoice, "en", ["train", "dev"])
    assert [u.id for u in rows] == ["common_voice_en_101", "common_voice_en_102", "common_voice_en_103"]
    # a clip in several chosen splits is kept once; the default split is validated
    assert len(load_commonvoice(commonvoice, "en", "validated,train,dev,test")) == 4
    assert len(load_commonvoice(commonvoice)) == 6  # all locales, validated


def test_commonvoice_locale_folder_as_root_and_sentences(commonvoice):
    rows, texts = load_commonvoice(commonvoice / "en", splits="train", with_transcripts=True)
    assert [u.id for u in rows] == ["common_voice_en_101", "common_voice_en_102"]
    assert texts["common_voice_en_102"] == '"Quoted at the start, never closed'


def test_commonvoice_tsv_quote_quirks(commonvoice):
    rows = read_tsv(commonvoice / "en" / "validated.tsv")
    assert len(rows) == 4
    assert rows[2]["sentence"] == 'He said "yes" twice.'
    assert rows[1]["path"] == "common_voice_en_102.mp3" and rows[1]["locale"] == "en"


def test_commonvoice_missing_clip_skipped_with_warning(tmp_path):
    root = make_commonvoice(tmp_path)
    (root / "en" / "clips" / "common_voice_en_103.mp3").unlink()
    with open(root / "en" / "validated.tsv", "a", encoding="utf-8") as f:
        f.write(f"{client('zed')}\tcommon_voice_en_999.mp3\tx\tGone.\t\t2\t0\t\t\t\t\ten\t\n")
    with pytest.warns(UserWarning) as record:
        rows = load_commonvoice(root, "en")
    assert [u.id for u in rows] == ["common_voice_en_101", "common_voice_en_102", "common_voice_en_104"]
    messages = [str(w.message) for w in record]
    assert sum("clip not found" in m for m in messages) == 2
    assert any("common_voice_en_103.mp3" in m for m in messages)
    assert any("common_voice_en_999.mp3" in m for m in messages)
    assert any("skipped 2 row(s) of 5 whose clip is missing (2 clip(s))" in m for m in messages)
    # listed in two chosen splits: one warning for the clip, both rows counted
    got = Collect()
    rows = load_commonvoice(root, "en", "validated,dev", on_warning=got)
    assert [m for m in got if "common_voice_en_103.mp3" in m] == [
        f"validated.tsv: clip not found, skipping: {(root / 'en' / 'clips' / 'common_voice_en_103.mp3').resolve()}"
    ]
    assert "skipped 3 row(s) of 6 whose clip is missing (2 clip(s))" in got


def test_commonvoice_errors_name_the_folder(commonvoice, tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_commonvoice(commonvoice, ["en", "fr"])
    assert str(commonvoice / "fr") in str(err.value) and "de, en" in str(err.value)
    with pytest.raises(FileNotFoundError, match="split file not found: .*en.reported.tsv"):
        load_commonvoice(commonvoice, "en", "reported")
    with pytest.raises(FileNotFoundError, match="Common Voice root not found: .*missing"):
        load_commonvoice(tmp_path / "missing")
    bad = tmp_path / "bad" / "xx"
    (bad / "clips").mkdir(parents=True)
    (bad / "validated.tsv").write_text("path\tsentence\nx.mp3\thi\n", encoding="utf-8")
    with pytest.raises(ValueError, match="validated.tsv: header has no client_id column"):
        load_commonvoice(bad.parent)


# ============================================================================ folder and file list


def make_folder(root: Path):
    files = {
        "spkA/a1.wav": ("WAV", None, 16000, 1600),
        "spkA/session2/a2.flac": ("FLAC", None, 16000, 2000),
        "spkB/b1.ogg": ("OGG", "VORBIS", 16000, 1800),
        "spkB/b2.opus": ("OGG", "OPUS", 48000, 4800),
        "spkC/c1.mp3": ("MP3", None, 22050, 2205),
        "spkC/c1.wav": ("WAV", None, 8000, 800),
        "loose.wav": ("WAV", None, 16000, 1000),
    }
    for rel, (fmt, subtype, rate, n) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(p), tone(n, rate), rate, format=fmt, subtype=subtype)
    (root / "spkA" / "notes.txt").write_text("not audio", encoding="utf-8")
    (root / ".cache").mkdir()
    sf.write(str(root / ".cache" / "x.wav"), tone(100, 16000), 16000)
    (root / "spkA" / "._a1.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    return files


def test_folder_speaker_depth_one(tmp_path):
    files = make_folder(tmp_path / "audio")
    got = Collect()
    rows = load_folder(tmp_path / "audio", on_warning=got, workers=3)
    by_id = {u.id: u for u in rows}
    assert sorted(by_id) == sorted(["spkA/a1", "spkA/session2/a2", "spkB/b1", "spkB/b2", "spkC/c1.mp3", "spkC/c1.wav", "loose"])
    assert by_id["spkA/session2/a2"].speaker == "spkA"
    assert by_id["spkB/b2"].speaker == "spkB" and by_id["spkB/b2"].sample_rate == 48000
    assert by_id["loose"].speaker == "unknown"
    assert any("1 of 7 file(s) have no speaker" in m for m in got)
    for rel, (_, _, rate, n) in files.items():
        uid = {"spkC/c1.mp3": "spkC/c1.mp3", "spkC/c1.wav": "spkC/c1.wav"}.get(rel, rel.rsplit(".", 1)[0])
        u = by_id[uid]
        assert (u.num_samples, u.sample_rate) == (n, rate), rel
        assert same_file(u.path, tmp_path / "audio" / rel)
    back = read_manifest(write_manifest(rows, tmp_path / "m" / "folder.tsv"))
    assert [same_file(a.path, b.path) for a, b in zip(back, rows)] == [True] * len(rows)


def test_folder_depth_two_zero_and_regex(tmp_path):
    root = tmp_path / "corpus"
    for part, spk, name in [("part1", "s01", "s01_u1.wav"), ("part1", "s02", "s02_u1.flac"), ("part2", "s01", "s01_u2.wav")]:
        (root / part / spk).mkdir(parents=True, exist_ok=True)
        sf.write(str(root / part / spk / name), tone(1000, 16000), 16000)
    rows = load_folder(root, speaker_depth=2)
    assert [(u.id, u.speaker) for u in rows] == [
        ("part1/s01/s01_u1", "s01"),
        ("part1/s02/s02_u1", "s02"),
        ("part2/s01/s01_u2", "s01"),
    ]
    assert {u.speaker for u in load_folder(root, speaker_depth=1)} == {"part1", "part2"}
    assert {u.speaker for u in load_folder(root, speaker_depth=0)} == {"unknown"}
    rows = load_folder(root, speaker_regex=r"^(?P<speaker>s\d+)_u")
    assert [u.speaker for u in rows] == ["s01", "s02", "s01"]
    assert [u.speaker for u in load_folder(root, speaker_regex=r"u(\d)")] == ["1", "1", "2"]
    assert [u.id for u in load_folder(root, extensions="flac")] == ["part1/s02/s02_u1"]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio folder not found: .*absent"):
        load_folder(tmp_path / "absent")
    (tmp_path / "empty" / "spk").mkdir(parents=True)
    (tmp_path / "empty" / "spk" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no audio files .* found under .*empty"):
        load_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="invalid speaker regex"):
        load_folder(tmp_path / "empty", speaker_regex="(")


def test_filelist(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, rate, n in [("x1.wav", 16000, 1600), ("x2.flac", 44100, 4410), ("sub dir/x3.ogg", 16000, 900)]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(data / name), tone(n, rate), rate)
    lst = tmp_path / "lists" / "files.txt"
    lst.parent.mkdir()
    lst.write_text(
        "# a comment\n"
        f"{data / 'x1.wav'}\tspk1\n"
        "\n"
        "../data/x2.flac spk2\n"
        "../data/sub dir/x3.ogg\n"
        "../data/missing.wav\tspk9\n",
        encoding="utf-8",
    )
    assert read_filelist(lst)[1] == ((lst.parent / "../data/x2.flac"), "spk2")
    got = Collect()
    rows = load_filelist(lst, on_warning=got)
    assert [(u.id, u.speaker, u.num_samples, u.sample_rate) for u in rows] == [
        ("x1", "spk1", 1600, 16000),
        ("x2", "spk2", 4410, 44100),
        ("x3", "unknown", 900, 16000),
    ]
    assert same_file(rows[2].path, data / "sub dir" / "x3.ogg")
    assert any("missing.wav" in m and "file not found" in m for m in got)
    assert any("1 of 4 file(s)" in m and "no speaker" in m for m in got)
    rows = load_filelist(lst, speaker_regex=r"x(\d)", on_warning=Collect())
    assert [u.speaker for u in rows] == ["spk1", "spk2", "3"]
    with pytest.raises(FileNotFoundError, match="file list not found: .*nolist.txt"):
        load_filelist(tmp_path / "nolist.txt")


# ============================================================================ Hugging Face datasets on disk


def encoded(wav, rate, fmt):
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format=fmt)
    return buf.getvalue()


HF_ROWS = [  # id, speaker_id, rate, samples, format, channels
    ("1272-128104-0000", 1272, 16000, 1600, "FLAC", 1),
    ("1272-128104-0001", 1272, 22050, 2205, "WAV", 2),
    ("2428-83705-0000", 2428, 48000, 4321, "MP3", 1),
]


def hf_dataset():
    datasets = pytest.importorskip("datasets")
    audio = []
    for uid, _, rate, n, fmt, ch in HF_ROWS:
        wav = tone(n, rate) if ch == 1 else np.stack([tone(n, rate), tone(n, rate, freq=330)], axis=1)
        audio.append({"bytes": encoded(wav, rate, fmt), "path": f"{uid}.{fmt.lower()}"})
    data = {
        "file": [a["path"] for a in audio],
        "audio": audio,
        "text": ["A", "B", "C"],
        "speaker_id": [r[1] for r in HF_ROWS],
        "id": [r[0] for r in HF_ROWS],
    }
    # cast to the Audio feature without decoding (encoding arrays would need torchcodec)
    return datasets, datasets.Dataset.from_dict(data).cast_column("audio", datasets.Audio())


def test_hf_save_to_disk(tmp_path):
    from cpc_speech.corpora.hf import load_hf

    _, ds = hf_dataset()
    ds.save_to_disk(str(tmp_path / "ds"))
    rows = load_hf(tmp_path / "ds", tmp_path / "out" / "audio", workers=2)
    assert [(u.id, u.speaker, u.sample_rate) for u in rows] == [(r[0], str(r[1]), 16000) for r in HF_ROWS]
    assert [u.num_samples for u in rows] == [resampled_length(r[3], r[2]) for r in HF_ROWS]
    for u in rows:
        assert Path(u.path).parent == (tmp_path / "out" / "audio").resolve() and u.path.endswith(".flac")
        info = audio_info(u.path)
        assert (info.frames, info.sample_rate, info.channels) == (u.num_samples, 16000, 1)
    np.testing.assert_allclose(read_audio(rows[0].path), tone(1600, 16000), atol=1e-4)
    back = read_manifest(write_manifest(rows, tmp_path / "out" / "hf.tsv"))
    assert open(tmp_path / "out" / "hf.tsv").read().splitlines()[1].split("\t")[1] == "audio/1272-128104-0000.flac"
    assert all(same_file(a.path, b.path) for a, b in zip(back, rows))
    # a second run reuses the FLACs; overwrite decodes again
    mtime = os.stat(rows[0].path).st_mtime_ns
    again = load_hf(tmp_path / "ds", tmp_path / "out" / "audio")
    assert again == rows and os.stat(rows[0].path).st_mtime_ns == mtime
    assert load_hf(tmp_path / "ds", tmp_path / "out" / "audio", overwrite=True) == rows


def test_hf_dataset_dict_parquet_and_columns(tmp_path):
    from cpc_speech.corpora.hf import load_hf
    from cpc_speech.corpora.hf_files import find_data_files

    datasets, ds = hf_dataset()
    datasets.DatasetDict({"train": ds, "test": ds.select([2])}).save_to_disk(str(tmp_path / "dd"))
    rows = load_hf(tmp_path / "dd", tmp_path / "a", splits="test")
    assert [(u.id, Path(u.path).parent.name) for u in rows] == [("2428-83705-0000", "test")]
    got = Collect()
    both = load_hf(tmp_path / "dd", tmp_path / "b", id_column="file", on_warning=got)
    assert got == ["1 duplicate utterance id(s) were made unique with a -N suffix"]
    assert [u.id for u in both] == [r[0] + "." + r[4].lower() for r in HF_ROWS] + ["2428-83705-0000.mp3-1"]
    with pytest.raises(ValueError, match="no split 'validation' .*train, test"):
        load_hf(tmp_path / "dd", tmp_path / "c", splits="validation")
    # a hub-style parquet snapshot
    (tmp_path / "hub" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))
    assert list(find_data_files(tmp_path / "hub")) == ["train"]
    rows = load_hf(tmp_path / "hub", tmp_path / "p", speaker_column="text")
    assert [u.speaker for u in rows] == ["A", "B", "C"]
    with pytest.raises(ValueError, match="no speaker column 'client_id' .*columns: file, audio, text, speaker_id, id"):
        load_hf(tmp_path / "hub", tmp_path / "p", speaker_column="client_id")
    with pytest.raises(FileNotFoundError, match="no Hugging Face dataset in .*empty"):
        (tmp_path / "empty").mkdir()
        load_hf(tmp_path / "empty", tmp_path / "e")


def test_hf_array_form_and_bad_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from cpc_speech.corpora.hf import load_hf

    x = tone(800, 8000)
    audio = pa.array(
        [
            {"array": x.tolist(), "sampling_rate": 8000},
            {"array": [0.0] * 10 + [float("nan")], "sampling_rate": 8000},
            {"array": x[:400].tolist(), "sampling_rate": 8000},
        ]
    )
    table = pa.table({"audio": audio, "client_id": ["c1", "c2", None]})
    pq.write_table(table, str(tmp_path / "clips.parquet"))
    got = Collect()
    rows = load_hf(tmp_path / "clips.parquet", tmp_path / "out", on_warning=got)
    assert [(u.id, u.speaker, u.num_samples) for u in rows] == [("utt-00000000", "c1", 1600), ("utt-00000002", "unknown", 800)]
    assert any("row 1" in m and "NaN" in m for m in got)
    assert any("skipped 1 of 3 row(s)" in m for m in got)
    np.testing.assert_allclose(read_audio(rows[1].path)[:700], read_audio(rows[0].path)[:700], atol=2e-3)  # ends differ
    # no speaker column at all: everyone is 'unknown', with a warning
    pq.write_table(pa.table({"audio": audio.take([0])}), str(tmp_path / "nospk.parquet"))
    got = Collect()
    assert [u.speaker for u in load_hf(tmp_path / "nospk.parquet", tmp_path / "out2", on_warning=got)] == ["unknown"]
    assert any("no speaker column" in m for m in got)


# ============================================================================ cpc-speech prepare


def test_cli_prepare_librispeech(librispeech, tmp_path, capsys):
    out = tmp_path / "m" / "ls.tsv"
    code = main(["prepare", "librispeech", str(librispeech.parent), "--subsets", "train-clean-100,dev-clean", "--out", str(out), "--workers", "2", "--transcripts", str(tmp_path / "m" / "ls.txt")])
    assert code == 0
    text = capsys.readouterr().out
    assert "9 utterances, 4 speakers" in text and "hours" in text
    rows = read_manifest(out)
    assert [u.id for u in rows] == [w[0] for w in expected_ls(["train-clean-100", "dev-clean"])]
    assert (tmp_path / "m" / "ls.txt").read_text().splitlines()[0] == "19-198-0000\tWORDS OF UTTERANCE 0 IN CHAPTER 198"


def test_cli_prepare_errors_are_messages(librispeech, tmp_path, capsys):
    code = main(["prepare", "librispeech", str(librispeech), "--subsets", "dev-other", "--out", str(tmp_path / "x.tsv")])
    assert code == 2
    err = capsys.readouterr().err
    assert "cpc-speech prepare: error: LibriSpeech subset folder not found" in err and str(librispeech / "dev-other") in err
    assert not (tmp_path / "x.tsv").exists()
    assert main(["prepare", "folder", str(tmp_path / "none"), "--out", str(tmp_path / "y.tsv")]) == 2
    assert "audio folder not found" in capsys.readouterr().err


def test_cli_prepare_commonvoice_folder_filelist(commonvoice, tmp_path, capsys):
    out = tmp_path / "cv.tsv"
    assert main(["prepare", "commonvoice", str(commonvoice), "--locales", "en", "--splits", "train,dev", "--out", str(out)]) == 0
    assert "3 utterances, 2 speakers" in capsys.readouterr().out
    assert [u.id for u in read_manifest(out)] == ["common_voice_en_101", "common_voice_en_102", "common_voice_en_103"]

    make_folder(tmp_path / "audio")
    assert main(["prepare", "folder", str(tmp_path / "audio"), "--out", str(tmp_path / "f.tsv"), "--absolute-paths", "--min-seconds", "0.09"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 of 7 file(s) have no speaker" in captured.err
    rows = read_manifest(tmp_path / "f.tsv")
    assert all(os.path.isabs(line.split("\t")[1]) for line in (tmp_path / "f.tsv").read_text().splitlines()[1:])
    assert "loose" not in {u.id for u in rows} and len(rows) == 6  # 1000 samples < 0.09 s dropped
    assert "dropped 1 shorter than 0.09 s" in captured.out

    lst = tmp_path / "list.txt"
    lst.write_text(f"{tmp_path / 'audio' / 'spkA' / 'a1.wav'}\tA\n", encoding="utf-8")
    assert main(["prepare", "filelist", str(lst), "--out", str(tmp_path / "l.tsv")]) == 0
    assert [(u.id, u.speaker) for u in read_manifest(tmp_path / "l.tsv")] == [("a1", "A")]


def test_cli_prepare_hf(tmp_path, capsys):
    _, ds = hf_dataset()
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "man" / "hf.tsv"
    assert main(["prepare", "hf", str(tmp_path / "ds"), "--out", str(out), "--speaker-column", "speaker_id"]) == 0
    assert "3 utterances, 2 speakers" in capsys.readouterr().out
    rows = read_manifest(out)
    assert all(Path(u.path).parent == tmp_path / "man" / "hf_audio" for u in rows)
    assert [audio_info(u.path).sample_rate for u in rows] == [16000] * 3


def test_loaders_default_to_python_warnings(tmp_path):
    make_folder(tmp_path / "audio")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_folder(tmp_path / "audio")
    assert any("have no speaker" in str(w.message) for w in record)
