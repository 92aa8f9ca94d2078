"""``cpc-speech prepare``: build a manifest (TSV) from a corpus on disk.

    cpc-speech prepare librispeech /data/LibriSpeech --subsets train-clean-100,dev-clean --out data/ls.tsv
    cpc-speech prepare commonvoice /data/cv-corpus-17.0 --locales en --splits train,dev --out data/cv.tsv
    cpc-speech prepare folder /data/wavs --speaker-depth 1 --out data/wavs.tsv
    cpc-speech prepare filelist files.txt --out data/list.tsv
    cpc-speech prepare hf /data/hf_dataset --speaker-column speaker_id --out data/hf.tsv
    cpc-speech prepare lhotse data/lhotse/recordings.jsonl.gz --out data/lhotse.tsv
"""

from __future__ import annotations

import sys

CORPORA = ("librispeech", "commonvoice", "folder", "filelist", "hf", "lhotse")
MAX_WARNINGS = 20  # printed one by one; the rest are counted


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.corpora.prepare_config import PREPARE_CONFIGS

    p = sub.add_parser(
        "prepare",
        help="build a manifest from LibriSpeech, Common Voice, a folder, a file list, a HF dataset or lhotse manifests",
        description="Build a manifest (TSV: id, path, speaker, num_samples, sample_rate) from a corpus on disk.",
    )
    corpora = p.add_subparsers(dest="corpus", metavar="CORPUS")
    corpora.required = True
    for name, cls in PREPARE_CONFIGS.items():
        q = corpora.add_parser(name, help=cls.__doc__.strip(), description=cls.__doc__.strip())
        add_config_arguments(q, cls)
        q.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        q.set_defaults(func=run, config_cls=cls)


class _Warnings:
    """Print the first MAX_WARNINGS warnings to stderr, count the rest."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_WARNINGS:
            print(f"warning: {message}", file=sys.stderr)

    def close(self) -> None:
        if self.count > MAX_WARNINGS:
            print(f"warning: {self.count - MAX_WARNINGS} more warning(s) not shown", file=sys.stderr)


def _write_transcripts(path, rows, texts) -> None:
    from pathlib import Path

    from cpc_speech.atomic import atomic_open

    with atomic_open(Path(path), "w") as f:
        for u in rows:
            text = texts.get(u.id, "").replace("\t", " ").replace("\n", " ")
            f.write(f"{u.id}\t{text}\n")


def run(args) -> int:
    """Lock the output manifest (and the transcripts file / audio folder) and build it."""
    import contextlib

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.runlock import hold_output

    cfg = config_from_args(args.config_cls, args, where=f"prepare {args.corpus} settings")

    with contextlib.ExitStack() as stack:
        stack.enter_context(hold_output(cfg.out, "prepare", kind="file"))
        if getattr(cfg, "transcripts", None):
            stack.enter_context(hold_output(cfg.transcripts, "prepare", kind="file"))
        if args.corpus == "hf":
            stack.enter_context(hold_output(_audio_dir(cfg), "prepare"))
        return _run(args.corpus, cfg)


def _audio_dir(cfg):
    from pathlib import Path

    out = Path(cfg.out)
    return Path(cfg.audio_dir) if cfg.audio_dir else out.parent / f"{out.stem}_audio"


def _run(corpus: str, cfg) -> int:
    """Build the manifest of ``corpus`` with the settings ``cfg`` (a ``*PrepareConfig``)."""
    from pathlib import Path

    from cpc_speech.corpora.manifest import write_manifest

    progress = sys.stderr.isatty() if cfg.progress is None else cfg.progress
    warn = _Warnings()
    out = Path(cfg.out)
    texts = None
    kw = dict(workers=cfg.workers, progress=progress, on_warning=warn)
    try:
        if corpus == "librispeech":
            from cpc_speech.corpora.librispeech import load_librispeech

            result = load_librispeech(cfg.source, cfg.subsets, with_transcripts=bool(cfg.transcripts), **kw)
        elif corpus == "commonvoice":
            from cpc_speech.corpora.commonvoice import load_commonvoice

            result = load_commonvoice(cfg.source, cfg.locales, cfg.splits, with_transcripts=bool(cfg.transcripts), **kw)
        elif corpus == "folder":
            from cpc_speech.corpora.folder import load_folder

            result = load_folder(
                cfg.source, extensions=cfg.extensions, speaker_depth=cfg.speaker_depth, speaker_regex=cfg.speaker_regex, **kw
            )
        elif corpus == "filelist":
            from cpc_speech.corpora.folder import load_filelist

            result = load_filelist(cfg.source, speaker_regex=cfg.speaker_regex, **kw)
        elif corpus == "hf":
            from cpc_speech.corpora.hf import load_hf

            result = load_hf(
                cfg.source,
                _audio_dir(cfg),
                splits=cfg.splits,
                audio_column=cfg.audio_column,
                speaker_column=cfg.speaker_column,
                id_column=cfg.id_column,
                overwrite=cfg.overwrite,
                **kw,
            )
        elif corpus == "lhotse":
            from cpc_speech.corpora.lhotse import load_lhotse

            result = load_lhotse(cfg.source, supervisions=cfg.supervisions, root=cfg.root, on_warning=warn)
        else:  # pragma: no cover - argparse restricts the choices
            raise ValueError(f"unknown corpus {corpus!r} (one of {', '.join(CORPORA)})")
    finally:
        warn.close()
    if isinstance(result, tuple):
        rows, texts = result
    else:
        rows = result
    total = len(rows)
    if cfg.min_seconds > 0:
        rows = [u for u in rows if u.duration >= cfg.min_seconds]
    if not rows:
        raise ValueError(f"no utterances left to write from {cfg.source}" + (f" (all {total} shorter than {cfg.min_seconds} s)" if total else ""))
    write_manifest(rows, out, relative=not cfg.absolute_paths)
    if texts is not None and getattr(cfg, "transcripts", None):
        _write_transcripts(cfg.transcripts, rows, texts)
    hours = sum(u.duration for u in rows) / 3600.0
    speakers = len({u.speaker for u in rows})
    dropped = f"; dropped {total - len(rows)} shorter than {cfg.min_seconds} s" if len(rows) < total else ""
    print(f"wrote {out}: {len(rows)} utterances, {speakers} speakers, {hours:.2f} hours{dropped}")
    if texts is not None and getattr(cfg, "transcripts", None):
        print(f"wrote {cfg.transcripts}: {len(rows)} transcripts")
    return 0
