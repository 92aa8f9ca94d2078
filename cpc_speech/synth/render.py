"""One utterance, from its plan to its audio file and frame labels (runs in worker processes).

Synthesis (eSpeak NG, 22050 Hz), phone spans from eSpeak's phoneme events, level and lead/trail
silence, optional vocal-tract scaling and recording conditions, resampling to the file rate, a
faint noise floor, 16-bit audio. Labels: one per 10 ms frame of the audio as decoded at 16 kHz; for
MP3 the offset between the decoded and the encoded signal is measured and the labels shifted by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from cpc_speech.audio import SAMPLE_RATE, read_audio, resample, write_audio
from cpc_speech.synth.conditions import apply_channel
from cpc_speech.synth.espeak import ESPEAK_SAMPLE_RATE, phone_segments, synthesize
from cpc_speech.synth.inventory import inventory_for
from cpc_speech.synth.plan import UtterancePlan

FRAME = 160  # samples at 16 kHz per label (10 ms)


@dataclass
class Rendered:
    uid: str
    rel_path: str
    num_samples: int  # the file's own frames
    sample_rate: int
    num_samples_16k: int
    labels: np.ndarray  # int16, one per frame: num_samples_16k // 160
    phones: List[str]
    lag: int = 0  # MP3 offset at 16 kHz (decoded - encoded)
    unknown_phonemes: int = 0


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def frame_labels(spans: Sequence[Tuple[int, int, int]], n16: int, lag: int = 0) -> np.ndarray:
    """Label of each 10 ms frame of ``n16`` samples at 16 kHz: the span ``(phone_id, start, end)``
    (22050 Hz sample positions) under the frame centre, shifted by ``lag`` samples at 16 kHz."""
    n_frames = n16 // FRAME
    centres = (np.arange(n_frames, dtype=np.int64) * FRAME + FRAME // 2 - lag).astype(np.float64)
    pos = centres * (ESPEAK_SAMPLE_RATE / SAMPLE_RATE)
    starts = np.array([s for _, s, _ in spans], dtype=np.float64)
    ids = np.array([p for p, _, _ in spans], dtype=np.int64)
    end = float(spans[-1][2]) if spans else 0.0
    idx = np.searchsorted(starts, pos, side="right") - 1
    labels = np.where((idx >= 0) & (pos < end), ids[np.clip(idx, 0, len(ids) - 1)], 0)
    return labels.astype(np.int16)


def estimate_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2400) -> int:
    """Offset ``k`` (samples) maximising sum(decoded[t + k] * reference[t]), |k| <= max_lag."""
    # circular correlation is exact for |k| <= max_lag when size >= max(len) + max_lag
    size = 1 << int(math.ceil(math.log2(max(len(reference), len(decoded)) + max_lag + 1)))
    spec = np.fft.rfft(decoded.astype(np.float64), size) * np.conj(np.fft.rfft(reference.astype(np.float64), size))
    cc = np.fft.irfft(spec, size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([cc[: max_lag + 1], cc[size - max_lag:]])
    best = int(lags[int(np.argmax(values))])
    # prefer exactly 0 unless another offset is clearly better
    return best if values[int(np.argmax(values))] > 1.001 * cc[0] else 0


def render_utterance(plan: UtterancePlan, out_dir: str) -> Rendered:
    """Synthesise, label, post-process and write one utterance; returns its metadata."""
    synth = synthesize(plan.sentence, plan.voice, plan.espeak_seed)
    if synth.waveform.size == 0:
        raise RuntimeError(f"{plan.uid}: eSpeak NG produced no audio for {plan.sentence!r}")
    inventory = inventory_for(plan.language)
    spans, unknown = inventory.label_segments(phone_segments(synth))
    # speech level from the non-silent spans, before padding
    x = synth.waveform.astype(np.float64) / 32768.0
    active = np.zeros(x.shape[0], dtype=bool)
    for pid, s, e in spans:
        if pid != 0:
            active[s:e] = True
    rms = float(np.sqrt(np.mean(x[active] ** 2))) if active.any() else float(np.sqrt(np.mean(x**2)))
    gain = 10 ** ((plan.level_db) / 20.0) / max(rms, 1e-6)
    peak = float(np.max(np.abs(x))) if x.size else 1.0
    gain = min(gain, 0.9 / max(peak, 1e-6))
    x = np.concatenate([np.zeros(plan.lead), x * gain, np.zeros(plan.trail)]).astype(np.float32)
    spans = [(0, 0, plan.lead)] + [(p, s + plan.lead, e + plan.lead) for p, s, e in spans]
    spans.append((0, spans[-1][2], x.shape[0]))
    spans = [sp for sp in spans if sp[2] > sp[1]]
    if plan.warp != 1.0:  # vocal-tract scaling: play the waveform at warp x its rate; boundaries move with it
        src = int(round(ESPEAK_SAMPLE_RATE * plan.warp))
        x = resample(x, src, ESPEAK_SAMPLE_RATE).astype(np.float32)
        ratio = ESPEAK_SAMPLE_RATE / src
        spans = [(p, int(round(a * ratio)), int(round(b * ratio))) for p, a, b in spans]
        spans[-1] = (spans[-1][0], spans[-1][1], x.shape[0])
        spans = [sp for sp in spans if sp[2] > sp[1]]
    # channel: resample to the file rate, the recording conditions, a faint noise floor, 16-bit
    y = resample(x, ESPEAK_SAMPLE_RATE, plan.out_rate).astype(np.float64)
    cond = plan.conditions
    if cond.channel != "clean" or cond.snr_db is not None or cond.reverb:
        speech = np.zeros(y.shape[0], dtype=bool)
        scale = plan.out_rate / ESPEAK_SAMPLE_RATE
        for pid, a, b in spans:
            if pid != 0:
                speech[int(a * scale):int(b * scale)] = True
        y = apply_channel(y, plan.out_rate, cond, speech, np.random.default_rng(plan.channel_seed))[0].astype(np.float64)
    noise = np.random.default_rng(plan.noise_seed).standard_normal(y.shape[0]) * 10 ** (plan.noise_db / 20.0)
    pcm = _to_pcm16(y + noise)
    path = Path(out_dir) / plan.rel_path
    lag = 0
    if plan.rel_path.endswith(".mp3"):
        write_audio(path, pcm.astype(np.float32) / 32768.0, plan.out_rate)
        decoded = read_audio(path)  # exactly what a consumer gets: decoded, resampled to 16 kHz
        import soundfile as sf

        num_samples = int(sf.info(str(path)).frames)
        n16 = int(decoded.shape[0])
        reference = resample(x, ESPEAK_SAMPLE_RATE, SAMPLE_RATE)
        lag = estimate_lag(reference, decoded)
    else:
        if plan.out_rate != SAMPLE_RATE:
            raise ValueError("FLAC output is written at 16 kHz")
        write_audio(path, pcm, plan.out_rate, subtype="PCM_16")
        num_samples = n16 = int(pcm.shape[0])
    labels = frame_labels(spans, n16, lag)
    phones = [inventory.phones[p] for p, _, _ in spans if p != 0]
    return Rendered(plan.uid, plan.rel_path, num_samples, plan.out_rate, n16, labels, phones, lag, unknown)
