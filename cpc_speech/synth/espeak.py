"""eSpeak NG through ctypes: text -> (int16 waveform at 22050 Hz, phoneme events with sample positions).

The shared library and its voice data come from the PyPI wheel ``espeakng-loader``. eSpeak NG is
GPL-3.0+: this module only *calls* it through ctypes at data-generation time (nothing is vendored or
linked); the audio it produces is not covered by that licence.

Two levels:

* :class:`ESpeakEngine` is a thin in-process binding (initialise, set voice and parameters, synthesise,
  text to phonemes). It is *not* reproducible across calls: the synthesiser keeps state between
  utterances and seeds its noise generator from the clock.
* :func:`synthesize` renders one utterance reproducibly: it forks a fresh process that has never
  synthesised (:func:`cpc_speech.synth.workers.run_in_fresh_process`), re-seeds the noise generator
  there, synthesises, and ships the result back through a pipe. The same (text, voice, seed) then gives byte-identical audio whatever was rendered before and
  in whatever process.

:func:`phone_segments` turns the raw events into contiguous labelled segments, fixing two eSpeak
quirks: silent stop closures precede the stop's event (so they would be labelled as the previous
phone) and some phones have zero length.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from cpc_speech.synth.workers import WorkerError, run_in_fresh_process

ESPEAK_SAMPLE_RATE = 22050  # what espeak_Initialize returns for every voice

# Natural-sounding voice variants of eSpeak NG 1.52 (the others are robots, whispers and the like).
MALE_VARIANTS: Tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "adam", "benjamin", "caleb", "david", "ed",
    "edward", "Hugo", "iven", "john", "Lee", "Marco", "max", "Michael", "norbert", "paul", "quincy",
    "rob", "robert", "sandro", "travis", "victor", "zac",
)
FEMALE_VARIANTS: Tuple[str, ...] = (
    "f1", "f2", "f3", "f4", "f5", "Annie", "Alicia", "Andrea", "anika", "aunty", "belinda", "linda",
    "shelby", "steph", "steph2", "steph3",
)

# espeak_AUDIO_OUTPUT / options / parameters / flags / event types (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE, _PARAM_WORDGAP = 1, 2, 3, 4, 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_END = 0
_EVENT_PHONEME = 7

STRESS_MARKS = "',"

_SYNTHESISED_HERE = False  # set once this process has synthesised in-process


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded, initialised or asked to synthesise."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Voice:
    """A speaker as eSpeak sees it: language (``en-us``, ``fr`` ...), optional variant (``m3``,
    ``f2``, ``Andy`` ...), rate in words per minute (80-450), pitch and pitch range (0-100)."""

    language: str
    variant: Optional[str] = None
    rate: int = 175
    pitch: int = 50
    range: int = 50
    word_gap: int = 0  # extra pause between words, in units of 10 ms at the default rate

    @property
    def name(self) -> str:
        return self.language + (f"+{self.variant}" if self.variant else "")

    def describe(self) -> str:
        return f"{self.name} pitch {self.pitch} range {self.range} rate {self.rate}"


@dataclass(frozen=True)
class PhonemeEvent:
    """One phoneme event: eSpeak mnemonic without stress marks, the stress mark it carried ('' if
    none), and the output sample (at 22050 Hz) where its audio starts."""

    phoneme: str
    sample: int
    stress: str = ""


@dataclass
class Synthesis:
    """Result of one utterance: int16 mono waveform at ``sample_rate`` and its phoneme events."""

    waveform: np.ndarray
    events: List[PhonemeEvent]
    sample_rate: int = ESPEAK_SAMPLE_RATE


@dataclass(frozen=True)
class Segment:
    """A labelled span ``[start, end)`` in samples of the waveform it came from."""

    phoneme: str
    start: int
    end: int


def strip_stress(mnemonic: str) -> Tuple[str, str]:
    """``"'aI"`` -> ``("aI", "'")``. eSpeak 1.52 prefixes the stressed phoneme's mnemonic."""
    stress = ""
    while mnemonic and mnemonic[0] in STRESS_MARKS:
        stress += mnemonic[0]
        mnemonic = mnemonic[1:]
    return mnemonic, stress


def is_pause(phoneme: str) -> bool:
    """eSpeak pause phonemes all start with ``_`` (``_``, ``_:``, ``_!``, ``_^_`` ...)."""
    return phoneme.startswith("_") or phoneme == ""


