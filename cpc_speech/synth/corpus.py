"""The offline speech corpus generator behind ``cpc-speech synth``.

Speech comes from eSpeak NG (see :mod:`cpc_speech.synth.espeak`), text from embedded word lists
(written for this project) turned into varied sentences, labels from eSpeak's phoneme events. Every
choice derives from ``seed``: the same seed gives byte-identical files whatever ``jobs`` is.

Layouts
-------
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

MP3 clips: encoders add a delay and padding. The length used is the decoded one, and the offset
between the decoded audio and the signal that was encoded is measured per clip (cross-correlation
at 16 kHz, +-150 ms); labels are shifted by it and frames outside the original signal are SIL. With
soundfile's libsndfile (LAME writes a gapless header, mpg123 honours it) the measured offset is 0 and
the decoded length equals the encoded one.

Splits: ``train_split.txt``/``test_split.txt`` hold utterances of the same speakers (the phone/speaker
probe protocol; ``test_fraction`` of each speaker's utterances, at least one). The Common Voice TSVs
``train``/``dev``/``test`` are speaker-disjoint like the real corpus (when there are >= 3 speakers).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.atomic import atomic_write_text
from cpc_speech.audio import SAMPLE_RATE, read_audio, resample, write_audio
from cpc_speech.synth.espeak import (
    ESPEAK_SAMPLE_RATE,
    FEMALE_VARIANTS,
    MALE_VARIANTS,
    Voice,
    library_paths,
    phone_segments,
    synthesize,
)
from cpc_speech.synth.conditions import SynthConditions, apply_channel, speaker_warp, utterance_prosody
from cpc_speech.corpora.manifest import Utterance, write_manifest
from cpc_speech.synth.inventory import canonical_language, inventory_for
from cpc_speech.evaluation.items import items_from_alignments
from cpc_speech.runlock import is_lock_file, locks_output

FRAME = 160  # samples at 16 kHz per label (10 ms)
LAYOUTS = ("librispeech", "commonvoice")
CV_HEADER = (
    "client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
    "gender", "accents", "variant", "locale", "segment",
)
CV_RATE = 48000
LOCALES = {"en-us": "en", "fr": "fr", "es": "es", "de": "de", "it": "it"}

# --------------------------------------------------------------------------------------------------
# text: function words and content words per language (written for this project)

_WORDS = {
    "en-us": (
        """the a an and but or of to in on at by for with from into over under after before about
        through between across behind near this that these those his her their our my your its some
        every each no all many few more most very quite so then when while because if not she he
        they we you it there here always never often again still just only also even""",
        """house garden window kitchen table chair paper letter story music river mountain valley
        village city country forest island ocean water fire stone metal silver gold winter summer
        autumn spring morning evening night shadow picture mirror doctor teacher farmer sailor child
        mother father brother sister friend neighbor captain soldier king queen horse dog cat bird
        fish rabbit apple bread butter cheese coffee sugar salt pepper orange lemon flower tree leaf
        grass road bridge tower castle church market station engine wheel boat ship train plane
        clock bell song voice word book question answer reason idea problem number minute hour week
        month year moment thing place world people family money business office school lesson
        journey weather storm thunder rain snow wind cloud sky star moon sun light color red blue
        green yellow black white brown purple quiet loud soft hard warm cold bright dark heavy light
        small large little big tall short young old new strange simple careful happy sad angry
        gentle clever honest famous busy empty full early late quick slow deep narrow wide sharp
        smooth rough clean dirty fresh sweet bitter beautiful wonderful terrible ordinary walk run
        jump climb swim speak talk listen watch look find keep give take bring carry open close
        begin finish learn teach read write draw paint build break fix wash cook eat drink sleep
        dream think believe remember forget understand explain answer follow leave return arrive
        travel wait stay change move turn push pull throw catch hold sing dance play laugh smile
        cry shout whisper call visit help share choose decide measure gather plant grow fall rise
        slowly quickly quietly suddenly carefully together tomorrow yesterday today almost perhaps
        certainly usually finally outside inside around toward beyond within without against""",
    ),
    "fr": (
        """le la les un une des du de et mais ou dans sur sous avec pour par sans chez vers entre
        avant après pendant ce cette ces son sa ses mon ma nos leur chaque très bien puis quand
        alors aussi encore toujours jamais souvent il elle nous vous ils elles on qui que tout
        tous""",
        """maison jardin soleil lumière rivière montagne village enfant femme homme ami chemin
        voiture fenêtre porte table livre lettre histoire musique chanson matin soir nuit journée
        semaine année ville pays forêt arbre fleur oiseau cheval chien chat poisson pain fromage
        café vin mer plage bateau train gare école travail marché rue place église château pont
        ciel nuage pluie neige vent feu terre pierre couleur rouge bleu vert jaune blanc noir grand
        petit beau belle nouveau vieux jeune long court chaud froid doux fort lent rapide heureux
        triste calme sombre clair simple facile difficile ancien joli parler chanter marcher courir
        manger boire dormir regarder écouter penser trouver donner prendre porter ouvrir fermer
        jouer partir venir voir savoir vouloir pouvoir aimer attendre chercher entendre répondre
        comprendre apprendre écrire lire oublier rester tomber monter descendre passer arriver
        rentrer laisser tenir suivre vivre construire dessiner peindre voyager travailler
        lentement doucement vraiment ensemble demain hier maintenant bientôt longtemps ici
        médecin professeur boulanger pêcheur capitaine soldat roi reine frère soeur mère père
        famille voisin question réponse raison idée problème minute heure moment chose monde
        argent bureau leçon voyage orage tonnerre étoile lune papier miroir cuisine chaise
        fourchette couteau verre bouteille chapeau chemise jupe manteau soulier gâteau sucre
        beurre pomme orange citron tomate légume viande poulet soupe salade carotte framboise
        fraise cerise raisin""",
    ),
    "es": (
        """el la los las un una unos unas de del y pero o en sobre bajo con para por sin hacia
        entre antes después durante este esta estos estas ese esa su sus mi mis nuestro cada muy
        bien luego cuando entonces también todavía siempre nunca él ella nosotros ellos que quien
        todo todos""",
        """casa jardín sol luz río montaña pueblo niño mujer hombre amigo camino coche ventana
        puerta mesa libro carta historia música canción mañana tarde noche día semana año ciudad
        país bosque árbol flor pájaro caballo perro gato pescado pan queso café vino agua mar
        playa barco tren estación escuela trabajo mercado calle plaza iglesia castillo puente cielo
        nube lluvia nieve viento fuego tierra piedra color rojo azul verde amarillo blanco negro
        grande pequeño bonito nuevo viejo joven largo corto caliente frío suave fuerte lento
        rápido feliz triste tranquilo oscuro claro sencillo fácil difícil antiguo hermoso hablar
        cantar caminar correr comer beber dormir mirar escuchar pensar encontrar dar tomar llevar
        abrir cerrar jugar salir venir ver saber querer poder esperar buscar oír responder
        entender aprender escribir leer olvidar quedar caer subir bajar pasar llegar volver dejar
        tener seguir vivir construir dibujar pintar viajar trabajar despacio suavemente
        realmente juntos ayer ahora pronto aquí allí médico profesor panadero pescador capitán
        soldado rey reina hermano hermana madre padre familia vecino pregunta respuesta razón idea
        problema minuto hora momento cosa mundo dinero oficina lección viaje tormenta trueno
        estrella luna papel espejo cocina silla tenedor cuchillo vaso botella sombrero camisa
        falda abrigo zapato pastel azúcar mantequilla manzana naranja limón tomate verdura carne
        pollo sopa ensalada zanahoria fresa cereza uva""",
    ),
    "de": (
        """der die das ein eine einen dem den des und aber oder in auf unter mit für durch ohne
        nach vor zwischen während dieser diese dieses sein seine ihr ihre mein meine unser jeder
        sehr gut dann wenn als auch noch immer nie oft er sie wir ihr es man wer alle""",
        """Haus Garten Sonne Licht Fluss Berg Dorf Kind Frau Mann Freund Weg Wagen Fenster Tür
        Tisch Buch Brief Geschichte Musik Lied Morgen Abend Nacht Tag Woche Jahr Stadt Land Wald
        Baum Blume Vogel Pferd Hund Katze Fisch Brot Käse Kaffee Wein Wasser Meer Strand Schiff
        Zug Bahnhof Schule Arbeit Markt Straße Platz Kirche Schloss Brücke Himmel Wolke Regen
        Schnee Wind Feuer Erde Stein Farbe rot blau grün gelb weiß schwarz groß klein schön neu
        alt jung lang kurz warm kalt weich stark langsam schnell glücklich traurig ruhig dunkel
        hell einfach leicht schwer sprechen singen gehen laufen essen trinken schlafen sehen hören
        denken finden geben nehmen tragen öffnen schließen spielen kommen wissen wollen können
        lieben warten suchen antworten verstehen lernen schreiben lesen vergessen bleiben fallen
        steigen bringen ankommen lassen halten folgen leben bauen zeichnen malen reisen arbeiten
        wirklich zusammen gestern heute bald hier dort Arzt Lehrer Bäcker Fischer Kapitän Soldat
        König Königin Bruder Schwester Mutter Vater Familie Nachbar Frage Antwort Grund Idee
        Problem Minute Stunde Augenblick Ding Welt Geld Büro Reise Gewitter Donner Stern Mond
        Papier Spiegel Küche Stuhl Gabel Messer Glas Flasche Hut Hemd Rock Mantel Schuh Kuchen
        Zucker Butter Apfel Orange Zitrone Tomate Gemüse Fleisch Huhn Suppe Salat Möhre Erdbeere
        Kirsche Traube""",
    ),
    "it": (
        """il lo la i gli le un una di del della e ma o in su sotto con per senza verso tra
        prima dopo durante questo questa quello quella suo sua mio mia nostro ogni molto bene
        poi quando allora anche ancora sempre mai spesso lui lei noi voi loro che chi tutto
        tutti""",
        """casa giardino sole luce fiume montagna paese bambino donna uomo amico strada macchina
        finestra porta tavolo libro lettera storia musica canzone mattina sera notte giorno
        settimana anno città bosco albero fiore uccello cavallo cane gatto pesce pane formaggio
        caffè vino acqua mare spiaggia barca treno stazione scuola lavoro mercato piazza chiesa
        castello ponte cielo nuvola pioggia neve vento fuoco terra pietra colore rosso azzurro
        verde giallo bianco nero grande piccolo bello nuovo vecchio giovane lungo corto caldo
        freddo morbido forte lento veloce felice triste tranquillo scuro chiaro semplice facile
        difficile antico parlare cantare camminare correre mangiare bere dormire guardare
        ascoltare pensare trovare dare prendere portare aprire chiudere giocare partire venire
        vedere sapere volere potere amare aspettare cercare sentire rispondere capire imparare
        scrivere leggere dimenticare restare cadere salire scendere passare arrivare tornare
        lasciare tenere seguire vivere costruire disegnare dipingere viaggiare lavorare
        lentamente davvero insieme domani ieri adesso presto qui medico professore fornaio
        pescatore capitano soldato re regina fratello sorella madre padre famiglia vicino
        domanda risposta ragione idea problema minuto ora momento cosa mondo denaro ufficio
        lezione viaggio tempesta tuono stella luna carta specchio cucina sedia forchetta coltello
        bicchiere bottiglia cappello camicia gonna cappotto scarpa torta zucchero burro mela
        arancia limone pomodoro verdura carne pollo minestra insalata carota fragola ciliegia
        uva""",
    ),
}

# mean seconds per word at eSpeak rate 175 wpm, measured on generated sentences (incl. pauses)
_SECONDS_PER_WORD = {"en-us": 0.32, "fr": 0.27, "es": 0.35, "de": 0.31, "it": 0.36}


def word_lists(language: str) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(function words, content words) of a supported language, duplicates removed, order kept."""
    function, content = _WORDS[canonical_language(language)]
    return tuple(dict.fromkeys(function.split())), tuple(dict.fromkeys(content.split()))


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


