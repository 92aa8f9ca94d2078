"""``cpc-speech abx``: ABX phone discriminability (within / across speakers) of per-frame features on
a Libri-light / ZeroSpeech ``.item`` file. Method and conventions: :mod:`cpc_speech.evaluation.abx`."""

from __future__ import annotations


def _limit(text: str):
    return None if text.lower() in ("none", "0", "all") else int(text)


def register(sub) -> None:
    p = sub.add_parser(
        "abx",
        help="ABX error (within / across speakers) of frame features on a .item file (Libri-light / ZeroSpeech 2021)",
        description=(
            "Scores the features of --features DIR (one <utterance id>.npy per utterance, frames x dim at 10 ms, flat "
            "or nested), or of --model run over --manifest together with the MFCC and random-init baselines, on the "
            "items of --item. Prints the error rates and writes them, as fractions, under the keys 'within' and "
            "'across' of --out (per feature set under 'results')."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", metavar="DIR", help="folder of <utterance id>.npy feature files (e.g. written by cpc-speech extract)")
    src.add_argument("--model", help="run folder or checkpoint: extract its features (and the baselines') for the items' utterances")
    p.add_argument("--item", required=True, metavar="FILE", help="item file: '#file onset offset #phone prev-phone next-phone speaker' lines")
    p.add_argument("--out", required=True, metavar="R.json", help="result JSON")
    p.add_argument("--mode", default="within,across", help="within, across or both, comma-separated (default %(default)s)")
    p.add_argument("--distance", default="cosine", choices=("cosine", "kl", "kl_symmetric"),
                   help="frame distance: angular (cosine) or KL for posteriorgrams (default %(default)s)")
    p.add_argument("--max-size-group", type=_limit, default=10, metavar="N",
                   help="at most N items drawn per (context, speaker, phone) group ('none': all; default %(default)s)")
    p.add_argument("--max-x-across", type=_limit, default=5, metavar="N",
                   help="across: at most N X speakers per A group ('none': all; default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default %(default)s)")
    p.add_argument("--frame-rule", choices=("libri-light", "centre"), default="libri-light",
                   help="frames of an item: the reference scorer's cut (default), or every frame whose centre is in [onset, offset)")
    p.add_argument("--kl-normalised", action="store_true",
                   help="KL distances on L2-normalised frames, as the reference scorer computes them (default: on the features as given)")
    p.add_argument("--frame-seconds", type=float, default=0.01, help="feature frame step in seconds (default %(default)s)")
    p.add_argument("--name", default=None, help="--features: name of the feature set in the result (default: from DIR/meta.json, else 'features')")
    p.add_argument("--manifest", help="--model: manifest TSV of the items' utterances")
    p.add_argument("--layer", default="context", help="--model: context, encoder, context.N or encoder+context (default %(default)s)")
    p.add_argument("--baselines", default="mfcc,random_init", help="--model: comma-separated subset of mfcc,random_init, or none (default %(default)s)")
    p.add_argument("--cache-dir", default=None, help="--model: feature cache folder (default: <out stem>.cache next to --out)")
    p.add_argument("--device", default=None, help="--model: device for feature extraction")
    p.add_argument("--workers", type=int, default=2, help="--model: audio reading threads")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from cpc_speech.evaluation.abx import AbxConfig, score_sources
    from cpc_speech.evaluation.items import read_item_file
    from cpc_speech.evaluation.sources import from_folder, from_model
    from cpc_speech.probes.common import default_cache_dir, parse_baselines, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = AbxConfig(modes=tuple(m.strip() for m in args.mode.split(",") if m.strip()), distance=args.distance,
                    max_size_group=args.max_size_group, max_x_across=args.max_x_across, seed=args.seed,
                    frame_rule=args.frame_rule, kl_normalised=args.kl_normalised, frame_seconds=args.frame_seconds).validate()
    items = read_item_file(args.item)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    from cpc_speech.runlock import hold_output

    with hold_output(args.out, "abx", kind="file"):
        if args.features:
            sources = [from_folder(args.features, args.name, ids=items.files)]
        else:
            if not args.manifest:
                raise ValueError("--model needs --manifest (the utterances of the item file)")
            sources = from_model(args.model, args.manifest, items.files, args.cache_dir or default_cache_dir(args.out),
                                 layer=args.layer, baselines=parse_baselines(args.baselines), device=args.device,
                                 workers=args.workers, progress=not args.no_progress, log=log)
        result = score_sources(items, sources, cfg, log=log)
        write_json(args.out, result)
    for name, r in result["results"].items():
        n = r["items"]
        if n["too_short"] or n["no_features"]:
            print(f"warning: {name}: {n['too_short'] + n['no_features']} of {n['items']} item(s) skipped: "
                  f"{n['too_short']} with no frame ({n['short_utterances']} utterance(s) too short for any frame), "
                  f"{n['no_features']} without features", file=sys.stderr)
    print("ABX error (%):")
    for name, r in result["results"].items():
        scores = ", ".join(f"{m} {100 * r[m]:.2f}" if r[m] is not None else f"{m} n/a" for m in cfg.modes)
        print(f"  {name:12s} {scores}  ({r['items']['used']} of {r['items']['items']} items"
              + (f", layer {r['layer']}" if r.get("layer") else "") + ")")
    print(f"results in {args.out} ({result['seconds']:.1f} s)")
    return 0
