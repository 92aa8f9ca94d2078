"""The two folder layouts of a generated corpus: utterance ids and paths, label files, splits and
the corpus's own metadata.

``librispeech`` (one language)::

    OUT_DIR/SPEAKERS.TXT
    OUT_DIR/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac   16 kHz, 16-bit mono
    OUT_DIR/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    OUT_DIR/phones.txt, converted_aligned_phones.txt, phone_transcripts.txt,
    OUT_DIR/train_split.txt, test_split.txt, manifest.tsv, abx.item (ABX items of every utterance)

``commonvoice`` (one folder per Common Voice locale)::

    OUT_DIR/<locale>/clips/common_voice_<locale>_<number>.mp3                48 kHz mono MP3
    OUT_DIR/<locale>/validated.tsv, train.tsv, dev.tsv, test.tsv, clip_durations.tsv
    OUT_DIR/<locale>/phones.txt, converted_aligned_phones.txt, phone_transcripts.txt,
    OUT_DIR/<locale>/train_split.txt, test_split.txt, manifest.tsv, abx.item

Alignments (``converted_aligned_phones.txt``, the CPC_audio format): one line per utterance, the id
then one label per 10 ms frame, exactly ``n // 160`` labels where ``n`` is the length of the audio
as decoded and resampled to 16 kHz (what :func:`cpc_speech.audio.read_audio` returns); label of frame
``i`` = the phone at sample ``160 i + 80``.

Splits: ``train_split.txt``/``test_split.txt`` hold utterances of the same speakers (the phone/speaker
probe protocol; ``test_fraction`` of each speaker's utterances, at least one). The Common Voice TSVs
``train``/``dev``/``test`` are speaker-disjoint like the real corpus (when there are >= 3 speakers).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from cpc_speech.atomic import atomic_write_text
from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.synth.plan import Speaker, UtterancePlan, plan_speakers, seeded_rng, unique_ints, utterance_timing
from cpc_speech.synth.render import Rendered
from cpc_speech.synth.text import transcript_text, utterance_text

LAYOUTS = ("librispeech", "commonvoice")
CV_HEADER = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
    "gender", "accents", "variant", "locale", "segment",
)
CV_RATE = 48000
LOCALES = {"en-us": "en", "fr": "fr", "es": "es", "de": "de", "it": "it"}


def plan_librispeech(lang, speakers, utterances, seed, subset) -> Tuple[List[Speaker], List[UtterancePlan], Dict]:
    """Speakers, utterance plans (FLAC at 16 kHz, chapters of up to 50 utterances) and the
    ``(speaker, chapter)`` of each utterance id."""
    spk_list = plan_speakers(lang, speakers, seed, "librispeech")
    n_chapters = max(1, math.ceil(utterances / 50))
    chapters = unique_ints(seeded_rng(seed, "chapters", lang), speakers * n_chapters, 1000, 300000)
    plans, chapter_of = [], {}
    for s in spk_list:
        rng = seeded_rng(seed, "utterances", lang, s.index)
        per = [utterances // n_chapters + (1 if c < utterances % n_chapters else 0) for c in range(n_chapters)]
        for c in range(n_chapters):
            chapter = chapters[s.index * n_chapters + c]
            for u in range(per[c]):
                uid = f"{s.id}-{chapter}-{u:04d}"
                sentence = utterance_text(rng, lang, s.voice.rate)
                lead, trail, dlevel = utterance_timing(rng)
                plans.append(
                    UtterancePlan(
                        uid=uid, language=lang, speaker=s.id,
                        rel_path=f"{subset}/{s.id}/{chapter}/{uid}.flac", sentence=sentence, voice=s.voice,
                        espeak_seed=int(rng.integers(1, 2**31 - 1)), noise_seed=int(rng.integers(0, 2**63 - 1)),
                        lead=lead, trail=trail, level_db=s.level_db + dlevel, noise_db=s.noise_db,
                        out_rate=SAMPLE_RATE,
                    )
                )
                chapter_of[uid] = (s.id, chapter)
    return spk_list, plans, chapter_of


def clip_numbers(seed: int, n: int) -> List[int]:
    """``n`` distinct Common Voice clip numbers, shared by all locales of a corpus."""
    return unique_ints(seeded_rng(seed, "clips"), n, 10_000_000, 40_000_000)


def plan_commonvoice(lang, speakers, utterances, seed, numbers: List[int]) -> Tuple[List[Speaker], List[UtterancePlan]]:
    """Speakers and utterance plans (MP3 at 48 kHz) of one locale; takes its clip numbers from the
    front of ``numbers``."""
    locale = LOCALES[lang]
    spk_list = plan_speakers(lang, speakers, seed, "commonvoice")
    plans = []
    for s in spk_list:
        rng = seeded_rng(seed, "utterances", lang, s.index)
        for _ in range(utterances):
            number = numbers.pop(0)
            uid = f"common_voice_{locale}_{number}"
            sentence = utterance_text(rng, lang, s.voice.rate)
            lead, trail, dlevel = utterance_timing(rng)
            plans.append(
                UtterancePlan(
                    uid=uid, language=lang, speaker=s.id, rel_path=f"{locale}/clips/{uid}.mp3", sentence=sentence,
                    voice=s.voice, espeak_seed=int(rng.integers(1, 2**31 - 1)),
                    noise_seed=int(rng.integers(0, 2**63 - 1)), lead=lead, trail=trail,
                    level_db=s.level_db + dlevel, noise_db=s.noise_db, out_rate=CV_RATE,
                )
            )
    return spk_list, plans


def split_per_speaker(rng: np.random.Generator, by_speaker: Dict[str, List[str]], fraction: float) -> set:
    """The test utterances: ``fraction`` of each speaker's, at least one and never all."""
    test = set()
    for spk in sorted(by_speaker):
        uids = sorted(by_speaker[spk])
        k = min(len(uids) - 1, max(1, int(round(fraction * len(uids)))))
        for j in sorted(rng.choice(len(uids), size=k, replace=False)):
            test.add(uids[int(j)])
    return test


