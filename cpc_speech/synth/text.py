"""Sentences for the generator: word lists (package data ``words/<language>.txt``, written for this
project) turned into varied sentences of a target length.

A word list file starts with the line ``# cpc_speech synth word list, format 1``, then holds one word
per line under ``[function]`` and ``[content]``; other lines starting with ``#`` are comments. The
order is part of the corpus: the seed picks words by position.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Tuple

import numpy as np

from cpc_speech.synth.inventory import canonical_language

WORD_LIST_FORMAT = 1
_HEADER = re.compile(r"# cpc_speech synth word list, format (\d+)\b")
_SECTIONS = ("function", "content")

# mean seconds per word at eSpeak rate 175 wpm, measured on generated sentences (incl. pauses)
SECONDS_PER_WORD = {"en-us": 0.32, "fr": 0.27, "es": 0.35, "de": 0.31, "it": 0.36}


def parse_word_list(text: str, source: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The text of a word list file -> (function words, content words); ``source`` names the file
    in errors (a wrong header, a word outside a section, a duplicate, an empty section)."""
    lines = text.splitlines()
    header = _HEADER.match(lines[0]) if lines else None
    if header is None:
        raise ValueError(f"{source}: not a word list (the first line must be '# cpc_speech synth word list, format 1')")
    if int(header.group(1)) != WORD_LIST_FORMAT:
        raise ValueError(f"{source}: word list format {header.group(1)}, this version reads format {WORD_LIST_FORMAT}")
    words: Dict[str, List[str]] = {}
    first_line: Dict[Tuple[str, str], int] = {}
    section = None
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            if line != f"[{section}]" or section not in _SECTIONS or section in words:
                raise ValueError(f"{source}: line {lineno}: expected [function] then [content], got {line!r}")
            words[section] = []
            continue
        if section is None or len(line.split()) != 1:
            raise ValueError(f"{source}: line {lineno}: expected one word per line under a section, got {line!r}")
        if (section, line) in first_line:
            raise ValueError(f"{source}: line {lineno}: {line!r} is already listed on line {first_line[section, line]}")
        first_line[section, line] = lineno
        words[section].append(line)
    for name in _SECTIONS:
        if not words.get(name):
            raise ValueError(f"{source}: no {name} words (a [{name}] section with at least one word)")
    return tuple(words["function"]), tuple(words["content"])


@lru_cache(maxsize=None)
def word_lists(language: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(function words, content words) of a supported language, from ``words/<language>.txt``."""
    lang = canonical_language(language)
    path = resources.files("cpc_speech.synth") / "words" / f"{lang}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"word list {path} is missing from the installed package") from None
    return parse_word_list(text, str(path))


def make_sentence(rng: np.random.Generator, language: str, n_words: int) -> str:
    """A sentence of about ``n_words`` words: phrases of an optional function word and one or two
    content words, sometimes separated by commas; capitalised, ending with a period."""
    function, content = word_lists(language)
    words: List[str] = []
    while len(words) < n_words:
        phrase = []
        if rng.random() < 0.65:
            phrase.append(function[rng.integers(len(function))])
        for _ in range(1 if rng.random() < 0.6 else 2):
            phrase.append(content[rng.integers(len(content))])
        if words and len(words) >= 4 and rng.random() < 0.2 and n_words - len(words) >= 3:
            words[-1] += ","
        words.extend(phrase)
    sentence = " ".join(words).rstrip(",")
    return sentence[0].upper() + sentence[1:] + "."


def utterance_text(rng: np.random.Generator, language: str, rate: int) -> str:
    """A sentence that takes 1.5-5.5 s to speak at ``rate`` words per minute (the utterance's lead
    and trail silence add about 0.5 s)."""
    target = rng.uniform(2.0, 6.0) - 0.5
    n_words = max(3, int(round(target / SECONDS_PER_WORD[language] * rate / 175.0)))
    return make_sentence(rng, language, n_words)


def transcript_text(sentence: str) -> str:
    """LibriSpeech style: upper case, no punctuation."""
    return " ".join(w.strip(",.;:!?") for w in sentence.split()).upper()
