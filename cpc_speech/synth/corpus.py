"""A whole generated corpus: ``synthesize_corpus`` behind ``cpc-speech synth``.

Speech comes from eSpeak NG (:mod:`cpc_speech.synth.espeak`), text from word lists turned into
varied sentences (:mod:`cpc_speech.synth.text`), labels from eSpeak's phoneme events
(:mod:`cpc_speech.synth.inventory`). The corpus is planned from the seed in this process
(:mod:`cpc_speech.synth.plan`), rendered utterance by utterance in worker processes
(:mod:`cpc_speech.synth.render`, :mod:`cpc_speech.synth.workers`) and written in the LibriSpeech or
Common Voice layout (:mod:`cpc_speech.synth.layouts`). Every choice derives from ``seed``: the same
seed gives byte-identical files whatever ``jobs`` is.

MP3 clips: encoders add a delay and padding. The length used is the decoded one, and the offset
between the decoded audio and the signal that was encoded is measured per clip (cross-correlation
at 16 kHz, +-150 ms); labels are shifted by it and frames outside the original signal are SIL. With
soundfile's libsndfile (LAME writes a gapless header, mpg123 honours it) the measured offset is 0 and
the decoded length equals the encoded one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from cpc_speech.atomic import atomic_write_text
from cpc_speech.audio import SAMPLE_RATE
from cpc_speech.corpora.manifest import Utterance, write_manifest
from cpc_speech.evaluation.items import items_from_alignments
from cpc_speech.runlock import is_lock_file, locks_output
from cpc_speech.synth.conditions import SynthConditions
from cpc_speech.synth.espeak import library_paths
from cpc_speech.synth.inventory import canonical_language, inventory_for
from cpc_speech.synth.layouts import (
    LAYOUTS,
    LOCALES,
    clip_numbers,
    plan_commonvoice,
    plan_librispeech,
    split_per_speaker,
    write_commonvoice_meta,
    write_labels,
    write_librispeech_meta,
)
from cpc_speech.synth.plan import UtterancePlan, seeded_rng, with_conditions
from cpc_speech.synth.render import Rendered, render_utterance
from cpc_speech.synth.workers import map_in_workers


@dataclass
class SynthSummary:
    out_dir: str
    layout: str
    languages: List[str]
    speakers: int
    utterances: int
    hours: float
    phone_classes: Dict[str, int]  # per language, incl. SIL
    phones_used: Dict[str, int]  # distinct non-silence phones that occur
    longer_than_window: int  # utterances longer than 20480 samples at 16 kHz
    seconds: float  # wall-clock generation time
    paths: Dict[str, str] = field(default_factory=dict)
    unknown_phonemes: int = 0

    def lines(self) -> List[str]:
        out = [
            f"{self.utterances} utterances, {self.speakers} speakers, {self.hours:.3f} h "
            f"({self.hours * 60:.1f} min) in {self.seconds:.1f} s [{self.layout}: {', '.join(self.languages)}]",
            f"{self.longer_than_window} of {self.utterances} utterances are longer than 1.28 s (20480 samples)",
        ]
        for lang in self.languages:
            out.append(
                f"{lang}: {self.phone_classes[lang]} phone classes incl. SIL, {self.phones_used[lang]} phones used"
            )
        if self.unknown_phonemes:
            out.append(f"{self.unknown_phonemes} unknown eSpeak phonemes were merged into the previous phone")
        for name, p in self.paths.items():
            out.append(f"{name}: {p}")
        return out


def _check_args(speakers, utterances, languages, layout, jobs, test_fraction, subset) -> List[str]:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose librispeech or commonvoice")
    if isinstance(languages, str):
        languages = [x for x in languages.split(",")]
    langs = []
    for lang in languages:
        if not lang.strip():
            continue
        c = canonical_language(lang)
        if c in langs:
            raise ValueError(f"language {lang!r} given twice")
        langs.append(c)
    if not langs:
        raise ValueError("no language given (e.g. --languages en-us)")
    if layout == "librispeech" and len(langs) != 1:
        raise ValueError(
            f"the librispeech layout holds one language, got {len(langs)} ({', '.join(langs)}); "
            "use --layout commonvoice for several"
        )
    if not 1 <= int(speakers) <= 4000:
        raise ValueError(f"--speakers must be between 1 and 4000, got {speakers}")
    if not 2 <= int(utterances) <= 10000:
        raise ValueError(
            f"--utterances must be between 2 (train and test splits) and 10000 per speaker, got {utterances}"
        )
    if int(jobs) < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if not subset or "/" in subset or subset.startswith("."):
        raise ValueError(f"invalid subset name {subset!r}")
    return langs


@locks_output("out_dir", "synth")
def synthesize_corpus(
    out_dir: Union[str, Path],
    speakers: int = 16,
    utterances: int = 20,
    languages: Union[str, Sequence[str]] = ("en-us",),
    seed: int = 0,
    layout: str = "librispeech",
    jobs: int = 2,
    test_fraction: float = 0.2,
    subset: str = "train-clean-100",
    overwrite: bool = False,
    progress: bool = True,
    conditions: Optional[SynthConditions] = None,
) -> SynthSummary:
    """Generate a speech corpus with eSpeak NG under ``out_dir`` (layouts:
    :mod:`cpc_speech.synth.layouts`). ``speakers`` and ``utterances`` (per speaker) apply to each language; ``conditions``:
    speaking variability and channel (:mod:`cpc_speech.synth.conditions`; default clean).
    Returns a summary.
    """
    cond = (conditions or SynthConditions()).validate()
    t0 = time.perf_counter()
    langs = _check_args(speakers, utterances, languages, layout, jobs, test_fraction, subset)
    speakers, utterances, seed = int(speakers), int(utterances), int(seed)
    library_paths()  # fail early, with a clear message, if eSpeak NG is not installed
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(not is_lock_file(p) for p in out.iterdir()) and not overwrite:
        raise ValueError(f"{out} is not empty; choose a new folder or pass --overwrite to write into it")
    out.mkdir(parents=True, exist_ok=True)

    all_plans: List[UtterancePlan] = []
    per_lang = {}
    if layout == "librispeech":
        lang = langs[0]
        spk_list, plans, chapter_of = plan_librispeech(lang, speakers, utterances, seed, subset)
        per_lang[lang] = (spk_list, plans)
        all_plans += plans
    else:
        numbers = clip_numbers(seed, speakers * utterances * len(langs))
        for lang in langs:
            spk_list, plans = plan_commonvoice(lang, speakers, utterances, seed, numbers)
            per_lang[lang] = (spk_list, plans)
            all_plans += plans

    if not cond.is_clean:
        all_plans = with_conditions(all_plans, cond, seed)
        changed = {p.uid: p for p in all_plans}
        per_lang = {lang: (spk, [changed[p.uid] for p in plans]) for lang, (spk, plans) in per_lang.items()}
    results = _render_all(all_plans, out, int(jobs), progress)
    if not cond.is_clean:
        warps = {p.speaker: p.warp for p in all_plans}
        atomic_write_text(out / "conditions.json", json.dumps(
            {"conditions": dict(cond.__dict__), "description": cond.describe(), "speaker_warps": warps}, indent=1))

    paths: Dict[str, str] = {}
    phones_used: Dict[str, int] = {}
    phone_classes: Dict[str, int] = {}
    total_16k = 0
    for lang, (spk_list, plans) in per_lang.items():
        inventory = inventory_for(lang)
        folder = out if layout == "librispeech" else out / LOCALES[lang]
        by_speaker: Dict[str, List[str]] = {}
        for p in plans:
            by_speaker.setdefault(p.speaker, []).append(p.uid)
        test = split_per_speaker(seeded_rng(seed, "split", lang), by_speaker, float(test_fraction))
        ids = sorted(p.uid for p in plans)
        prefix = "" if layout == "librispeech" else f"{LOCALES[lang]}/"
        for k, v in write_labels(folder, ids, results, test, inventory).items():
            paths[prefix + k] = v
        plan_of = {p.uid: p for p in plans}
        rows = [
            Utterance(u, os.path.relpath(out / plan_of[u].rel_path, folder), plan_of[u].speaker,
                      results[u].num_samples, results[u].sample_rate)
            for u in ids
        ]
        write_manifest(rows, folder / "manifest.tsv")
        atomic_write_text(folder / "abx.item", items_from_alignments(
            {u: results[u].labels for u in ids}, {r.id: r.speaker for r in rows}, dict(enumerate(inventory.phones)), ids))
        paths[prefix + "abx_item"] = str(folder / "abx.item")
        phones_used[lang] = len({ph for u in ids for ph in results[u].phones})
        phone_classes[lang] = len(inventory)
        total_16k += sum(results[u].num_samples_16k for u in ids)
        if layout == "librispeech":
            write_librispeech_meta(out, spk_list, plans, results, chapter_of, subset, seed)
            paths["speakers"] = str(out / "SPEAKERS.TXT")
            paths["audio"] = str(out / subset)
        else:
            write_commonvoice_meta(folder, lang, spk_list, plans, results, seed)
            paths[prefix + "clips"] = str(folder / "clips")
            paths[prefix + "validated"] = str(folder / "validated.tsv")

    return SynthSummary(
        out_dir=str(out),
        layout=layout,
        languages=[LOCALES[lang] if layout == "commonvoice" else lang for lang in langs],
        speakers=speakers * len(langs),
        utterances=len(all_plans),
        hours=total_16k / SAMPLE_RATE / 3600.0,
        phone_classes={(LOCALES[k] if layout == "commonvoice" else k): v for k, v in phone_classes.items()},
        phones_used={(LOCALES[k] if layout == "commonvoice" else k): v for k, v in phones_used.items()},
        longer_than_window=sum(1 for r in results.values() if r.num_samples_16k > 20480),
        seconds=time.perf_counter() - t0,
        paths=paths,
        unknown_phonemes=sum(r.unknown_phonemes for r in results.values()),
    )



def _render_all(plans: Sequence[UtterancePlan], out_dir: Path, jobs: int, progress: bool) -> Dict[str, Rendered]:
    """Every utterance rendered and written by ``jobs`` worker processes; results by utterance id."""
    rendered = map_in_workers(render_utterance, plans, jobs, extra_args=(str(out_dir),),
                              describe=lambda p: f"rendering {p.uid}", progress=progress, desc="synth", unit="utt")
    return {r.uid: r for r in rendered}
