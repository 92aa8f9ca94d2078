"""Waveform augmentation for pretraining (the WavAugment set of Kharitonov et al. 2021), in numpy/scipy.

Transforms of a 16 kHz float32 window ``(samples,)``, each applied with its probability ``p`` and a
parameter drawn uniformly from ``[low, high]`` (defaults in :data:`DEFAULT_RANGES`):

* ``pitch``: pitch shift in semitones, tempo kept (phase-vocoder time stretch, then resampling);
* ``speed``: speed factor (pitch and tempo change together, by resampling);
* ``tempo``: tempo factor, pitch kept (phase-vocoder time stretch);
* ``noise``: additive coloured noise (``color``: white, pink, brown or random) at an SNR in dB;
* ``mix``: another utterance of the corpus added at an SNR in dB (the loader supplies it);
* ``reverb``: convolution with a generated room impulse response of RT60 seconds (exponentially
  decaying noise after a direct path), level kept;
* ``band_reject``: a band-stop filter around a centre frequency in Hz (log-uniform), ``width``
  octaves wide;
* ``time_drop``: ``count`` segments of ``[low, high]`` milliseconds set to zero.

Transforms that change the length (speed, tempo) run first, on the window and the samples after it
(:meth:`Augmenter.read_length`), and their result is cropped to the window; the others then run on
exactly the window, so every output has exactly ``samples`` samples. Every draw comes
from the ``numpy.random.Generator`` passed in: the loader seeds it from (seed, epoch, window), so a
resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from cpc_speech.audio import SAMPLE_RATE

KINDS = ("pitch", "speed", "tempo", "noise", "mix", "reverb", "band_reject", "time_drop")
DEFAULT_RANGES: Dict[str, Tuple[float, float]] = {
    "pitch": (-3.0, 3.0),  # semitones
    "speed": (0.9, 1.1),  # factor
    "tempo": (0.9, 1.1),  # factor
    "noise": (5.0, 20.0),  # SNR dB
    "mix": (5.0, 20.0),  # SNR dB
    "reverb": (0.2, 0.8),  # RT60 seconds
    "band_reject": (100.0, 6000.0),  # centre Hz
    "time_drop": (10.0, 50.0),  # milliseconds per segment
}
COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f^beta
LENGTH_CHANGING = ("speed", "tempo")


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def add_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal + noise scaled so that 10 log10(P_signal / P_noise) = snr_db (a silent signal or
    noise is returned unchanged)."""
    ps, pn = _rms(signal), _rms(noise)
    if ps == 0 or pn == 0:
        return signal
    scale = ps / (pn * 10 ** (snr_db / 20))
    return (signal + scale * noise[: signal.size]).astype(np.float32)


