"""``cpc-speech synth``: generate an offline speech corpus with eSpeak NG (LibriSpeech or Common
Voice layout, frame-level phone labels, speakers, splits, manifest)."""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.synth.config import SynthConfig

    p = sub.add_parser(
        "synth",
        help="generate a synthetic speech corpus with phone alignments (eSpeak NG)",
        description=(
            "Generate speech with eSpeak NG voices: audio in the LibriSpeech or Common Voice layout, "
            "frame-level phone labels (converted_aligned_phones.txt), phones.txt, phone transcripts, "
            "train/test splits of the same speakers and a manifest. Same --seed => byte-identical files."
        ),
    )
    add_config_arguments(p, SynthConfig, groups=SynthConfig.GROUPS)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.set_defaults(func=run)


def run(args) -> int:
    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.synth.config import SynthConfig
    from cpc_speech.synth.corpus import synthesize_corpus

    cfg = config_from_args(SynthConfig, args, where="synth settings")

    summary = synthesize_corpus(
        cfg.out_dir,
        speakers=cfg.speakers,
        utterances=cfg.utterances,
        languages=cfg.languages,
        seed=cfg.seed,
        layout=cfg.layout,
        jobs=cfg.jobs,
        test_fraction=cfg.test_fraction,
        subset=cfg.subset,
        overwrite=cfg.overwrite,
        progress=not args.no_progress,
        conditions=cfg.conditions(),
    )
    for line in summary.lines():
        print(line)
    return 0