def transcript_text(sentence: str) -> str:
    """LibriSpeech style: upper case, no punctuation."""
    return " ".join(w.strip(",.;:!?") for w in sentence.split()).upper()


# --------------------------------------------------------------------------------------------------
# plan: speakers and utterances, all drawn in the main process from the seed


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
    out_rate: int
    warp: float = 1.0  # vocal-tract scaling (cpc_speech.synth.conditions)
    conditions: SynthConditions = SynthConditions()
    channel_seed: int = 0


def _rng(seed: int, *keys) -> np.random.Generator:
    words = [int(seed) & 0xFFFFFFFF]
    for k in keys:
        words.append(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) & 0xFFFFFFFF)
    return np.random.default_rng(np.random.SeedSequence(words))


def _unique_ints(rng: np.random.Generator, n: int, low: int, high: int) -> List[int]:
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
    rng = _rng(seed, "speakers", language)
    sexes = ["F" if i % 2 == 0 else "M" for i in range(n)]
    rng.shuffle(sexes)
    pools = {"M": list(MALE_VARIANTS), "F": list(FEMALE_VARIANTS)}
    for pool in pools.values():
        rng.shuffle(pool)
    used: Dict[str, List[int]] = {}
    counters = {"M": 0, "F": 0}
    if layout == "librispeech":
        ids = [str(v) for v in _unique_ints(rng, n, 10, 9000)]
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


