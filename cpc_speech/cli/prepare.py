"""``cpc-speech prepare``: build a manifest (TSV) from a corpus on disk.

    cpc-speech prepare librispeech /data/LibriSpeech --subsets train-clean-100,dev-clean --out data/ls.tsv
    cpc-speech prepare commonvoice /data/cv-corpus-17.0 --locales en --splits train,dev --out data/cv.tsv
    cpc-speech prepare folder /data/wavs --speaker-depth 1 --out data/wavs.tsv
    cpc-speech prepare filelist files.txt --out data/list.tsv
    cpc-speech prepare hf /data/hf_dataset --speaker-column speaker_id --out data/hf.tsv
    cpc-speech prepare lhotse data/lhotse/recordings.jsonl.gz --out data/lhotse.tsv
"""

from __future__ import annotations

import argparse
import sys

CORPORA = ("librispeech", "commonvoice", "folder", "filelist", "hf", "lhotse")
MAX_WARNINGS = 20  # printed one by one; the rest are counted


def register(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="build a manifest from LibriSpeech, Common Voice, a folder, a file list, a HF dataset or lhotse manifests",
        description="Build a manifest (TSV: id, path, speaker, num_samples, sample_rate) from a corpus on disk.",
    )
    corpora = p.add_subparsers(dest="corpus", metavar="CORPUS")
    corpora.required = True

    def common(q, source_help):
        q.add_argument("source", metavar="SOURCE", help=source_help)
        q.add_argument("--out", "-o", required=True, metavar="MANIFEST", help="manifest file to write (.tsv)")
        q.add_argument("--workers", type=int, default=8, help="parallel threads for reading headers / decoding (default: %(default)s)")
        q.add_argument("--min-seconds", type=float, default=0.0, help="drop utterances shorter than this (default: keep all)")
        q.add_argument("--absolute-paths", action="store_true", help="store absolute audio paths (default: relative to the manifest)")
        q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="show progress bars (default: when stderr is a terminal)")
        q.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        q.set_defaults(func=run)

    q = corpora.add_parser("librispeech", help="LibriSpeech: ROOT/<subset>/<speaker>/<chapter>/*.flac")
    common(q, "the LibriSpeech/ folder, or the folder holding it")
    q.add_argument("--subsets", help="comma-separated subsets, e.g. train-clean-100,dev-clean (default: all present)")
    q.add_argument("--transcripts", metavar="FILE", help="also write 'id<TAB>transcript' lines to FILE")

    q = corpora.add_parser("commonvoice", help="Common Voice: ROOT/<locale>/clips/*.mp3 with split TSVs")
    common(q, "the release folder holding <locale>/clips (or one locale folder)")
    q.add_argument("--locales", help="comma-separated locales, e.g. en,fr (default: all present)")
    q.add_argument("--splits", default="validated", help="comma-separated split TSVs: validated, train, dev, test, ... (default: %(default)s)")
    q.add_argument("--transcripts", metavar="FILE", help="also write 'id<TAB>sentence' lines to FILE")

    q = corpora.add_parser("folder", help="any folder of audio files (wav, flac, ogg, opus, mp3)")
    common(q, "folder to scan recursively")
    q.add_argument("--speaker-depth", type=int, default=1, help="speaker = folder this many levels below SOURCE; 0: none (default: %(default)s)")
    q.add_argument("--speaker-regex", help="speaker = what this regex finds in the file name (group 'speaker', else group 1)")
    q.add_argument("--extensions", default="wav,flac,ogg,opus,mp3", help="comma-separated extensions (default: %(default)s)")

    q = corpora.add_parser("filelist", help="a text file: one audio path per line, optional <TAB>speaker")
    common(q, "the file list (relative paths are relative to its folder)")
    q.add_argument("--speaker-regex", help="speaker for lines without one: what this regex finds in the file name")

    q = corpora.add_parser("hf", help="a Hugging Face dataset on disk (save_to_disk folder, parquet or arrow files)")
    common(q, "save_to_disk folder, folder of .parquet/.arrow files, or one such file")
    q.add_argument("--splits", help="comma-separated splits (default: all)")
    q.add_argument("--audio-column", help="audio column (default: 'audio' or the first audio-like column)")
    q.add_argument("--speaker-column", help="speaker column (default: first of speaker_id, speaker, client_id, spk_id, spk)")
    q.add_argument("--id-column", help="utterance id column (default: id, else the audio file name, else <split>-<row>)")
    q.add_argument("--audio-dir", help="where to write the 16 kHz FLACs (default: <MANIFEST name>_audio/ beside the manifest)")
    q.add_argument("--overwrite", action="store_true", help="re-decode even when a FLAC already exists")

    q = corpora.add_parser("lhotse", help="lhotse recordings (+ supervisions) or cuts manifests; audio is not copied")
    common(q, "recordings or cuts manifest (.jsonl.gz, .jsonl or .json)")
    q.add_argument("--supervisions", metavar="FILE", help="supervisions manifest with the speakers (default: the file beside SOURCE named supervisions*)")
    q.add_argument("--root", help="folder that relative audio paths are relative to (default: the current folder, as in lhotse)")


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
    from pathlib import Path

    from cpc_speech.runlock import hold_output

    with contextlib.ExitStack() as stack:
        stack.enter_context(hold_output(args.out, "prepare", kind="file"))
        if getattr(args, "transcripts", None):
            stack.enter_context(hold_output(args.transcripts, "prepare", kind="file"))
        if args.corpus == "hf":
            out = Path(args.out)
            stack.enter_context(hold_output(Path(args.audio_dir) if args.audio_dir else out.parent / f"{out.stem}_audio", "prepare"))
        return _run(args)


