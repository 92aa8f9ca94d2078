"""MFCC baseline: shapes, frame alignment, input forms, and agreement with librosa when installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpc_speech.audio import write_audio
from cpc_speech.features.mfcc import (
    DIM,
    LEFT_PAD,
    deltas,
    dct_matrix,
    log_mel,
    mel_filterbank,
    mfcc,
    mfcc_features,
    num_frames,
)


def _signal(n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 159, 160, 161, 399, 400, 16000, 16159, 48077])
def test_shapes_and_frame_count(n):
    f = mfcc_features(np.zeros(n, np.float32) + 0.01) if n else mfcc_features(np.zeros(0, np.float32))
    assert f.shape == (n // 160, DIM) and f.dtype == np.float32 and num_frames(n) == n // 160
    assert np.all(np.isfinite(f))


def test_matrices():
    fb = mel_filterbank()
    assert fb.shape == (40, 201) and (fb >= 0).all() and (fb.sum(1) > 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all()  # band centres increase with frequency
    d = dct_matrix(40, 40)
    np.testing.assert_allclose(d @ d.T, np.eye(40), atol=1e-12)  # orthonormal DCT-II


def test_tone_lands_in_its_mel_band():
    t = np.arange(32000) / 16000.0
    for hz in (300.0, 1000.0, 4000.0):
        lm = log_mel((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32))
        band = int(np.median(lm.argmax(1)))
        assert mel_filterbank()[band, int(round(hz / 40.0))] > 0  # FFT bin spacing is 40 Hz


def test_frame_centre_alignment():
    """Frame t is centred on sample 160 t + 80: a 80-sample burst centred there peaks at frame t with
    (nearly) symmetric neighbours (the periodic Hann window is symmetric about sample 200 of 400)."""
    x = np.full(16000, 1e-4, np.float32)
    k = 37
    x[160 * k + 40:160 * k + 120] = 0.8
    e = log_mel(x).sum(1)
    assert e.argmax() == k
    drop = e[k] - max(e[k - 1], e[k + 1])
    assert drop > 50 and abs(e[k - 1] - e[k + 1]) < 0.05 * drop
    # frame 0 covers samples [-120, 280), frame 1 [40, 440): impulses just inside / outside
    floor = np.log(1e-10)
    for pos, seen in ((270, (True, True)), (285, (False, True)), (35, (True, False)), (45, (True, True))):
        y = np.zeros(800, np.float32)
        y[pos] = 1.0
        lm = log_mel(y)
        assert tuple(bool(lm[i].max() > floor + 1.0) for i in (0, 1)) == seen, pos


def test_deltas_of_linear_ramp():
    x = np.arange(20, dtype=np.float64)[:, None] * np.array([[1.0, -2.0]])
    d = deltas(x)
    np.testing.assert_allclose(d[2:-2], np.tile([[1.0, -2.0]], (16, 1)))
    f = mfcc_features(_signal(16000))
    np.testing.assert_allclose(f[:, 13:26], deltas(f[:, :13].astype(np.float64)), atol=1e-4)


def test_input_forms_agree(tmp_path):
    x = _signal(24000)
    ref = mfcc_features(x)
    write_audio(tmp_path / "a.wav", x, subtype="FLOAT")
    np.testing.assert_allclose(mfcc_features(tmp_path / "a.wav"), ref, atol=1e-5)
    np.testing.assert_allclose(mfcc_features(str(tmp_path / "a.wav")), ref, atol=1e-5)
    np.testing.assert_allclose(mfcc_features(torch.from_numpy(x)), ref, atol=1e-5)
    np.testing.assert_allclose(mfcc_features(np.stack([x, x])), ref, atol=1e-5)
    np.testing.assert_allclose(mfcc_features(np.stack([x, x], 1)), ref, atol=1e-5)
    pcm = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(mfcc_features(pcm, sample_rate=16000), mfcc_features(pcm / 32768.0), atol=1e-3)
    assert mfcc_features(x[::2], sample_rate=8000).shape == (150, 39)
    with pytest.raises(ValueError, match="NaN"):
        mfcc_features(np.array([0.0, np.nan] * 200, np.float32))


def test_matches_librosa():
    """Against librosa.feature.mfcc with the same parameters on the signal padded by 120 zeros on the
    left (same frame positions): librosa works in dB (10 log10), we in ln, so ours x 10/ln(10) must
    match to 1e-3 dB on coefficients that reach ~100; deltas (width 5, applied twice) agree to 1e-4
    away from the edges (librosa interpolates at the edges, we repeat the edge frames)."""
    librosa = pytest.importorskip("librosa")
    x = _signal(16000 * 3 + 77)
    ours = mfcc(x)
    padded = np.concatenate([np.zeros(LEFT_PAD, np.float32), x, np.zeros(400, np.float32)])
    ref = librosa.feature.mfcc(y=padded, sr=16000, n_mfcc=13, n_fft=400, hop_length=160, n_mels=40,
                               center=False, window="hann", power=2.0, htk=False, norm="ortho").T[: len(ours)]
    assert ref.shape == ours.shape == (300, 13)
    np.testing.assert_allclose(ours * 10 / np.log(10), ref, atol=1e-3)
    d1 = librosa.feature.delta(ref.T, width=5).T
    d2 = librosa.feature.delta(d1.T, width=5).T
    full = np.concatenate([ref, d1, d2], 1) * np.log(10) / 10
    np.testing.assert_allclose(mfcc_features(x)[4:-4], full[4:-4], atol=1e-4)
    np.testing.assert_allclose(mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40), atol=1e-8)
