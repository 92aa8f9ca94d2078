"""The plan of a generated corpus: speakers and what each utterance will be, drawn in the main
process from the seed, so that rendering (in worker processes) has no randomness left.

Every draw comes from its own generator, :func:`seeded_rng` ``(seed, *keys)``: the same seed gives
the same plan whatever the number of workers, and adding recording conditions keeps the sentences,
voices and timing of the clean corpus.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zlib
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np

from cpc_speech.synth.conditions import SynthConditions, speaker_warp, utterance_prosody
from cpc_speech.synth.espeak import ESPEAK_SAMPLE_RATE, FEMALE_VARIANTS, MALE_VARIANTS, Voice


@dataclass(frozen=True)
class Speaker:
    language: str
    index: int  # within its language
    id: str  # LibriSpeech integer id or Common Voice client_id
    sex: str  # "M" / "F"
    voice: Voice
    level_db: float  # speech RMS level (dBFS)
    noise_db: float  # noise floor RMS (dBFS)
    age: str = ""

    @property
    def name(self) -> str:
        return f"eSpeak {self.voice.describe()}"


@dataclass(frozen=True)
class UtterancePlan:
    """Everything a worker needs to render one utterance (picklable, no randomness left)."""

    uid: str
    language: str
    speaker: str
    rel_path: str  # audio path relative to OUT_DIR
    sentence: str  # text given to eSpeak (and to the Common Voice TSVs)
    voice: Voice
    espeak_seed: int
    noise_seed: int
    lead: int  # silence before / after the speech, samples at 22050 Hz
    trail: int
    level_db: float
    noise_db: float
    out_rate: int  # Hz of the audio file
    warp: float = 1.0  # vocal-tract scaling (cpc_speech.synth.conditions)
    conditions: SynthConditions = SynthConditions()
    channel_seed: int = 0


def seeded_rng(seed: int, *keys) -> np.random.Generator:
    """The generator of one kind of draw: ``keys`` are strings (by CRC-32) or integers."""
    words = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        words.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(words))


def unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> List[int]:
    """``n`` distinct integers drawn from ``low..high-1``, in draw order."""
    if n > (high - low) // 2:
        raise ValueError(f"cannot draw {n} distinct ids from {low}..{high - 1}")
    seen, out = set(), []
    while len(out) < n:
        v = int(rng.integers(low, high))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def plan_speakers(language: str, n: int, seed: int, layout: str) -> List[Speaker]:
    """``n`` distinguishable speakers: sexes balanced, each sex cycling through its natural eSpeak
    variants in a seeded order; a variant used again gets a pitch far from its earlier uses."""
    rng = seeded_rng(seed, "speakers", language)
    sexes = ["F" if i % 2 == 0 else "M" for i in range(n)]
    rng.shuffle(sexes)
    pools = {"M": list(MALE_VARIANTS), "F": list(FEMALE_VARIANTS)}
    for pool in pools.values():
        rng.shuffle(pool)
    used: Dict[str, List[int]] = {}
    counters = {"M": 0, "F": 0}
    if layout == "librispeech":
        ids = [str(v) for v in unique_ints(rng, n, 10, 9000)]
    else:
        ids = [hashlib.sha512(f"cpc_speech synth {seed} {language} {i}".encode()).hexdigest() for i in range(n)]
    ages = ("teens", "twenties", "thirties", "fourties", "fifties", "sixties")
    speakers = []
    for i, sex in enumerate(sexes):
        pool = pools[sex]
        variant = pool[counters[sex] % len(pool)]
        counters[sex] += 1
        earlier = used.setdefault(variant, [])
        if not earlier:
            pitch = int(rng.integers(35, 66))
        else:  # the grid value farthest from earlier uses (ties broken at random)
            grid = np.arange(10, 91, 5)
            dist = np.min(np.abs(grid[:, None] - np.array(earlier)[None, :]), axis=1) + rng.random(len(grid))
            pitch = int(grid[int(np.argmax(dist))])
        earlier.append(pitch)
        voice = Voice(
            language=language,
            variant=variant,
            rate=int(rng.integers(145, 196)),
            pitch=pitch,
            range=int(rng.integers(25, 86)),
        )
        speakers.append(
            Speaker(
                language=language,
                index=i,
                id=ids[i],
                sex=sex,
                voice=voice,
                level_db=float(np.round(rng.uniform(-26.0, -18.0), 2)),
                noise_db=float(np.round(rng.uniform(-72.0, -62.0), 2)),
                age=ages[int(rng.integers(len(ages)))],
            )
        )
    return speakers


def utterance_timing(rng: np.random.Generator) -> Tuple[int, int, float]:
    """(lead, trail) silence in samples at 22050 Hz, and the utterance's level change in dB."""
    lead = int(rng.integers(int(0.12 * ESPEAK_SAMPLE_RATE), int(0.35 * ESPEAK_SAMPLE_RATE)))
    trail = int(rng.integers(int(0.12 * ESPEAK_SAMPLE_RATE), int(0.35 * ESPEAK_SAMPLE_RATE)))
    return lead, trail, float(np.round(rng.uniform(-1.0, 1.0), 2))


def with_conditions(plans: Sequence[UtterancePlan], cond: SynthConditions, seed: int) -> List[UtterancePlan]:
    """The plans under recording conditions ``cond`` (the same plans when they are clean). Draws
    come from their own seeds, so the sentences, voices and timing of the clean corpus are kept."""
    if cond.is_clean:
        return list(plans)
    warps: Dict[str, float] = {}
    out = []
    for p in plans:
        if p.speaker not in warps:
            warps[p.speaker] = speaker_warp(cond, seeded_rng(seed, "warp", p.language, p.speaker))
        rng = seeded_rng(seed, "conditions", p.uid)
        voice = p.voice
        if cond.variability:
            rate, pitch, prange, gap = utterance_prosody(cond, voice.rate, voice.pitch, rng)
            voice = dataclasses.replace(voice, rate=rate, pitch=pitch, range=prange, word_gap=gap)
        out.append(dataclasses.replace(p, voice=voice, warp=warps[p.speaker], conditions=cond,
                                       channel_seed=int(rng.integers(0, 2**63 - 1))))
    return out
