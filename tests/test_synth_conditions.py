"""Recording conditions of generated corpora: the clean corpus is unchanged, variability keeps the
phone sequences while moving their timing, channels and noise do what they say, labels stay aligned."""

import json

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from cpc_speech.audio import read_audio  # noqa: E402
from cpc_speech.synth.conditions import SynthConditions, _delay, apply_channel, gsm, parse_snr, telephone  # noqa: E402
from cpc_speech.synth.corpus import synthesize_corpus  # noqa: E402

KW = dict(speakers=2, utterances=2, seed=3, jobs=1, progress=False)


def _read(out):
    man = {}
    for line in (out / "manifest.tsv").read_text().splitlines()[1:]:
        uid, path = line.split("\t")[:2]
        man[uid] = out / path
    labels = {}
    for line in (out / "converted_aligned_phones.txt").read_text().splitlines():
        uid, *ids = line.split()
        labels[uid] = np.array([int(i) for i in ids])
    return man, labels


def _collapsed(frames):
    out = []
    for v in frames:
        if v != 0 and (not out or out[-1] != v):
            out.append(int(v))
    return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditions")
    synthesize_corpus(root / "plain", **KW)
    synthesize_corpus(root / "clean", conditions=SynthConditions(), **KW)
    synthesize_corpus(root / "varied", conditions=SynthConditions(variability=1.0, channel="telephone"), **KW)
    return root


def test_clean_conditions_change_nothing(corpora):
    a, b = corpora / "plain", corpora / "clean"
    man_a, lab_a = _read(a)
    man_b, lab_b = _read(b)
    assert man_a.keys() == man_b.keys()
    for uid in man_a:
        assert man_a[uid].read_bytes() == man_b[uid].read_bytes(), uid
        assert np.array_equal(lab_a[uid], lab_b[uid])
    assert not (b / "conditions.json").exists()


def test_variability_keeps_phones_moves_timing_and_telephone_cuts_the_band(corpora):
    man_c, lab_c = _read(corpora / "clean")
    man_v, lab_v = _read(corpora / "varied")
    info = json.loads((corpora / "varied" / "conditions.json").read_text())
    assert info["conditions"]["channel"] == "telephone" and len(info["speaker_warps"]) == 2
    assert all(0.88 <= w <= 1.12 for w in info["speaker_warps"].values())
    assert (corpora / "clean" / "phone_transcripts.txt").read_text().split("\n")[0].split()[0] in man_v
    moved = 0
    for uid in man_c:
        # eSpeak's phones for the same sentence, whatever rate/pitch/pauses/warp: compare phone sets
        # (pauses can split or merge runs of the same phone across a word boundary)
        assert set(_collapsed(lab_c[uid])) == set(_collapsed(lab_v[uid])), uid
        moved += len(lab_c[uid]) != len(lab_v[uid])
        x = read_audio(man_v[uid])
        assert len(lab_v[uid]) == x.shape[0] // 160
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.shape[0], 1 / 16000)
        assert spec[f > 3800].sum() < 0.01 * spec.sum(), uid  # clean eSpeak speech has ~10 % there
    assert moved >= 3  # timing changed for (nearly) every utterance


def test_channels_keep_alignment_and_noise_hits_its_snr():
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 16000
    x = (0.3 * np.sin(2 * np.pi * 700 * t) * (np.sin(2 * np.pi * 2 * t) > 0) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)
    tel, g = telephone(x, 16000), gsm(x, 16000)
    assert tel.shape == g.shape == x.shape
    assert _delay(x.astype(float), tel.astype(float), 400) == 0
    assert _delay(tel.astype(float), g.astype(float), 400) == 0
    assert np.corrcoef(tel, g)[0, 1] > 0.8
    speech = np.abs(np.sin(2 * np.pi * 2 * t)) > 0.5
    y, info = apply_channel(x, 16000, SynthConditions(snr_db=(15.0, 15.0)), speech, np.random.default_rng(1))
    noise = y - x
    snr = 10 * np.log10(np.mean(x[speech].astype(float) ** 2) / np.mean(noise.astype(float) ** 2))
    assert abs(snr - 15.0) < 0.5 and info["snr_db"] == 15.0
    assert parse_snr("10:25") == (10.0, 25.0) and parse_snr("7") == (7.0, 7.0) and parse_snr(None) is None
    for bad in (SynthConditions(variability=2), SynthConditions(channel="radio"), SynthConditions(snr_db=(20, 10))):
        with pytest.raises(ValueError):
            bad.validate()