def _utterance_text(rng: np.random.Generator, language: str, voice: Voice) -> str:
    target = rng.uniform(2.0, 6.0) - 0.5  # seconds of speech (lead/trail silence add ~0.5 s)
    n_words = max(3, int(round(target / _SECONDS_PER_WORD[language] * voice.rate / 175.0)))
    return make_sentence(rng, language, n_words)


def _timing(rng: np.random.Generator) -> Tuple[int, int, float]:
    lead = int(rng.integers(int(0.12 * ESPEAK_SAMPLE_RATE), int(0.35 * ESPEAK_SAMPLE_RATE)))
    trail = int(rng.integers(int(0.12 * ESPEAK_SAMPLE_RATE), int(0.35 * ESPEAK_SAMPLE_RATE)))
    return lead, trail, float(np.round(rng.uniform(-1.0, 1.0), 2))


# --------------------------------------------------------------------------------------------------
# rendering (runs in worker processes)


@dataclass
class Rendered:
    uid: str
    rel_path: str
    num_samples: int  # the file's own frames
    sample_rate: int
    num_samples_16k: int
    labels: np.ndarray  # uint8/int16, n16 // 160
    phones: List[str]
    lag: int = 0  # MP3 offset at 16 kHz (decoded - encoded)
    unknown_phonemes: int = 0


