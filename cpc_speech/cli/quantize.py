"""``cpc-speech quantize``: k-means discrete units of frame features, their unit sequences and
their quality against frame labels. Formats and measures: :mod:`cpc_speech.evaluation.units`."""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.evaluation.config import QuantizeConfig

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
    add_config_arguments(p, QuantizeConfig)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.evaluation.config import QuantizeConfig
    from cpc_speech.evaluation.sources import from_folder
    from cpc_speech.evaluation.units import labels_for, quantize
    from cpc_speech.results import UnitsResult

    cfg = config_from_args(QuantizeConfig, args, where="quantize settings")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    src = from_folder(cfg.features)
    labels = items = None
    if cfg.alignments:
        from cpc_speech.corpora.labels import read_frame_labels

        labels = labels_for(list(src.features), read_frame_labels(cfg.alignments), {u: f.shape[0] for u, f in src.features.items()})
    if cfg.item:
        from cpc_speech.evaluation.items import read_item_file

        items = read_item_file(cfg.item)
    from cpc_speech.runlock import hold_output

    with hold_output(cfg.out, "quantize"):
        summary = quantize(src.features, cfg.units, cfg.out, seed=cfg.seed, max_fit_frames=cfg.max_fit_frames,
                           centroids_from=cfg.centroids, fmt=cfg.format, runs=cfg.run_length, labels=labels,
                           items=items, info={"name": src.name, "layer": src.layer, "features": src.where},
                           log=lambda m: print(m, file=sys.stderr))
        if cfg.results:
            UnitsResult.from_json(summary, where="units result").write(cfg.results)
    q, abx = summary["quality"], summary["abx"]
    print(f"{summary['units']} units on {summary['assigned_utterances']} utterances in {cfg.out}")
    if q:
        print(f"  PNMI {q['pnmi']:.3f}, purity {100 * q['purity']:.1f}%, unit purity {100 * q['unit_purity']:.1f}%, "
              f"entropy {q['entropy_bits']:.2f} bits, {q['used_units']} units used, largest unit {100 * q['max_unit_share']:.1f}% of frames")
    if abx:
        print("  ABX of the one-hot units: " + ", ".join(f"{m} {100 * v:.2f}%" for m, v in abx.items() if v is not None))
    return 0