def coloured_noise(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of n samples with a power spectrum proportional to 1 / f^beta."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-beta / 2)
    out = np.fft.irfft(spec, n)
    return (out / (_rms(out) or 1.0)).astype(np.float32)


def _stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1]
    pad = np.pad(x, (n_fft // 2, n_fft // 2 + n_fft))
    frames = 1 + (pad.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    return np.fft.rfft(pad[idx] * win, axis=1)


def _istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
    win = np.hanning(n_fft + 1)[:-1]
    frames = np.fft.irfft(spec, n_fft, axis=1) * win
    n = hop * (len(frames) - 1) + n_fft
    idx = (np.arange(n_fft)[None, :] + hop * np.arange(len(frames))[:, None]).ravel()
    out = np.bincount(idx, weights=frames.ravel(), minlength=n)  # overlap-add
    norm = np.bincount(idx, weights=np.tile(win ** 2, len(frames)), minlength=n)
    out = out / np.maximum(norm, 1e-8)
    return out[n_fft // 2:n_fft // 2 + length]


def time_stretch(x: np.ndarray, rate: float, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Phase-vocoder time stretch: ``rate`` > 1 is faster (about ``len(x) / rate`` samples), the
    pitch is kept."""
    spec = _stft(x.astype(np.float64), n_fft, hop)
    steps = np.arange(0, spec.shape[0] - 1, rate)
    a = steps.astype(np.int64)
    frac = (steps - a)[:, None]
    mag = (1 - frac) * np.abs(spec[a]) + frac * np.abs(spec[a + 1])
    omega = 2 * np.pi * hop * np.arange(spec.shape[1]) / n_fft  # expected phase advance per hop
    delta = np.angle(spec[a + 1]) - np.angle(spec[a]) - omega
    delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
    advance = omega + delta  # phase advance from each output frame to the next
    phase = np.angle(spec[0]) + np.concatenate([np.zeros((1, spec.shape[1])), np.cumsum(advance[:-1], axis=0)])
    return _istft(mag * np.exp(1j * phase), n_fft, hop, int(round(x.size / rate))).astype(np.float32)


def resample_by(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch and tempo both scale by ``factor``)."""
    import soxr

    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ").astype(np.float32)


def pitch_shift(x: np.ndarray, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones``, keeping the length and tempo."""
    r = 2 ** (semitones / 12)
    y = resample_by(time_stretch(x, 1 / r), r)
    return _fit(y, x.size)


def room_impulse_response(rt60: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic RIR: a unit direct path, then exponentially decaying noise reaching -60 dB at
    ``rt60`` seconds, starting 2-10 ms after the direct path."""
    n = max(2, int(rt60 * sample_rate))
    delay = int(rng.uniform(0.002, 0.010) * sample_rate)
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-math.log(1000.0) * t / rt60)  # amplitude 1e-3 (-60 dB) at rt60
    tail[:delay] = 0
    rir = 0.3 * tail / (np.sqrt(np.sum(tail ** 2)) or 1.0)
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverberate(x: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x, room_impulse_response(rt60, rng))[: x.size]
    return (y * (_rms(x) / (_rms(y) or 1.0))).astype(np.float32)


def band_reject(x: np.ndarray, centre_hz: float, width_octaves: float = 0.5) -> np.ndarray:
    """4th-order Butterworth band-stop filter (zero phase) from centre / 2^(w/2) to centre * 2^(w/2)."""
    from scipy.signal import butter, sosfiltfilt

    nyq = SAMPLE_RATE / 2
    lo = centre_hz / 2 ** (width_octaves / 2)
    hi = min(centre_hz * 2 ** (width_octaves / 2), 0.99 * nyq)
    if lo >= hi:
        return x
    sos = butter(4, [lo / nyq, hi / nyq], btype="bandstop", output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def time_drop(x: np.ndarray, lengths_ms: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    y = x.copy()
    for ms in lengths_ms:
        n = min(x.size, int(round(ms * SAMPLE_RATE / 1000)))
        start = int(rng.integers(0, x.size - n + 1))
        y[start:start + n] = 0
    return y


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad to n samples."""
    if y.size >= n:
        return np.ascontiguousarray(y[:n])
    return np.pad(y, (0, n - y.size))


class Augmenter:
    """Applies ``transforms`` (:class:`cpc_speech.config.AugmentStep`) in order.

    ``__call__(wav, rng, other=None)``: ``wav`` is the window with ``margin`` extra samples at its
    end (see :meth:`read_length`), ``other`` a function that returns another utterance's audio of
    n samples (for ``mix``). Returns float32 of ``window`` samples."""

    def __init__(self, transforms: Sequence, window: int):
        self.transforms = list(transforms)
        self.window = window

    @property
    def enabled(self) -> bool:
        return bool(self.transforms)

    def read_length(self) -> int:
        """Samples to read for one window: more than the window when a transform speeds audio up."""
        factor = 1.0
        for t in self.transforms:
            if t.kind in LENGTH_CHANGING:
                factor *= max(1.0, _range(t)[1])
        return int(math.ceil(self.window * factor)) + (512 if factor > 1 else 0)

    def __call__(self, wav: np.ndarray, rng: np.random.Generator,
                 other: Optional[Callable[[int], Optional[np.ndarray]]] = None) -> np.ndarray:
        x = wav.astype(np.float32, copy=False)
        # speed and tempo first, on the window and its margin; the rest on exactly the window
        ordered = [t for t in self.transforms if t.kind in LENGTH_CHANGING]
        ordered += [None] + [t for t in self.transforms if t.kind not in LENGTH_CHANGING]
        for t in ordered:
            if t is None:
                x = _fit(x, self.window)
                continue
            if rng.random() >= t.p:
                continue
            lo, hi = _range(t)
            value = rng.uniform(lo, hi)
            if t.kind == "pitch":
                x = pitch_shift(x, value)
            elif t.kind == "speed":
                x = resample_by(x, value)
            elif t.kind == "tempo":
                x = time_stretch(x, value)
            elif t.kind == "noise":
                color = t.color if t.color != "random" else str(rng.choice(list(COLORS)))
                x = add_at_snr(x, coloured_noise(x.size, COLORS[color], rng), value)
            elif t.kind == "mix":
                extra = other(x.size) if other is not None else None
                if extra is not None:
                    x = add_at_snr(x, _fit(extra, x.size), value)
            elif t.kind == "reverb":
                x = reverberate(x, value, rng)
            elif t.kind == "band_reject":
                x = band_reject(x, math.exp(rng.uniform(math.log(lo), math.log(hi))), t.width)
            elif t.kind == "time_drop":
                x = time_drop(x, [value] + [rng.uniform(lo, hi) for _ in range(t.count - 1)], rng)
        return _fit(x, self.window).astype(np.float32, copy=False)


def _range(t) -> Tuple[float, float]:
    lo, hi = DEFAULT_RANGES[t.kind]
    return (lo if t.low is None else t.low, hi if t.high is None else t.high)
