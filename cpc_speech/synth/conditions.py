"""Recording conditions of a generated corpus: speaking variability and the channel.

eSpeak NG renders a phone almost the same way every time, in a flat prosody, with few voices;
real recordings vary and pass through microphones, rooms and codecs. :class:`SynthConditions`
adds, on top of the per-speaker voices of :mod:`cpc_speech.synth.plan`:

* ``variability`` (0 = off, 1 = full strength): per utterance, the speaking rate is scaled by up
  to +-25 %, pitch moved by up to +-12 and pitch range redrawn, pauses between words added (0-4
  units); per speaker, the vocal tract is scaled (all frequencies and durations by a factor of
  0.88-1.12, i.e. a resampling of the rendered waveform, with the phone boundaries moved exactly);
* ``channel``: ``clean``; ``telephone`` (resampled to 8 kHz, band-passed to 300-3400 Hz with a
  zero-phase filter, back to the file rate); ``gsm`` (the telephone band through the GSM 06.10
  codec of libsndfile, decoded; its delay is measured and the labels shifted);
* ``snr_db``: additive coloured noise (spectral slope drawn in 0-2, white to brown) at an SNR drawn
  uniformly from the range, relative to the speech RMS;
* ``reverb``: the share of utterances convolved with a generated room impulse response
  (RT60 0.2-0.8 s, direct path first, so the alignment is kept).

Every draw comes from the utterance's seeds, so a corpus is reproducible from its seed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

CHANNELS = ("clean", "telephone", "gsm")


@dataclass(frozen=True)
class SynthConditions:
    variability: float = 0.0
    channel: str = "clean"
    snr_db: Optional[Tuple[float, float]] = None
    reverb: float = 0.0

    def validate(self) -> "SynthConditions":
        if not 0.0 <= self.variability <= 1.0:
            raise ValueError(f"--variability must be in [0, 1], got {self.variability}")
        if self.channel not in CHANNELS:
            raise ValueError(f"--channel must be one of {', '.join(CHANNELS)}, got {self.channel!r}")
        if self.snr_db is not None:
            lo, hi = self.snr_db
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"--snr must be LOW:HIGH in dB with LOW <= HIGH, got {lo}:{hi}")
        if not 0.0 <= self.reverb <= 1.0:
            raise ValueError(f"--reverb must be a share of utterances in [0, 1], got {self.reverb}")
        return self

    @property
    def is_clean(self) -> bool:
        return self.variability == 0 and self.channel == "clean" and self.snr_db is None and self.reverb == 0

    def describe(self) -> str:
        bits = [f"variability {self.variability:g}", f"channel {self.channel}"]
        if self.snr_db is not None:
            bits.append(f"noise at {self.snr_db[0]:g}-{self.snr_db[1]:g} dB SNR")
        if self.reverb:
            bits.append(f"reverberation on {100 * self.reverb:g} % of utterances")
        return ", ".join(bits)


def parse_snr(text: Optional[str]) -> Optional[Tuple[float, float]]:
    """``"10:25"`` -> (10.0, 25.0); ``"15"`` -> (15.0, 15.0); None/"" -> None."""
    if not text:
        return None
    try:
        parts = [float(p) for p in str(text).split(":")]
    except ValueError:
        raise ValueError(f"--snr must be DB or LOW:HIGH in dB, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise ValueError(f"--snr must be DB or LOW:HIGH in dB, got {text!r}")
    return parts[0], parts[1]


def speaker_warp(cond: SynthConditions, rng: np.random.Generator) -> float:
    """Vocal-tract scaling factor of one speaker (1.0 without variability)."""
    return float(np.round(1.0 + cond.variability * rng.uniform(-0.12, 0.12), 4)) if cond.variability else 1.0


def utterance_prosody(cond: SynthConditions, rate: int, pitch: int, rng: np.random.Generator) -> Tuple[int, int, int, int]:
    """(rate, pitch, pitch range, word gap) of one utterance around its speaker's rate and pitch."""
    v = cond.variability
    new_rate = int(np.clip(round(rate * (1.0 + v * rng.uniform(-0.25, 0.25))), 80, 450))
    new_pitch = int(np.clip(round(pitch + v * rng.uniform(-12, 12)), 0, 100))
    new_range = int(rng.integers(20, 91))
    gap = int(rng.integers(0, int(round(4 * v)) + 1))
    return new_rate, new_pitch, new_range, gap