def write_labels(folder: Path, ids: Sequence[str], results: Dict[str, Rendered], test: set, inventory) -> Dict[str, str]:
    """phones.txt, alignments, phone transcripts and the two split files; their paths by name."""
    inventory.write(folder / "phones.txt")
    atomic_write_text(
        folder / "converted_aligned_phones.txt",
        "".join(f"{u} " + " ".join(map(str, results[u].labels.tolist())) + "\n" for u in ids),
    )
    atomic_write_text(folder / "phone_transcripts.txt", "".join(f"{u} " + " ".join(results[u].phones) + "\n" for u in ids))
    atomic_write_text(folder / "train_split.txt", "".join(f"{u}\n" for u in ids if u not in test))
    atomic_write_text(folder / "test_split.txt", "".join(f"{u}\n" for u in ids if u in test))
    return {
        "phones": str(folder / "phones.txt"),
        "alignments": str(folder / "converted_aligned_phones.txt"),
        "phone_transcripts": str(folder / "phone_transcripts.txt"),
        "train_split": str(folder / "train_split.txt"),
        "test_split": str(folder / "test_split.txt"),
        "manifest": str(folder / "manifest.tsv"),
    }


def write_librispeech_meta(out: Path, spk_list, plans, results, chapter_of, subset: str, seed: int) -> None:
    """The chapters' ``.trans.txt`` files and ``SPEAKERS.TXT``."""
    chapters: Dict[Tuple[str, int], List[UtterancePlan]] = {}
    for p in plans:
        chapters.setdefault(chapter_of[p.uid], []).append(p)
    for (spk, chapter), items in chapters.items():
        items = sorted(items, key=lambda p: p.uid)
        atomic_write_text(
            out / subset / spk / str(chapter) / f"{spk}-{chapter}.trans.txt",
            "".join(f"{p.uid} {transcript_text(p.sentence)}\n" for p in items),
        )
    minutes: Dict[str, float] = {}
    for p in plans:
        r = results[p.uid]
        minutes[p.speaker] = minutes.get(p.speaker, 0.0) + r.num_samples / r.sample_rate / 60.0
    lines = [
        "; Speakers of a synthetic corpus generated by cpc_speech (cpc-speech synth) with eSpeak NG voices,",
        f"; seed {seed}. Same format as LibriSpeech's SPEAKERS.TXT; MINUTES is the speaker's total audio and",
        "; NAME the eSpeak voice: language+variant, pitch, pitch range and rate (words per minute).",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for s in sorted(spk_list, key=lambda s: int(s.id)):
        lines.append(f"{s.id:<5}| {s.sex} | {subset:<17}| {minutes.get(s.id, 0.0):5.2f} | {s.name}")
    atomic_write_text(out / "SPEAKERS.TXT", "\n".join(lines) + "\n")


def write_commonvoice_meta(folder: Path, lang: str, spk_list, plans, results, seed: int) -> None:
    """validated/train/dev/test TSVs (speaker-disjoint train/dev/test) and clip_durations.tsv."""
    locale = LOCALES[lang]
    speakers = {s.id: s for s in spk_list}
    order = [s.id for s in spk_list]
    seeded_rng(seed, "cv-split", lang).shuffle(order)
    n = len(order)
    n_held = max(1, int(round(0.1 * n))) if n >= 3 else 0
    dev, test = set(order[:n_held]), set(order[n_held:2 * n_held])
    gender = {"M": "male_masculine", "F": "female_feminine"}

    def row(p: UtterancePlan) -> str:
        s = speakers[p.speaker]
        fields = (
            s.id, Path(p.rel_path).name, hashlib.sha256(p.sentence.encode()).hexdigest(), p.sentence, "", "2", "0",
            s.age, gender[s.sex], "", "", locale, "",
        )
        return "\t".join(fields) + "\n"

    header = "\t".join(CV_HEADER) + "\n"
    atomic_write_text(folder / "validated.tsv", header + "".join(row(p) for p in plans))
    atomic_write_text(folder / "train.tsv", header + "".join(row(p) for p in plans if p.speaker not in dev | test))
    atomic_write_text(folder / "dev.tsv", header + "".join(row(p) for p in plans if p.speaker in dev))
    atomic_write_text(folder / "test.tsv", header + "".join(row(p) for p in plans if p.speaker in test))
    atomic_write_text(
        folder / "clip_durations.tsv",
        "clip\tduration[ms]\n"
        + "".join(
            f"{Path(p.rel_path).name}\t{int(round(1000 * results[p.uid].num_samples / results[p.uid].sample_rate))}\n"
            for p in plans
        ),
    )
