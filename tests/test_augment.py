"""Waveform augmentation: each transform's measurable effect, exact lengths, determinism per seed,
identity when off."""

import numpy as np
import pytest

from cpc_speech import augment
from cpc_speech.augment import Augmenter
from cpc_speech.config import AugmentConfig, AugmentStep, PretrainConfig, config_from_dict

SR = 16000


def tone(freq, seconds=1.0, amp=0.5):
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return np.fft.rfftfreq(x.size, 1 / SR)[int(spec.argmax())]


def band_db(x, f0, f1):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return 10 * np.log10(spec[(f >= f0) & (f <= f1)].sum() + 1e-20)


def test_pitch_shift_moves_a_tone_and_keeps_the_length():
    x = tone(200.0)
    y = augment.pitch_shift(x, 3.0)
    assert y.shape == x.shape
    assert peak_hz(y[2000:-2000]) == pytest.approx(200 * 2 ** (3 / 12), abs=3)  # 237.8 Hz
    assert peak_hz(augment.pitch_shift(x, -2.0)[2000:-2000]) == pytest.approx(200 * 2 ** (-2 / 12), abs=3)


def test_speed_and_tempo():
    x = tone(300.0)
    fast = augment.resample_by(x, 1.1)
    assert abs(fast.size - x.size / 1.1) <= 2 and peak_hz(fast) == pytest.approx(330, abs=3)
    slow = augment.time_stretch(x, 0.9)
    assert abs(slow.size - x.size / 0.9) <= 1 and peak_hz(slow[2000:-2000]) == pytest.approx(300, abs=3)


@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_additive_noise_hits_the_snr(snr, color):
    rng = np.random.default_rng(0)
    x = tone(440.0)
    noise = augment.coloured_noise(x.size, augment.COLORS[color], rng)
    y = augment.add_at_snr(x, noise, snr)
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=0.5)


def test_noise_colours_have_their_slopes():
    rng = np.random.default_rng(1)
    slopes = {}
    for name, beta in augment.COLORS.items():
        n = augment.coloured_noise(SR * 4, beta, rng)
        slopes[name] = band_db(n, 2000, 4000) - band_db(n, 200, 400)  # same width in octaves x10 apart
    assert abs(slopes["white"] - 10.0) < 1.0  # 10x the bandwidth: +10 dB
    assert abs(slopes["pink"]) < 1.0  # equal power per octave
    assert abs(slopes["brown"] + 10.0) < 1.5


def test_band_reject_removes_its_band_only():
    x = tone(1000.0) + tone(4000.0)
    y = augment.band_reject(x, 1000.0, width_octaves=0.5)
    assert band_db(x, 950, 1050) - band_db(y, 950, 1050) > 30
    assert abs(band_db(x, 3900, 4100) - band_db(y, 3900, 4100)) < 0.5


def test_reverb_keeps_level_and_adds_a_decaying_tail():
    rng = np.random.default_rng(2)
    rir = augment.room_impulse_response(0.5, rng)
    assert rir[0] == 1.0 and rir.size == 8000
    tail = rir[1:].astype(np.float64)  # after the direct path
    energy = np.cumsum(tail[::-1] ** 2)[::-1]  # Schroeder backward integration
    decay_db = 10 * np.log10(energy / energy[0])
    t20 = np.argmax(decay_db < -25) - np.argmax(decay_db < -5)  # 20 dB of decay, about RT60 / 3
    assert 3 * t20 / SR == pytest.approx(0.5, rel=0.25)
    x = tone(300.0)
    y = augment.reverberate(x, 0.5, rng)
    assert y.shape == x.shape and np.sqrt(np.mean(y ** 2)) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-3)
    assert not np.allclose(y, x, atol=1e-2)


def test_time_drop_zeroes_segments_of_the_drawn_length():
    rng = np.random.default_rng(3)
    x = np.ones(SR, np.float32)
    y = augment.time_drop(x, [20.0, 30.0], rng)
    zeros = int((y == 0).sum())
    assert 320 <= zeros <= 800 and y.shape == x.shape  # 320 + 480 samples, less any overlap