def library_paths() -> Tuple[str, str]:
    """(shared library, folder that *contains* ``espeak-ng-data``) from the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError:
        raise EspeakError(
            "the corpus generator needs eSpeak NG from the PyPI wheel 'espeakng-loader' (pip install espeakng-loader)"
        ) from None
    lib = espeakng_loader.get_library_path()
    data = espeakng_loader.get_data_path()
    return str(lib), os.path.dirname(str(data).rstrip("/"))


class ESpeakEngine:
    """In-process binding. One per process: eSpeak NG has global state.

    Not reproducible across utterances (see the module docstring); use :func:`synthesize` for
    corpus generation.
    """

    _instance: Optional["ESpeakEngine"] = None

    def __init__(self) -> None:
        lib_path, data_parent = library_paths()
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EspeakError(f"cannot load eSpeak NG library {lib_path}: {exc}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent.encode(), _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data under {data_parent}")
        self.sample_rate = int(rate)
        self._lib = lib
        self._data_parent = data_parent
        self._chunks: List[np.ndarray] = []
        self._events: List[PhonemeEvent] = []
        self._callback = _SYNTH_CALLBACK(self._on_audio)  # keep a reference: ctypes does not
        lib.espeak_SetSynthCallback(self._callback)
        self._voice: Optional[str] = None

    @classmethod
    def get(cls) -> "ESpeakEngine":
        """The process-wide engine (created on first use)."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _on_audio(self, wav, numsamples, events) -> int:
        if numsamples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        if events:
            i = 0
            while events[i].type != _EVENT_LIST_END:
                ev = events[i]
                if ev.type == _EVENT_PHONEME:
                    raw = bytes(ev.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                    name, stress = strip_stress(raw)
                    self._events.append(PhonemeEvent(name, int(ev.sample), stress))
                i += 1
        return 0

    def set_voice(self, voice: Voice) -> None:
        if self._voice != voice.name:
            variant_file = os.path.join(self._data_parent, "espeak-ng-data", "voices", "!v", voice.variant or "")
            if voice.variant and not os.path.isfile(variant_file):
                raise EspeakError(f"eSpeak NG has no voice variant {voice.variant!r}")
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise EspeakError(f"eSpeak NG has no voice {voice.name!r} (language or variant unknown)")
            self._voice = voice.name
        for param, value, lo, hi in (
            (_PARAM_RATE, voice.rate, 80, 450),
            (_PARAM_PITCH, voice.pitch, 0, 100),
            (_PARAM_RANGE, voice.range, 0, 100),
            (_PARAM_WORDGAP, voice.word_gap, 0, 100),
        ):
            if not lo <= int(value) <= hi:
                raise ValueError(f"voice {voice.describe()}: parameter {param} = {value} outside {lo}..{hi}")
            self._lib.espeak_SetParameter(param, int(value), 0)

    def seed(self, seed: int) -> None:
        """Re-seed eSpeak's noise generator (1.52 seeds it from the clock)."""
        self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)

    def synthesize(self, text: str, voice: Optional[Voice] = None, seed: Optional[int] = None) -> Synthesis:
        if voice is not None:
            self.set_voice(voice)
        if seed is not None:
            self.seed(seed)
        global _SYNTHESISED_HERE
        _SYNTHESISED_HERE = True
        data = text.encode("utf-8") + b"\0"
        buf = ctypes.create_string_buffer(data, len(data))
        self._chunks, self._events = [], []
        status = self._lib.espeak_Synth(buf, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise EspeakError(f"espeak_Synth failed with status {status} for text {text[:60]!r}")
        self._lib.espeak_Synchronize()
        wav = np.concatenate(self._chunks).astype(np.int16) if self._chunks else np.zeros(0, np.int16)
        events, self._chunks, self._events = self._events, [], []
        return Synthesis(wav, events, self.sample_rate)

    def text_to_phonemes(self, text: str, voice: Optional[Voice] = None) -> List[str]:
        """eSpeak's phoneme mnemonics for ``text`` (stress marks kept), one string per clause."""
        global _SYNTHESISED_HERE
        _SYNTHESISED_HERE = True  # the translator keeps state too
        if voice is not None:
            self.set_voice(voice)
        pointer = ctypes.c_char_p(text.encode("utf-8"))
        out = []
        while pointer.value:
            result = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, 0)
            if result is None:
                break
            out.append(result.decode("utf-8", "replace"))
        return out


# --------------------------------------------------------------------------------------------------
# reproducible rendering: a fresh forked process per call


