"""MFCC baseline features (numpy only, no librosa at run time).

``mfcc_features(wav)`` gives 39 dimensions per 10 ms frame: 13 cepstral coefficients, their deltas
and delta-deltas. Parameters (all at 16 kHz):

* window: 400 samples (25 ms), periodic Hann, no pre-emphasis, no dither, FFT size 400 (201 bins),
  power spectrum ``|X|^2``;
* 40 mel bands from 0 to 8000 Hz, Slaney mel scale with Slaney area normalisation (the librosa
  default filterbank);
* natural log ``log(max(mel, 1e-10))``;
* DCT-II with orthonormal scaling, first 13 coefficients (c0 included);
* deltas by linear regression over +-2 frames (``sum_n n (c[t+n] - c[t-n]) / (2 sum_n n^2)``), the
  edge frames repeated at the ends; delta-deltas are deltas of the deltas.

Frame alignment: frame ``t`` is centred on sample ``160 t + 80``, i.e. its window covers samples
``[160 t - 120, 160 t + 280)`` (zeros outside the signal). The centre of frame ``t`` is the centre of
the 10 ms label interval ``[160 t, 160 t + 160)`` used by frame-level alignments, and CPC frame ``t``
(which covers ``[160 t - 153, 160 t + 312)``) has the same centre. The number of frames is
``n_samples // 160`` (a trailing part shorter than 10 ms gets no frame, like an alignment label).

Up to the log scale (``10 / ln 10`` for librosa's dB) and the edge handling this matches
``librosa.feature.mfcc(y=..., sr=16000, n_mfcc=13, n_fft=400, hop_length=160, n_mels=40,
center=False)`` run on the signal padded with 120 zeros on the left (tests/test_mfcc.py checks it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

from cpc_speech.audio import SAMPLE_RATE, load_waveform

HOP = 160  # samples per frame (10 ms)
WIN = 400  # samples per analysis window (25 ms)
N_MELS = 40
N_CEPS = 13
DELTA_WINDOW = 2  # +-2 frames for the regression deltas
LOG_FLOOR = 1e-10
DIM = 3 * N_CEPS  # 39
LEFT_PAD = WIN // 2 - HOP // 2  # 120: frame t starts at 160 t - 120

_BLOCK_FRAMES = 8192  # frames per FFT block (bounds memory on long audio)


def num_frames(num_samples: int) -> int:
    """Number of MFCC frames for ``num_samples`` samples at 16 kHz: ``num_samples // 160``."""
    return max(0, int(num_samples)) // HOP


# Slaney mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above.
_HZ_PER_MEL = 200.0 / 3.0  # in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _HZ_PER_MEL
_LOG_STEP = np.log(6.4) / 27.0  # natural-log step per mel in the logarithmic part


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Hz -> Slaney mel."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / _HZ_PER_MEL
    with np.errstate(divide="ignore"):
        log = _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    """Slaney mel -> Hz."""
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOG_STEP * (m - _MIN_LOG_MEL)), _HZ_PER_MEL * m)


@lru_cache(maxsize=8)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = WIN, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: Optional[float] = None) -> np.ndarray:
    """Triangular mel filters, shape (n_mels, n_fft // 2 + 1), Slaney scale and area normalisation."""
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    weights = np.zeros((n_mels, bins.size))
    for i in range(n_mels):
        rising = (bins - edges[i]) / widths[i]
        falling = (edges[i + 2] - bins) / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=8)
def dct_matrix(n_out: int = N_CEPS, n_in: int = N_MELS) -> np.ndarray:
    """Orthonormal DCT-II basis, shape (n_out, n_in)."""
    k = np.arange(n_out)[:, None]
    m = np.arange(n_in)[None, :]
    basis = np.cos(np.pi * k * (2 * m + 1) / (2.0 * n_in)) * np.sqrt(2.0 / n_in)
    basis[0] *= np.sqrt(0.5)
    basis.setflags(write=False)
    return basis


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)  # periodic
    w.setflags(write=False)
    return w


def _as_mono16k(wav, sample_rate: Optional[int]) -> np.ndarray:
    if (isinstance(wav, np.ndarray) and wav.ndim == 1 and np.issubdtype(wav.dtype, np.floating)
            and sample_rate in (None, SAMPLE_RATE)):
        wav = np.asarray(wav, dtype=np.float32)
        if wav.size and not np.all(np.isfinite(wav)):
            raise ValueError("mfcc: audio contains NaN or infinite samples")
        return wav
    if isinstance(wav, (str, bytes)) or hasattr(wav, "__fspath__"):
        return load_waveform(wav)
    return load_waveform(wav, sample_rate=SAMPLE_RATE if sample_rate is None else sample_rate)


def log_mel(wav, sample_rate: Optional[int] = None) -> np.ndarray:
    """Log mel energies, float64 (frames, 40), frames as documented in the module docstring."""
    x = _as_mono16k(wav, sample_rate).astype(np.float64)
    n_frames = num_frames(x.size)
    out = np.empty((n_frames, N_MELS))
    if n_frames == 0:
        return out
    padded = np.zeros(LEFT_PAD + n_frames * HOP + (WIN - HOP))
    usable = min(x.size, padded.size - LEFT_PAD)
    padded[LEFT_PAD:LEFT_PAD + usable] = x[:usable]
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN)[::HOP]  # view, no copy
    window, fbank = _hann(WIN), mel_filterbank()
    for start in range(0, n_frames, _BLOCK_FRAMES):
        block = frames[start:start + _BLOCK_FRAMES] * window
        spec = np.fft.rfft(block, n=WIN, axis=1)
        power = spec.real ** 2 + spec.imag ** 2
        out[start:start + len(block)] = np.log(np.maximum(power @ fbank.T, LOG_FLOOR))
    return out


def mfcc(wav, sample_rate: Optional[int] = None, n_ceps: int = N_CEPS) -> np.ndarray:
    """Static MFCCs, float64 (frames, n_ceps)."""
    return log_mel(wav, sample_rate) @ dct_matrix(n_ceps, N_MELS).T


def deltas(x: np.ndarray, window: int = DELTA_WINDOW) -> np.ndarray:
    """Regression deltas along axis 0 over +-``window`` frames, edge frames repeated."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[0] == 0:
        return x.copy()
    padded = np.concatenate([np.repeat(x[:1], window, axis=0), x, np.repeat(x[-1:], window, axis=0)])
    n = x.shape[0]
    out = np.zeros_like(x)
    for k in range(1, window + 1):
        out += k * (padded[window + k:window + k + n] - padded[window - k:window - k + n])
    return out / (2.0 * sum(k * k for k in range(1, window + 1)))


def mfcc_features(wav, sample_rate: Optional[int] = None, with_deltas: bool = True) -> np.ndarray:
    """MFCC + deltas + delta-deltas: float32 (n_samples // 160, 39) for 16 kHz mono audio.

    ``wav``: a 1-D float array at 16 kHz (the fast path), or anything
    :func:`cpc_speech.audio.load_waveform` accepts (path, 2-D array, tensor; arrays at another rate
    with ``sample_rate=``). ``with_deltas=False`` returns the 13 static coefficients only.
    """
    c = mfcc(wav, sample_rate)
    if not with_deltas:
        return c.astype(np.float32)
    d = deltas(c)
    return np.concatenate([c, d, deltas(d)], axis=1).astype(np.float32)