def test_augmenter_is_deterministic_exact_length_and_identity_when_off():
    steps = [AugmentStep(k, p=1.0) for k in ("pitch", "speed", "tempo", "noise", "reverb", "band_reject", "time_drop")]
    aug = Augmenter(steps, window=20480)
    assert aug.read_length() > 20480 * 1.2  # speed and tempo may both speed up by 1.1
    x = tone(220.0, seconds=aug.read_length() / SR)
    a = aug(x, np.random.default_rng([7, 3, 11]))
    b = aug(x, np.random.default_rng([7, 3, 11]))
    c = aug(x, np.random.default_rng([7, 3, 12]))
    assert a.shape == (20480,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    off = Augmenter([], window=20480)
    assert not off.enabled and off.read_length() == 20480
    np.testing.assert_array_equal(off(x[:20480], np.random.default_rng(0)), x[:20480])
    never = Augmenter([AugmentStep("noise", p=0.0)], window=20480)
    np.testing.assert_array_equal(never(x[:20480], np.random.default_rng(0)), x[:20480])


def test_mix_adds_another_utterance_at_the_snr():
    x = tone(300.0)
    other = tone(1234.0, amp=0.1)
    aug = Augmenter([AugmentStep("mix", p=1.0, low=6.0, high=6.0)], window=x.size)
    y = aug(x, np.random.default_rng(0), other=lambda n: other[:n])
    added = y - x
    assert peak_hz(added) == pytest.approx(1234, abs=2)
    assert 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2)) == pytest.approx(6.0, abs=0.5)


@pytest.mark.parametrize("bad, message", [
    ({"kind": "chorus"}, "kind must be one of"),
    ({"kind": "noise", "p": 1.5}, r"p must be in \[0, 1\]"),
    ({"kind": "speed", "low": 0.0}, "low must be > 0"),
    ({"kind": "pitch", "low": 2.0, "high": -2.0}, "must not exceed"),
])
def test_bad_augment_config_names_the_key(bad, message):
    with pytest.raises(ValueError, match=r"data\.augment\.transforms\[0\]"):
        config_from_dict(PretrainConfig, {"data": {"augment": {"transforms": [bad]}}})
    with pytest.raises(ValueError, match=message):
        config_from_dict(PretrainConfig, {"data": {"augment": {"transforms": [bad]}}})
    with pytest.raises(ValueError, match="apply_to"):
        AugmentConfig(apply_to="sideways").validate()


def _cfg(apply_to="past", transforms=None):
    from cpc_speech.config import preset

    cfg = PretrainConfig(model=preset("tiny"))
    cfg.data.window_samples, cfg.data.batch_size, cfg.data.num_workers = 8000, 4, 0
    cfg.data.augment = AugmentConfig(transforms or [AugmentStep("noise", p=1.0, low=5, high=5),
                                                    AugmentStep("band_reject", p=0.5), AugmentStep("speed", p=0.5)],
                                     apply_to=apply_to)
    cfg.loss.negatives = 16
    cfg.train.log_every, cfg.train.valid_every, cfg.train.checkpoint_every = 2, 1000, 6
    cfg.train.lr, cfg.train.warmup_steps, cfg.train.amp = 3e-3, 2, "none"
    return cfg.validate()


@pytest.mark.parametrize("apply_to", ["past", "future", "both"])
def test_loader_augments_deterministically_and_keeps_the_clean_window(tone_corpus, apply_to):
    from cpc_speech.batching import make_loader
    from cpc_speech.corpora.manifest import read_manifest

    rows = read_manifest(tone_corpus)
    cfg = _cfg(apply_to).data
    clean_loader, clean_sampler = make_loader(rows, cfg, seed=3, augment=False)
    loader, sampler = make_loader(rows, cfg, seed=3)
    again, again_sampler = make_loader(rows, cfg, seed=3)
    for s in (clean_sampler, sampler, again_sampler):
        s.set_epoch(1)
    for clean, a, b in zip(clean_loader, loader, again):
        assert clean.windows == a.windows and clean.target_wav is None
        torch_equal = (a.wav == b.wav).all() and (a.target_wav is None or (a.target_wav == b.target_wav).all())
        assert torch_equal  # same seed, epoch and position: the same augmentation
        if apply_to == "both":
            assert a.target_wav is None and not (a.wav == clean.wav).all()
        elif apply_to == "past":
            assert (a.target_wav == clean.wav).all() and not (a.wav == clean.wav).all()
        else:
            assert (a.wav == clean.wav).all() and not (a.target_wav == clean.wav).all()
    sampler.set_epoch(2)  # another epoch: other draws
    assert not (next(iter(loader)).wav == next(iter(again)).wav).all()


def test_augmented_training_learns_and_resumes_exactly(tone_corpus, tmp_path):
    import json

    import torch

    from cpc_speech.engine.checkpoint import read_checkpoint
    from cpc_speech.train.trainer import Trainer

    cfg = _cfg("past")
    cfg.train.max_steps = 12
    Trainer(cfg, str(tone_corpus), str(tmp_path / "ref"), progress=False).fit()
    Trainer(cfg, str(tone_corpus), str(tmp_path / "cut"), progress=False, on_step=lambda tr, batch: tr.step >= 6).fit()
    Trainer(cfg, str(tone_corpus), str(tmp_path / "cut"), progress=False).fit()
    a = read_checkpoint(tmp_path / "ref" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    losses = [json.loads(x)["loss"] for x in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()
              if json.loads(x).get("split") == "train"]
    assert losses[-1] < losses[0]
