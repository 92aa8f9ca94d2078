"""``cpc-speech extract``: per-utterance features of a manifest into a folder of .npy files. The
options are the fields of :class:`~cpc_speech.features.config.ExtractConfig` (generated flags,
``--config FILE``, ``key=value``)."""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.features.config import ExtractConfig

    p = sub.add_parser(
        "extract",
        help="extract per-frame features (c_t or z_t, or MFCC) for every utterance of a manifest",
        description="Writes OUT/<utt-id>.npy (frames x dim), OUT/features.tsv and OUT/meta.json. A re-run with "
        "the same model and layer skips existing files; a different model recomputes them.",
    )
    add_config_arguments(p, ExtractConfig)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    import torch

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.features.config import ExtractConfig
    from cpc_speech.features.corpus import extract_corpus

    cfg = config_from_args(ExtractConfig, args, where="extract settings")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    warnings.simplefilter("always")  # one warning per skipped file, not one per call site
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    rows = read_manifest(cfg.manifest)
    res = extract_corpus(
        cfg.model, rows, cfg.out, layer=cfg.layer, workers=cfg.workers, progress=not args.no_progress,
        dtype="float16" if cfg.float16 else "float32", device=cfg.device, batch_seconds=cfg.batch_seconds,
        precision=cfg.precision, processes=cfg.processes,
    )
    if res.empty:
        need = "160 samples, one MFCC frame" if cfg.model == "mfcc" else "the encoder's receptive field"
        print(f"warning: {len(res.empty)} of {len(res.ids)} clip(s) are too short for one frame (shorter than {need}), "
              f"e.g. {res.empty[0]!r}: features of 0 frames written", file=sys.stderr)
    rtf = res.audio_seconds / res.seconds if res.seconds > 0 and res.audio_seconds else 0.0
    print(
        f"{len(res.ids)} utterances in {cfg.out}: {res.computed} computed ({res.audio_seconds / 3600:.2f} h of audio, "
        f"{rtf:.0f}x real time), {res.cached} cached, {len(res.skipped)} skipped, "
        f"{len(res.empty)} with no frame, {res.seconds:.1f} s"
    )
    return 1 if res.skipped and not res.ids else 0