def _in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a child forked from this process (:mod:`cpc_speech.synth.workers`), which
    must never have synthesised itself."""
    if _SYNTHESISED_HERE and hasattr(os, "fork"):
        raise EspeakError(
            "this process has already synthesised in-process; reproducible rendering forks from a process "
            "that never did (run the generator in a fresh process)"
        )
    try:
        return run_in_fresh_process(fn, *args)
    except WorkerError as exc:
        raise EspeakError(str(exc)) from None


def _synthesize_here(text: str, voice: Voice, seed: int) -> Synthesis:
    engine = ESpeakEngine()
    return engine.synthesize(text, voice, seed)


def synthesize(text: str, voice: Voice, seed: int) -> Synthesis:
    """Render ``text`` reproducibly: same (text, voice, seed) => byte-identical waveform and events."""
    return _in_fresh_process(_synthesize_here, text, voice, int(seed))


def _phonemize_here(texts: Sequence[str], voice: Voice) -> List[List[str]]:
    engine = ESpeakEngine()
    engine.set_voice(voice)
    return [engine.text_to_phonemes(t) for t in texts]


def text_to_phonemes(texts: Sequence[str], voice: Voice) -> List[List[str]]:
    """Phoneme strings (eSpeak mnemonics, clause by clause) of several texts, in a fresh process."""
    return _in_fresh_process(_phonemize_here, list(texts), voice)


# --------------------------------------------------------------------------------------------------
# events -> segments

ZERO_LENGTH_SHARE = 0.4  # a zero-length phone takes this share of the preceding segment
MIN_CLOSURE = 16  # samples (0.7 ms): shorter runs of exact zeros are zero crossings, not closures


def phone_segments(synth: Synthesis) -> List[Segment]:
    """Contiguous segments covering ``[0, len(waveform))``; pauses and the leading lead-in are
    labelled ``"_"``.

    Quirk fixes, in this order:

    1. A stop's silent closure is emitted before the stop's event, so it would be labelled as the
       previous phone: a run of exact digital silence (at least ``MIN_CLOSURE`` samples) that ends
       where a phone starts is given to that phone, unless either side is a pause. The previous
       phone may become empty (e.g. an /l/ whose only samples were the closure of the next /d/).
    2. Zero-length phones: a zero-length pause is dropped; any other zero-length phone (typically a
       post-vocalic /l/ rendered inside the vowel's transition) gets the last 40 % of the preceding
       segment (dropped if there is none, or it is a pause).
    """
    wav = synth.waveform
    n = int(wav.shape[0])
    # raw segments from event start positions (consecutive phoneme events tile the output)
    events = [e for e in synth.events]
    starts = [min(max(e.sample, 0), n) for e in events]
    items: List[List] = []  # [phoneme, start, end]
    if not events or starts[0] > 0:
        items.append(["_", 0, starts[0] if events else n])
    for i, ev in enumerate(events):
        end = starts[i + 1] if i + 1 < len(events) else n
        items.append([ev.phoneme or "_", starts[i], max(end, starts[i])])
    # quirk 1: silent closures belong to the following phone (the previous one may become empty)
    if n:
        silent = wav == 0
        for i in range(1, len(items)):
            prev, cur = items[i - 1], items[i]
            if is_pause(prev[0]) or is_pause(cur[0]):
                continue
            b = cur[1]
            if b <= prev[1] or not silent[b - 1]:
                continue
            j = b
            while j > prev[1] and silent[j - 1]:
                j -= 1
            if b - j >= MIN_CLOSURE:
                prev[2] = j
                cur[1] = j
    # quirk 2: zero-length phones
    fixed: List[List] = []
    for ph, s, e in items:
        if e > s:
            fixed.append([ph, s, e])
            continue
        if is_pause(ph):
            continue
        if fixed and not is_pause(fixed[-1][0]) and fixed[-1][2] - fixed[-1][1] >= 4:
            prev = fixed[-1]
            cut = prev[2] - int(round((prev[2] - prev[1]) * ZERO_LENGTH_SHARE))
            fixed.append([ph, cut, prev[2]])
            prev[2] = cut
        # else: nothing to take from (utterance start or after a pause): drop it
    # merge adjacent pauses
    out: List[Segment] = []
    for ph, s, e in fixed:
        if e <= s:
            continue
        if out and is_pause(ph) and is_pause(out[-1].phoneme):
            out[-1] = Segment("_", out[-1].start, e)
        else:
            out.append(Segment("_" if is_pause(ph) else ph, s, e))
    return out