def _run(args) -> int:
    from pathlib import Path

    from cpc_speech.corpora.manifest import write_manifest

    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    warn = _Warnings()
    out = Path(args.out)
    texts = None
    kw = dict(workers=args.workers, progress=progress, on_warning=warn)
    try:
        if args.corpus == "librispeech":
            from cpc_speech.corpora.librispeech import load_librispeech

            result = load_librispeech(args.source, args.subsets, with_transcripts=bool(args.transcripts), **kw)
        elif args.corpus == "commonvoice":
            from cpc_speech.corpora.commonvoice import load_commonvoice

            result = load_commonvoice(args.source, args.locales, args.splits, with_transcripts=bool(args.transcripts), **kw)
        elif args.corpus == "folder":
            from cpc_speech.corpora.folder import load_folder

            result = load_folder(
                args.source, extensions=args.extensions, speaker_depth=args.speaker_depth, speaker_regex=args.speaker_regex, **kw
            )
        elif args.corpus == "filelist":
            from cpc_speech.corpora.folder import load_filelist

            result = load_filelist(args.source, speaker_regex=args.speaker_regex, **kw)
        elif args.corpus == "hf":
            from cpc_speech.corpora.hf import load_hf

            audio_dir = Path(args.audio_dir) if args.audio_dir else out.parent / f"{out.stem}_audio"
            result = load_hf(
                args.source,
                audio_dir,
                splits=args.splits,
                audio_column=args.audio_column,
                speaker_column=args.speaker_column,
                id_column=args.id_column,
                overwrite=args.overwrite,
                **kw,
            )
        elif args.corpus == "lhotse":
            from cpc_speech.corpora.lhotse import load_lhotse

            result = load_lhotse(args.source, supervisions=args.supervisions, root=args.root, on_warning=warn)
        else:  # pragma: no cover - argparse restricts the choices
            raise ValueError(f"unknown corpus {args.corpus!r} (one of {', '.join(CORPORA)})")
    finally:
        warn.close()
    if isinstance(result, tuple):
        rows, texts = result
    else:
        rows = result
    total = len(rows)
    if args.min_seconds > 0:
        rows = [u for u in rows if u.duration >= args.min_seconds]
    if not rows:
        raise ValueError(f"no utterances left to write from {args.source}" + (f" (all {total} shorter than {args.min_seconds} s)" if total else ""))
    write_manifest(rows, out, relative=not args.absolute_paths)
    if texts is not None and getattr(args, "transcripts", None):
        _write_transcripts(args.transcripts, rows, texts)
    hours = sum(u.duration for u in rows) / 3600.0
    speakers = len({u.speaker for u in rows})
    dropped = f"; dropped {total - len(rows)} shorter than {args.min_seconds} s" if len(rows) < total else ""
    print(f"wrote {out}: {len(rows)} utterances, {speakers} speakers, {hours:.2f} hours{dropped}")
    if texts is not None and getattr(args, "transcripts", None):
        print(f"wrote {args.transcripts}: {len(rows)} transcripts")
    return 0
