"""Audio input: read any file soundfile decodes, down-mix to mono, resample to 16 kHz, validate.

All functions return ``float32`` numpy arrays in [-1, 1], shape ``(samples,)`` at 16 kHz unless
stated. Errors are :class:`AudioError` and name the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000  # Hz, the rate every model in cpc_speech works at


class AudioError(ValueError):
    """A problem with one audio input; the message names the file (or input) and the problem."""


class SegmentPastEndError(AudioError):
    """A requested segment lies after the end of the file (its length was overstated)."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one file: ``frames`` in samples at ``sample_rate`` Hz."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def num_samples_16k(self) -> int:
        return resampled_length(self.frames, self.sample_rate, SAMPLE_RATE)


def resampled_length(num_samples: int, rate_in: int, rate_out: int = SAMPLE_RATE) -> int:
    """Exact output length of :func:`resample` (what soxr yields for a whole buffer)."""
    if rate_in == rate_out:
        return int(num_samples)
    # soxr rounds half up; Python's round() rounds half to even (wrong for e.g. 32 kHz, odd lengths)
    return (2 * int(num_samples) * int(rate_out) + int(rate_in)) // (2 * int(rate_in))


def missing_file(what: str, path: Union[str, Path]) -> str:
    """``"<what> not found: PATH"``, or ``"<what> is a folder, not a file: PATH"`` when it is one."""
    return f"{what} {'is a folder, not a file' if Path(path).is_dir() else 'not found'}: {path}"


def _existing_file(path: Union[str, Path]) -> Path:
    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    return path


def audio_info(path: Union[str, Path]) -> AudioInfo:
    """Read the header only (fast)."""
    path = _existing_file(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"{path}: cannot read audio header ({_short(exc)})") from None
    return AudioInfo(frames=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels))


def to_mono(wav: np.ndarray, name: str = "input") -> np.ndarray:
    """Down-mix to mono. 2-D input may be (channels, samples) or (samples, channels): the shorter
    axis is taken as the channels."""
    wav = np.asarray(wav)
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise AudioError(f"{name}: expected 1-D or 2-D audio, got shape {tuple(wav.shape)}")
    channel_axis = 0 if wav.shape[0] <= wav.shape[1] else 1
    return wav.mean(axis=channel_axis)


def resample(wav: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling with soxr; a no-op when the rates are equal."""
    if rate_in <= 0:
        raise AudioError(f"invalid sample rate {rate_in}")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if rate_in == rate_out:
        return wav
    import soxr

    return soxr.resample(wav, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def validate(wav: np.ndarray, name: str = "input", min_samples: int = 1) -> np.ndarray:
    """Check a mono 16 kHz waveform: non-empty, finite, at least ``min_samples`` long."""
    if wav.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    if wav.shape[-1] < min_samples:
        raise AudioError(
            f"{name}: audio is too short: {wav.shape[-1]} samples at {SAMPLE_RATE} Hz "
            f"({wav.shape[-1] / SAMPLE_RATE * 1000:.1f} ms), the encoder needs at least {min_samples}"
        )
    return wav


def read_audio(path: Union[str, Path], min_samples: int = 1, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Read a file as mono float32 at 16 kHz.

    ``start``/``stop`` select a segment in 16 kHz samples (read directly from disk for 16 kHz files,
    cut after resampling otherwise).
    """
    path = _existing_file(path)
    segment = (start, stop) if (start or stop is not None) else None
    try:
        with sf.SoundFile(str(path)) as f:
            rate = f.samplerate
            if rate == SAMPLE_RATE and (start or stop is not None):
                f.seek(min(start, f.frames))
                wav = f.read(frames=-1 if stop is None else max(0, stop - start), dtype="float32", always_2d=True)
                start, stop = 0, None
            else:
                wav = f.read(dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({_short(exc)})") from None
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    wav = resample(wav, rate)
    if start or stop is not None:
        wav = wav[start:stop]
    if wav.size == 0 and segment:
        raise SegmentPastEndError(f"{path}: the segment from sample {segment[0]} (16 kHz) starts after the end of the audio")
    return validate(np.ascontiguousarray(wav), str(path), min_samples)


def load_waveform(wav, sample_rate: Optional[int] = None, min_samples: int = 1, name: str = "input") -> np.ndarray:
    """Normalise any waveform input (path, numpy array, torch tensor) to mono float32 at 16 kHz."""
    if isinstance(wav, (str, Path)):
        if sample_rate is not None:
            raise AudioError(f"{wav}: sample_rate is read from the file; do not pass it with a path")
        return read_audio(wav, min_samples=min_samples)
    if hasattr(wav, "detach"):  # torch tensor (keep integer dtypes so they are scaled below)
        wav = wav.detach().cpu()
        wav = (wav.float() if wav.is_floating_point() else wav).numpy()
    wav = np.asarray(wav)
    if sample_rate is None:
        raise AudioError(f"{name}: an array needs sample_rate= (in Hz)")
    if not np.issubdtype(wav.dtype, np.floating):
        if np.issubdtype(wav.dtype, np.signedinteger):  # PCM full scale is 2**(bits-1), as soundfile reads it
            wav = wav.astype(np.float32) / float(-np.iinfo(wav.dtype).min)
        elif np.issubdtype(wav.dtype, np.unsignedinteger):  # offset binary (8-bit PCM): midpoint is silence
            half = float(np.iinfo(wav.dtype).max // 2 + 1)
            wav = (wav.astype(np.float64) - half).astype(np.float32) / half
        else:
            raise AudioError(f"{name}: unsupported dtype {wav.dtype}")
    wav = to_mono(wav.astype(np.float32, copy=False), name)
    if wav.size and not np.all(np.isfinite(wav)):
        raise AudioError(f"{name}: audio contains NaN or infinite samples")
    return validate(resample(wav, int(sample_rate)), name, min_samples)


def write_audio(path: Union[str, Path], wav: np.ndarray, sample_rate: int = SAMPLE_RATE, **kwargs) -> None:
    """Write audio atomically (temporary file, then rename); format from the extension."""
    from cpc_speech.atomic import atomic_open

    path = Path(path)
    with atomic_open(path, "wb") as f:
        sf.write(f, wav, sample_rate, format=kwargs.pop("format", None) or _format_for(path), **kwargs)


def _format_for(path: Path) -> str:
    return {".flac": "FLAC", ".wav": "WAV", ".ogg": "OGG", ".mp3": "MP3", ".opus": "OGG"}.get(path.suffix.lower(), "WAV")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
