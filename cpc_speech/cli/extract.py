"""``cpc-speech extract``: per-utterance features of a manifest into a folder of .npy files."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "extract",
        help="extract per-frame features (c_t or z_t, or MFCC) for every utterance of a manifest",
        description="Writes OUT/<utt-id>.npy (frames x dim), OUT/features.tsv and OUT/meta.json. A re-run with "
        "the same model and layer skips existing files; a different model recomputes them.",
    )
    p.add_argument("--model", required=True, help="run folder or checkpoint file, or 'mfcc' for the MFCC baseline")
    p.add_argument("--manifest", required=True, help="manifest TSV (id, path, speaker, num_samples, sample_rate)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layer", default="context", help="c_t (context), z_t (encoder), context.N (layer N of a multi-layer "
                   "context) or encoder+context (concatenated); default %(default)s")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="arithmetic of the model: auto = bf16 where the CPU computes it fast, else fp32 (default %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="audio reading threads per process (default %(default)s)")
    p.add_argument("--processes", type=int, default=1,
                   help="worker processes, each with its share of the torch threads (default %(default)s: the chunks of "
                        "all files form one stream that keeps every thread busy)")
    p.add_argument("--float16", action="store_true", help="store float16 instead of float32")
    p.add_argument("--batch-seconds", type=float, default=40.0, help="padded audio per model batch (default %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    import torch

    from cpc_speech.cli import check_args
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.features.corpus import extract_corpus

    check_args(args, {"workers": ">= 0", "threads": ">= 0", "batch_seconds": "> 0"})
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.processes < 1 or args.workers < 0:
        raise ValueError("--processes must be >= 1 and --workers >= 0")
    warnings.simplefilter("always")  # one warning per skipped file, not one per call site
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    rows = read_manifest(args.manifest)
    res = extract_corpus(
        args.model, rows, args.out, layer=args.layer, workers=args.workers, progress=not args.no_progress,
        dtype="float16" if args.float16 else "float32", device=args.device, batch_seconds=args.batch_seconds,
        precision=args.precision, processes=args.processes,
    )
    if res.empty:
        need = "160 samples, one MFCC frame" if args.model == "mfcc" else "the encoder's receptive field"
        print(f"warning: {len(res.empty)} of {len(res.ids)} clip(s) are too short for one frame (shorter than {need}), "
              f"e.g. {res.empty[0]!r}: features of 0 frames written", file=sys.stderr)
    rtf = res.audio_seconds / res.seconds if res.seconds > 0 and res.audio_seconds else 0.0
    print(
        f"{len(res.ids)} utterances in {args.out}: {res.computed} computed ({res.audio_seconds / 3600:.2f} h of audio, "
        f"{rtf:.0f}x real time), {res.cached} cached, {len(res.skipped)} skipped, "
        f"{len(res.empty)} with no frame, {res.seconds:.1f} s"
    )
    return 1 if res.skipped and not res.ids else 0
