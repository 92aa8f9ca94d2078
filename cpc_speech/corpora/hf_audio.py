"""Decoding one audio cell of a Hugging Face dataset (``{bytes, path}``, ``{array, sampling_rate}``,
raw bytes or a path) to a 16 kHz mono float32 waveform, with soundfile (no torchcodec)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from cpc_speech.audio import AudioError, read_audio, resample, to_mono, validate


def decode_audio_value(value, name: str = "input", base_dir: Optional[Path] = None) -> np.ndarray:
    """One audio cell (``{bytes, path}``, ``{array, sampling_rate}``, raw bytes or a path) as mono
    float32 at 16 kHz. Raises AudioError naming ``name``."""
    if value is None:
        raise AudioError(f"{name}: no audio (empty cell)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = {"bytes": bytes(value)}
    elif isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict):
        raise AudioError(f"{name}: unsupported audio cell of type {type(value).__name__}")
    if value.get("bytes") is not None:
        try:
            wav, rate = sf.read(io.BytesIO(value["bytes"]), dtype="float32", always_2d=True)
        except Exception as exc:
            raise AudioError(f"{name}: cannot decode audio bytes ({str(exc).strip() or type(exc).__name__})") from None
        wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
        if wav.size and not np.all(np.isfinite(wav)):
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        return validate(resample(wav, rate), name)
    if value.get("array") is not None:
        rate = value.get("sampling_rate")
        if not rate:
            raise AudioError(f"{name}: audio array without sampling_rate")
        wav = to_mono(np.asarray(value["array"], dtype=np.float32), name)
        if wav.size and not np.all(np.isfinite(wav)):
            raise AudioError(f"{name}: audio contains NaN or infinite samples")
        return validate(resample(wav, int(rate)), name)
    if value.get("path"):
        p = Path(value["path"]).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return read_audio(p)
    raise AudioError(f"{name}: audio cell has neither bytes, array nor path")
