"""``cpc-speech quantize``: k-means discrete units of frame features, their unit sequences and
their quality against frame labels. Formats and measures: :mod:`cpc_speech.evaluation.units`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="discrete units: k-means (MiniBatchKMeans) on frame features, unit sequences, purity/PNMI/ABX of the units",
        description=(
            "Fits K units on the features of --features DIR (one <utterance id>.npy per utterance, frames x dim), "
            "writes UNITS_DIR/centroids.npy + kmeans.json (no pickle), the unit sequence of every utterance "
            "(UNITS_DIR/units/<id>.npy or UNITS_DIR/units.txt) and UNITS_DIR/quality.json: with --alignments the "
            "purity, PNMI, unit entropy and usage; with --item the ABX error of the one-hot units."
        ),
    )
    p.add_argument("--features", required=True, metavar="DIR", help="folder of <utterance id>.npy feature files")
    p.add_argument("--units", type=int, required=True, metavar="K", help="number of units (k-means clusters)")
    p.add_argument("--out", required=True, metavar="UNITS_DIR", help="output folder")
    p.add_argument("--centroids", metavar="DIR", help="assign with the centroids of an earlier quantize run instead of fitting")
    p.add_argument("--seed", type=int, default=0, help="seed of the frame sample and of k-means (default %(default)s)")
    p.add_argument("--max-fit-frames", type=int, default=500_000, help="k-means is fit on at most this many frames, drawn uniformly (default %(default)s)")
    p.add_argument("--format", choices=("npy", "text"), default="npy", help="unit sequences as units/<id>.npy or one units.txt (default %(default)s)")
    p.add_argument("--run-length", action="store_true", help="write runs (unit, frames) instead of one unit per frame")
    p.add_argument("--alignments", help="frame labels (converted_aligned_phones.txt format): purity, PNMI, usage")
    p.add_argument("--item", help="ABX item file: ABX error of the one-hot units")
    p.add_argument("--results", metavar="R.json", help="also write the summary here (the report reads results/units_<name>.json)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from cpc_speech.evaluation.sources import from_folder
    from cpc_speech.evaluation.units import labels_for, quantize
    from cpc_speech.probes.common import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_fit_frames < 1:
        raise ValueError(f"--max-fit-frames must be positive, got {args.max_fit_frames}")
    src = from_folder(args.features)
    labels = items = None
    if args.alignments:
        from cpc_speech.corpora.labels import read_frame_labels

        labels = labels_for(list(src.features), read_frame_labels(args.alignments), {u: f.shape[0] for u, f in src.features.items()})
    if args.item:
        from cpc_speech.evaluation.items import read_item_file

        items = read_item_file(args.item)
    from cpc_speech.runlock import hold_output

    with hold_output(args.out, "quantize"):
        summary = quantize(src.features, args.units, args.out, seed=args.seed, max_fit_frames=args.max_fit_frames,
                           centroids_from=args.centroids, fmt=args.format, runs=args.run_length, labels=labels,
                           items=items, info={"name": src.name, "layer": src.layer, "features": src.where},
                           log=lambda m: print(m, file=sys.stderr))
        if args.results:
            write_json(args.results, summary)
    q, abx = summary["quality"], summary["abx"]
    print(f"{summary['units']} units on {summary['assigned_utterances']} utterances in {args.out}")
    if q:
        print(f"  PNMI {q['pnmi']:.3f}, purity {100 * q['purity']:.1f}%, unit purity {100 * q['unit_purity']:.1f}%, "
              f"entropy {q['entropy_bits']:.2f} bits, {q['used_units']} units used, largest unit {100 * q['max_unit_share']:.1f}% of frames")
    if abx:
        print("  ABX of the one-hot units: " + ", ".join(f"{m} {100 * v:.2f}%" for m, v in abx.items() if v is not None))
    return 0