def _to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _frame_labels(spans: Sequence[Tuple[int, int, int]], n16: int, lag: int = 0) -> np.ndarray:
    """Label of each 10 ms frame: the span (22050 Hz sample positions) under the frame centre."""
    n_frames = n16 // FRAME
    centres = (np.arange(n_frames, dtype=np.int64) * FRAME + FRAME // 2 - lag).astype(np.float64)
    pos = centres * (ESPEAK_SAMPLE_RATE / SAMPLE_RATE)
    starts = np.array([s for _, s, _ in spans], dtype=np.float64)
    ids = np.array([p for p, _, _ in spans], dtype=np.int64)
    end = float(spans[-1][2]) if spans else 0.0
    idx = np.searchsorted(starts, pos, side="right") - 1
    labels = np.where((idx >= 0) & (pos < end), ids[np.clip(idx, 0, len(ids) - 1)], 0)
    return labels.astype(np.int16)


def _estimate_lag(reference: np.ndarray, decoded: np.ndarray, max_lag: int = 2400) -> int:
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
        lag = _estimate_lag(reference, decoded)
    else:
        if plan.out_rate != SAMPLE_RATE:
            raise ValueError("FLAC output is written at 16 kHz")
        write_audio(path, pcm, plan.out_rate, subtype="PCM_16")
        num_samples = n16 = int(pcm.shape[0])
    labels = _frame_labels(spans, n16, lag)
    phones = [inventory.phones[p] for p, _, _ in spans if p != 0]
    return Rendered(plan.uid, plan.rel_path, num_samples, plan.out_rate, n16, labels, phones, lag, unknown)


# --------------------------------------------------------------------------------------------------
# the corpus


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


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _split_per_speaker(rng: np.random.Generator, by_speaker: Dict[str, List[str]], fraction: float) -> set:
    test = set()
    for spk in sorted(by_speaker):
        uids = sorted(by_speaker[spk])
        k = min(len(uids) - 1, max(1, int(round(fraction * len(uids)))))
        for j in sorted(rng.choice(len(uids), size=k, replace=False)):
            test.add(uids[int(j)])
    return test


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


def _plan_librispeech(lang, speakers, utterances, seed, subset) -> Tuple[List[Speaker], List[UtterancePlan], Dict]:
    spk_list = plan_speakers(lang, speakers, seed, "librispeech")
    n_chapters = max(1, math.ceil(utterances / 50))
    chapters = _unique_ints(_rng(seed, "chapters", lang), speakers * n_chapters, 1000, 300000)
    plans, chapter_of = [], {}
    for s in spk_list:
        rng = _rng(seed, "utterances", lang, s.index)
        per = [utterances // n_chapters + (1 if c < utterances % n_chapters else 0) for c in range(n_chapters)]
        for c in range(n_chapters):
            chapter = chapters[s.index * n_chapters + c]
            for u in range(per[c]):
                uid = f"{s.id}-{chapter}-{u:04d}"
                sentence = _utterance_text(rng, lang, s.voice)
                lead, trail, dlevel = _timing(rng)
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


def _plan_commonvoice(lang, speakers, utterances, seed, clip_numbers) -> Tuple[List[Speaker], List[UtterancePlan]]:
    locale = LOCALES[lang]
    spk_list = plan_speakers(lang, speakers, seed, "commonvoice")
    plans = []
    for s in spk_list:
        rng = _rng(seed, "utterances", lang, s.index)
        for _ in range(utterances):
            number = clip_numbers.pop(0)
            uid = f"common_voice_{locale}_{number}"
            sentence = _utterance_text(rng, lang, s.voice)
            lead, trail, dlevel = _timing(rng)
            plans.append(
                UtterancePlan(
                    uid=uid, language=lang, speaker=s.id, rel_path=f"{locale}/clips/{uid}.mp3", sentence=sentence,
                    voice=s.voice, espeak_seed=int(rng.integers(1, 2**31 - 1)),
                    noise_seed=int(rng.integers(0, 2**63 - 1)), lead=lead, trail=trail,
                    level_db=s.level_db + dlevel, noise_db=s.noise_db, out_rate=CV_RATE,
                )
            )
    return spk_list, plans


def with_conditions(plans: Sequence[UtterancePlan], cond: SynthConditions, seed: int) -> List[UtterancePlan]:
    """The plans under recording conditions ``cond`` (the same plans when they are clean). Draws
    come from their own seeds, so the sentences, voices and timing of the clean corpus are kept."""
    import dataclasses

    if cond.is_clean:
        return list(plans)
    warps: Dict[str, float] = {}
    out = []
    for p in plans:
        if p.speaker not in warps:
            warps[p.speaker] = speaker_warp(cond, _rng(seed, "warp", p.language, p.speaker))
        rng = _rng(seed, "conditions", p.uid)
        voice = p.voice
        if cond.variability:
            rate, pitch, prange, gap = utterance_prosody(cond, voice.rate, voice.pitch, rng)
            voice = dataclasses.replace(voice, rate=rate, pitch=pitch, range=prange, word_gap=gap)
        out.append(dataclasses.replace(p, voice=voice, warp=warps[p.speaker], conditions=cond,
                                       channel_seed=int(rng.integers(0, 2**63 - 1))))
    return out


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack("<Q", head)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _worker_main() -> None:
    """Worker process loop: read (plan, out_dir) messages on stdin, answer on the original stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent, which ends us
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, not into the protocol
    inp = sys.stdin.buffer
    while True:
        try:
            plan, out_dir = _receive(inp)
        except EOFError:
            break
        try:
            reply = ("ok", render_utterance(plan, out_dir))
        except Exception as exc:  # reported to the parent, which stops the run
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _send(channel, reply)


def _render_all(plans: Sequence[UtterancePlan], out_dir: Path, jobs: int, progress: bool) -> Dict[str, Rendered]:
    """Render in ``jobs`` worker processes.

    Workers are fresh interpreters started with ``python -c`` (not multiprocessing, which would
    re-import the caller's main script): they never synthesise themselves and fork one child per
    utterance, so output does not depend on which worker renders what.
    """
    import selectors
    import subprocess

    from tqdm import tqdm

    root = str(Path(__file__).resolve().parents[2])
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from cpc_speech.synth.corpus import _worker_main; _worker_main()"
    )
    jobs = max(1, min(jobs, len(plans)))
    procs = [
        subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(jobs)
    ]
    results: Dict[str, Rendered] = {}
    pending = list(reversed(plans))
    busy: Dict[int, str] = {}
    sel = selectors.DefaultSelector()
    bar = tqdm(total=len(plans), desc="synth", unit="utt", disable=not progress, dynamic_ncols=True)
    try:
        for i, proc in enumerate(procs):
            sel.register(proc.stdout, selectors.EVENT_READ, i)
            if pending:
                p = pending.pop()
                busy[i] = p.uid
                _send(proc.stdin, (p, str(out_dir)))
        while busy:
            for key, _ in sel.select():
                i = key.data
                try:
                    kind, value = _receive(procs[i].stdout)
                except EOFError:
                    raise RuntimeError(f"a synthesis worker died while rendering {busy.get(i)}") from None
                if kind != "ok":
                    raise RuntimeError(f"rendering {busy.get(i)} failed: {value}")
                results[value.uid] = value
                bar.update(1)
                del busy[i]
                if pending:
                    p = pending.pop()
                    busy[i] = p.uid
                    _send(procs[i].stdin, (p, str(out_dir)))
    finally:
        bar.close()
        sel.close()
        for proc in procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for proc in procs:
            if busy:  # interrupted: do not wait for unfinished work
                proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
    return results


def _write_labels(
    folder: Path, ids: Sequence[str], results: Dict[str, Rendered], test: set, inventory
) -> Dict[str, str]:
    inventory.write(folder / "phones.txt")
    _write_text(
        folder / "converted_aligned_phones.txt",
        "".join(f"{u} " + " ".join(map(str, results[u].labels.tolist())) + "\n" for u in ids),
    )
    _write_text(folder / "phone_transcripts.txt", "".join(f"{u} " + " ".join(results[u].phones) + "\n" for u in ids))
    _write_text(folder / "train_split.txt", "".join(f"{u}\n" for u in ids if u not in test))
    _write_text(folder / "test_split.txt", "".join(f"{u}\n" for u in ids if u in test))
    return {
        "phones": str(folder / "phones.txt"),
        "alignments": str(folder / "converted_aligned_phones.txt"),
        "phone_transcripts": str(folder / "phone_transcripts.txt"),
        "train_split": str(folder / "train_split.txt"),
        "test_split": str(folder / "test_split.txt"),
        "manifest": str(folder / "manifest.tsv"),
    }


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
    """Generate a speech corpus with eSpeak NG under ``out_dir``; see the module docstring for the
    layouts. ``speakers`` and ``utterances`` (per speaker) apply to each language; ``conditions``:
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
        spk_list, plans, chapter_of = _plan_librispeech(lang, speakers, utterances, seed, subset)
        per_lang[lang] = (spk_list, plans)
        all_plans += plans
    else:
        clip_numbers = _unique_ints(_rng(seed, "clips"), speakers * utterances * len(langs), 10_000_000, 40_000_000)
        for lang in langs:
            spk_list, plans = _plan_commonvoice(lang, speakers, utterances, seed, clip_numbers)
            per_lang[lang] = (spk_list, plans)
            all_plans += plans

    if not cond.is_clean:
        all_plans = with_conditions(all_plans, cond, seed)
        changed = {p.uid: p for p in all_plans}
        per_lang = {lang: (spk, [changed[p.uid] for p in plans]) for lang, (spk, plans) in per_lang.items()}
    results = _render_all(all_plans, out, int(jobs), progress)
    if not cond.is_clean:
        import json

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
        test = _split_per_speaker(_rng(seed, "split", lang), by_speaker, float(test_fraction))
        ids = sorted(p.uid for p in plans)
        prefix = "" if layout == "librispeech" else f"{LOCALES[lang]}/"
        for k, v in _write_labels(folder, ids, results, test, inventory).items():
            paths[prefix + k] = v
        plan_of = {p.uid: p for p in plans}
        rows = [
            Utterance(u, os.path.relpath(out / plan_of[u].rel_path, folder), plan_of[u].speaker,
                      results[u].num_samples, results[u].sample_rate)
            for u in ids
        ]
        write_manifest(rows, folder / "manifest.tsv")
        _write_text(folder / "abx.item", items_from_alignments(
            {u: results[u].labels for u in ids}, {r.id: r.speaker for r in rows}, dict(enumerate(inventory.phones)), ids))
        paths[prefix + "abx_item"] = str(folder / "abx.item")
        phones_used[lang] = len({ph for u in ids for ph in results[u].phones})
        phone_classes[lang] = len(inventory)
        total_16k += sum(results[u].num_samples_16k for u in ids)
        if layout == "librispeech":
            _write_librispeech_meta(out, spk_list, plans, results, chapter_of, subset, seed)
            paths["speakers"] = str(out / "SPEAKERS.TXT")
            paths["audio"] = str(out / subset)
        else:
            _write_commonvoice_meta(folder, lang, spk_list, plans, results, seed)
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


def _write_librispeech_meta(out: Path, spk_list, plans, results, chapter_of, subset: str, seed: int) -> None:
    # transcripts per chapter
    chapters: Dict[Tuple[str, int], List[UtterancePlan]] = {}
    for p in plans:
        chapters.setdefault(chapter_of[p.uid], []).append(p)
    for (spk, chapter), items in chapters.items():
        items = sorted(items, key=lambda p: p.uid)
        _write_text(
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
    _write_text(out / "SPEAKERS.TXT", "\n".join(lines) + "\n")


def _write_commonvoice_meta(folder: Path, lang: str, spk_list, plans, results, seed: int) -> None:
    locale = LOCALES[lang]
    speakers = {s.id: s for s in spk_list}
    # speaker-disjoint train/dev/test like the real corpus
    order = [s.id for s in spk_list]
    _rng(seed, "cv-split", lang).shuffle(order)
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
    _write_text(folder / "validated.tsv", header + "".join(row(p) for p in plans))
    _write_text(folder / "train.tsv", header + "".join(row(p) for p in plans if p.speaker not in dev | test))
    _write_text(folder / "dev.tsv", header + "".join(row(p) for p in plans if p.speaker in dev))
    _write_text(folder / "test.tsv", header + "".join(row(p) for p in plans if p.speaker in test))
    _write_text(
        folder / "clip_durations.tsv",
        "clip\tduration[ms]\n"
        + "".join(
            f"{Path(p.rel_path).name}\t{int(round(1000 * results[p.uid].num_samples / results[p.uid].sample_rate))}\n"
            for p in plans
        ),
    )