def _band(x: np.ndarray, rate: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    from cpc_speech.audio import resample

    y = resample(x.astype(np.float32), rate, 8000).astype(np.float64)
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=8000, output="sos")
    return sosfiltfilt(sos, y)


def telephone(x: np.ndarray, rate: int) -> np.ndarray:
    """The 300-3400 Hz band of ``x`` (at ``rate`` Hz), at the same rate and length."""
    from cpc_speech.audio import resample

    y = resample(_band(x, rate).astype(np.float32), 8000, rate)
    return _fit(y, x.shape[0])


def gsm(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` through the telephone band and the GSM 06.10 codec (libsndfile), back at ``rate``."""
    import soundfile as sf

    from cpc_speech.audio import resample

    band = np.clip(_band(x, rate), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, band, 8000, format="WAV", subtype="GSM610")
    buf.seek(0)
    decoded, _ = sf.read(buf, dtype="float32")
    decoded = _fit(decoded, band.shape[0])
    # undo the codec's delay (if any), so the phone boundaries stay where they were
    lag = _delay(band, decoded, 320)
    if lag > 0:
        decoded = np.concatenate([decoded[lag:], np.zeros(lag, decoded.dtype)])
    elif lag < 0:
        decoded = np.concatenate([np.zeros(-lag, decoded.dtype), decoded[:lag]])
    y = resample(decoded.astype(np.float32), 8000, rate)
    return _fit(y, x.shape[0])


def _delay(reference: np.ndarray, delayed: np.ndarray, max_lag: int) -> int:
    """Samples by which ``delayed`` lags ``reference`` (|lag| <= max_lag), by cross-correlation."""
    n = reference.shape[0] + delayed.shape[0]
    size = 1 << int(np.ceil(np.log2(n + 1)))
    cc = np.fft.irfft(np.fft.rfft(delayed, size) * np.conj(np.fft.rfft(reference, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([cc[: max_lag + 1], cc[size - max_lag:]])
    return int(lags[int(np.argmax(values))])


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if y.shape[0] >= n else np.concatenate([y, np.zeros(n - y.shape[0], dtype=y.dtype)])


def apply_channel(x: np.ndarray, rate: int, cond: SynthConditions, speech: np.ndarray,
                  rng: np.random.Generator) -> Tuple[np.ndarray, dict]:
    """``x`` (float, at ``rate`` Hz) through reverberation, the channel and noise; ``speech``
    marks its speech samples (for the SNR). Returns the signal and what was applied."""
    from cpc_speech.audio import SAMPLE_RATE
    from cpc_speech.augment import coloured_noise, reverberate

    info: dict = {}
    y = x.astype(np.float32)
    if cond.reverb and rng.random() < cond.reverb:
        rt60 = float(rng.uniform(0.2, 0.8))
        if rate == SAMPLE_RATE:
            y = reverberate(y, rt60, rng)
        else:  # the RIR generator works at 16 kHz
            from cpc_speech.audio import resample

            low = resample(y, rate, SAMPLE_RATE)
            y = _fit(resample(reverberate(low, rt60, rng), SAMPLE_RATE, rate), y.shape[0]).astype(np.float32)
        info["rt60"] = round(rt60, 3)
    if cond.channel == "telephone":
        y = telephone(y, rate).astype(np.float32)
    elif cond.channel == "gsm":
        y = gsm(y, rate).astype(np.float32)
    if cond.snr_db is not None:
        snr = float(rng.uniform(*cond.snr_db))
        beta = float(rng.uniform(0.0, 2.0))
        noise = coloured_noise(y.shape[0], beta, rng)
        active = speech[: y.shape[0]] if speech.any() else np.ones(y.shape[0], bool)
        ps = float(np.sqrt(np.mean(np.square(y[active], dtype=np.float64))))
        pn = float(np.sqrt(np.mean(np.square(noise, dtype=np.float64))))
        if ps > 0 and pn > 0:
            y = (y + noise * (ps / (pn * 10 ** (snr / 20)))).astype(np.float32)
        info.update(snr_db=round(snr, 2), noise_slope=round(beta, 2))
    return y, info
