"""``cpc-speech synth``: generate an offline speech corpus with eSpeak NG (LibriSpeech or Common
Voice layout, frame-level phone labels, speakers, splits, manifest)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic speech corpus with phone alignments (eSpeak NG)",
        description=(
            "Generate speech with eSpeak NG voices: audio in the LibriSpeech or Common Voice layout, "
            "frame-level phone labels (converted_aligned_phones.txt), phones.txt, phone transcripts, "
            "train/test splits of the same speakers and a manifest. Same --seed => byte-identical files."
        ),
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (new or empty)")
    p.add_argument("--speakers", type=int, default=16, help="speakers per language (default: %(default)s)")
    p.add_argument("--utterances", type=int, default=20, help="utterances per speaker (default: %(default)s)")
    p.add_argument(
        "--languages", default="en-us",
        help="comma-separated: en-us (alias en), fr, es, de, it (default: %(default)s); "
        "the librispeech layout takes one",
    )
    p.add_argument("--seed", type=int, default=0, help="everything derives from it (default: %(default)s)")
    p.add_argument("--layout", choices=("librispeech", "commonvoice"), default="librispeech",
                   help="folder layout and audio format (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default: %(default)s)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of each speaker's utterances in test_split.txt, at least one (default: %(default)s)")
    p.add_argument("--subset", default="train-clean-100",
                   help="LibriSpeech subset folder name (default: %(default)s)")
    cond = p.add_argument_group("recording conditions (default: clean, as eSpeak NG renders it)")
    cond.add_argument("--variability", type=float, default=0.0,
                      help="0-1: per-utterance rate/pitch/range/pause changes and per-speaker vocal-tract scaling (default: 0)")
    cond.add_argument("--channel", choices=("clean", "telephone", "gsm"), default="clean",
                      help="telephone: 300-3400 Hz band; gsm: that band through the GSM 06.10 codec (default: clean)")
    cond.add_argument("--snr", help="additive coloured noise at an SNR in dB, DB or LOW:HIGH drawn per utterance (default: none)")
    cond.add_argument("--reverb", type=float, default=0.0, help="share of utterances with a generated room reverberation (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=run)


def run(args) -> int:
    from cpc_speech.synth.conditions import SynthConditions, parse_snr
    from cpc_speech.synth.corpus import synthesize_corpus

    conditions = SynthConditions(args.variability, args.channel, parse_snr(args.snr), args.reverb).validate()

    summary = synthesize_corpus(
        args.out_dir,
        speakers=args.speakers,
        utterances=args.utterances,
        languages=args.languages,
        seed=args.seed,
        layout=args.layout,
        jobs=args.jobs,
        test_fraction=args.test_fraction,
        subset=args.subset,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        conditions=conditions,
    )
    for line in summary.lines():
        print(line)
    return 0
