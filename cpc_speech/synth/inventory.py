"""Phone inventories for the eSpeak NG corpus generator, and the mapping from eSpeak's phoneme
segments to inventory labels.

* ``en-us`` (alias ``en``): eSpeak's English phonemes are mapped to the 39 CMU/ARPAbet phones plus
  silence, a LibriSpeech-like 40-class set (id 0 = ``SIL``, then the phones in alphabetical order).
  Some eSpeak phonemes are two ARPAbet phones (``e@`` -> EH R, ``@L`` -> AH L, ``aI3`` -> AY ER ...):
  their segment is split in equal parts.
* other languages: the language's own eSpeak phonemes (stress marks stripped), id 0 = ``SIL``, then
  the phonemes in a fixed order. The lists below were measured by synthesising every word of the
  generator's word list and a few thousand generated sentences with eSpeak NG 1.52.

Inventory files are ``phones.txt`` with one ``<id> <name>`` line per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from cpc_speech.atomic import atomic_write_text

SILENCE = "SIL"

ARPABET: Tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
    "W", "Y", "Z", "ZH",
)

# eSpeak NG (en, en-us) phoneme mnemonic -> ARPAbet phone(s)
ESPEAK_EN_TO_ARPABET: Dict[str, Tuple[str, ...]] = {
    # vowels
    "a": ("AE",), "aa": ("AE",), "a#": ("AH",), "A:": ("AA",), "A@": ("AA", "R"), "A": ("AA",),
    "0": ("AA",), "O2": ("AO",), "O:": ("AO",), "O": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"),
    "oU": ("OW",), "o": ("OW",), "OI": ("OY",), "aU": ("AW",), "aU@": ("AW", "ER"),
    "aI": ("AY",), "aI@": ("AY", "AH"), "aI3": ("AY", "ER"), "eI": ("EY",), "e": ("EH",),
    "E": ("EH",), "E2": ("EH",), "E@": ("EH", "R"), "e@": ("EH", "R"), "i": ("IY",), "i:": ("IY",),
    "i@": ("IY", "AH"), "i@3": ("IH", "R"), "I": ("IH",), "I2": ("IH",), "I#": ("IH",),
    "u:": ("UW",), "u": ("UW",), "U": ("UH",), "U@": ("UH", "R"), "V": ("AH",), "@": ("AH",),
    "@2": ("AH",), "@5": ("AH",), "@L": ("AH", "L"), "3": ("ER",), "3:": ("ER",), "3:r": ("ER",),
    "VR": ("AH", "R"), "IR": ("IH", "R"),
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "t#": ("T",), "t2": ("T",), "?": ("T",), "d": ("D",),
    "d#": ("D",), "k": ("K",), "g": ("G",), "x": ("K",), "f": ("F",), "v": ("V",), "T": ("TH",),
    "D": ("DH",), "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",), "tS": ("CH",),
    "dZ": ("JH",), "m": ("M",), "n": ("N",), "n-": ("AH", "N"), "m-": ("AH", "M"), "N": ("NG",),
    "l": ("L",), "l/": ("L",), "l-": ("AH", "L"), "r": ("R",), "r-": ("R",), "w": ("W",),
    "W": ("W",), "j": ("Y",),
}

# transitional phonemes with no label of their own: their span joins the previous segment
# (";" is a short linking glide eSpeak inserts between vowels, e.g. "the evening", "días")
TRANSITIONS = frozenset({";"})

# measured eSpeak NG 1.52 phoneme sets (stress marks stripped, pauses excluded)
ESPEAK_INVENTORIES: Dict[str, Tuple[str, ...]] = {
    "fr": (  # 40 phonemes
        "@", "@-", "A~", "E", "E~", "O", "O~", "S", "W", "W~", "Y", "Z", "a", "a-", "b", "d", "e",
        "e-", "f", "g", "i", "j", "k", "l", "m", "n", "n^", "o", "p", "r", "s", "t", "t2", "u", "v",
        "w", "y", "y-", "z", "z2",
    ),
    "es": (  # 33 phonemes
        "**", "B", "D", "E", "J^", "N", "Q", "R2", "T", "a", "b", "d", "e", "eI", "f", "g", "i",
        "j", "k", "l", "l^", "m", "n", "n^", "o", "p", "r", "s", "t", "tS", "u", "w", "x",
    ),
    "de": (  # 45 phonemes
        "3", "@", "A", "A:", "C", "E", "E:", "I", "N", "O", "OY", "R", "S", "U", "UR", "W", "Y:",
        "a", "aI", "aU", "b", "d", "e:", "f", "g", "h", "i:", "j", "k", "l", "m", "n", "o:", "p",
        "pF", "r", "s", "t", "ts", "u:", "v", "x", "y", "y:", "z",
    ),
    "it": (  # 38 phonemes
        "*", "@-", "E", "I", "N", "O", "R", "S", "U", "a", "b", "d", "dZ", "dz", "e", "f", "g", "i",
        "j", "k", "l", "l^", "m", "n", "n^", "o", "p", "s", "ss", "t", "tS", "ts", "ts2", "u", "v",
        "w", "w2", "z",
    ),
}

# language name accepted by the generator -> canonical eSpeak language
LANGUAGE_ALIASES = {"en": "en-us", "en-us": "en-us", "fr": "fr", "es": "es", "de": "de", "it": "it"}


def canonical_language(language: str) -> str:
    key = language.strip().lower()
    if key not in LANGUAGE_ALIASES:
        raise ValueError(
            f"unsupported language {language!r}: the generator has word lists and phone inventories for "
            f"{', '.join(sorted(set(LANGUAGE_ALIASES.values())))}"
        )
    return LANGUAGE_ALIASES[key]


def _is_pause(phoneme: str) -> bool:
    return phoneme == "" or phoneme.startswith("_")


@dataclass
class PhoneInventory:
    """Label classes of one language: ``phones[i]`` is the name of id ``i``; ``phones[0]`` is SIL.

    ``mapping`` sends an eSpeak phoneme (stress stripped) to one or more inventory phone names.
    """

    language: str
    phones: Tuple[str, ...]
    mapping: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.phones or self.phones[0] != SILENCE:
            raise ValueError("a phone inventory starts with SIL (id 0)")
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("duplicate phone names in the inventory")
        self._ids = {p: i for i, p in enumerate(self.phones)}
        self._keys = sorted(self.mapping, key=len, reverse=True)

    def __len__(self) -> int:
        return len(self.phones)

    def id(self, name: str) -> int:
        try:
            return self._ids[name]
        except KeyError:
            raise ValueError(f"phone {name!r} is not in the {self.language} inventory") from None

    def map_phoneme(self, phoneme: str) -> Optional[Tuple[str, ...]]:
        """Inventory phones for one eSpeak phoneme; ``()`` for silence, ``None`` when unknown.

        An unknown mnemonic is read as a sequence of known ones, longest first (``e@r`` -> ``e@`` +
        ``r``), skipping modifier characters; ``None`` if nothing in it is known.
        """
        if _is_pause(phoneme):
            return ()
        if phoneme in self.mapping:
            return self.mapping[phoneme]
        out: List[str] = []
        rest = phoneme
        while rest:
            for key in self._keys:
                if rest.startswith(key):
                    out.extend(self.mapping[key])
                    rest = rest[len(key):]
                    break
            else:
                rest = rest[1:]
        return tuple(out) if out else None

    def label_segments(self, segments: Sequence) -> Tuple[List[Tuple[int, int, int]], int]:
        """eSpeak segments (objects with ``phoneme``, ``start``, ``end``) -> contiguous
        ``(phone_id, start, end)`` spans, and the number of unknown phonemes met.

        Pauses become SIL; transitions and unknown phonemes join the previous span; a multi-phone
        mapping splits its span in equal parts; a trailing part equal to the next phoneme's first
        part is dropped (``e@`` + ``r`` -> EH R, not EH R R); adjacent SIL spans merge.
        """
        mapped = []
        unknown = 0
        for seg in segments:
            if seg.end <= seg.start:
                continue
            if seg.phoneme in TRANSITIONS:
                parts: Optional[Tuple[str, ...]] = None
            else:
                parts = self.map_phoneme(seg.phoneme)
                if parts is None:
                    unknown += 1
            mapped.append([parts, seg.start, seg.end])
        for i in range(len(mapped) - 1):
            parts, nxt = mapped[i][0], mapped[i + 1][0]
            if parts and len(parts) > 1 and nxt and parts[-1] == nxt[0]:
                mapped[i][0] = parts[:-1]
        spans: List[List[int]] = []
        for parts, start, end in mapped:
            if parts is None:  # join the previous span (or become silence at the very start)
                if spans:
                    spans[-1][2] = end
                else:
                    spans.append([0, start, end])
                continue
            if not parts:
                parts = (SILENCE,)
            k = len(parts)
            bounds = [start + (end - start) * j // k for j in range(k + 1)]
            for j, name in enumerate(parts):
                if bounds[j + 1] > bounds[j]:
                    spans.append([self.id(name), bounds[j], bounds[j + 1]])
        out: List[Tuple[int, int, int]] = []
        for pid, s, e in spans:
            if out and pid == 0 and out[-1][0] == 0:
                out[-1] = (0, out[-1][1], e)
            else:
                out.append((pid, s, e))
        return out, unknown

    def write(self, path: Union[str, Path]) -> Path:
        """``phones.txt``: one ``<id> <name>`` line per class, written atomically."""
        return atomic_write_text(path, "".join(f"{i} {p}\n" for i, p in enumerate(self.phones)))


def inventory_for(language: str) -> PhoneInventory:
    """The label set of a supported language (``en``/``en-us`` -> ARPAbet + SIL)."""
    lang = canonical_language(language)
    if lang == "en-us":
        return PhoneInventory(lang, (SILENCE,) + ARPABET, dict(ESPEAK_EN_TO_ARPABET))
    phones = ESPEAK_INVENTORIES[lang]
    return PhoneInventory(lang, (SILENCE,) + tuple(phones), {p: (p,) for p in phones})


def all_languages() -> Iterable[str]:
    return sorted(set(LANGUAGE_ALIASES.values()))
