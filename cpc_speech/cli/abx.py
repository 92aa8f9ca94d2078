"""``cpc-speech abx``: ABX phone discriminability (within / across speakers) of per-frame features on
a Libri-light / ZeroSpeech ``.item`` file. Method and conventions: :mod:`cpc_speech.evaluation.abx`."""

from __future__ import annotations


def register(sub) -> None:
    from cpc_speech.cli.config_args import add_config_arguments
    from cpc_speech.evaluation.config import AbxRunConfig

    p = sub.add_parser(
        "abx",
        help="ABX error (within / across speakers) of frame features on a .item file (Libri-light / ZeroSpeech 2021)",
        description=(
            "Scores the features of --features DIR (one <utterance id>.npy per utterance, frames x dim at 10 ms, flat "
            "or nested), or of --model run over --manifest together with the MFCC and random-init baselines, on the "
            "items of --item. Prints the error rates and writes them, as fractions, under the keys 'within' and "
            "'across' of --out (per feature set under 'results'). The options are the fields of AbxRunConfig: "
            "flags, keys of the --config file or key=value overrides."
        ),
    )
    add_config_arguments(p, AbxRunConfig, groups=AbxRunConfig.GROUPS)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from cpc_speech.cli.config_args import config_from_args
    from cpc_speech.evaluation.abx import score_sources
    from cpc_speech.evaluation.config import AbxRunConfig
    from cpc_speech.evaluation.items import read_item_file
    from cpc_speech.evaluation.sources import from_folder, from_model
    from cpc_speech.probes.common import default_cache_dir, parse_baselines
    from cpc_speech.results import AbxResult

    run_cfg = config_from_args(AbxRunConfig, args, where="abx settings")
    if run_cfg.threads:
        torch.set_num_threads(run_cfg.threads)
    cfg = run_cfg.scoring()
    items = read_item_file(run_cfg.item)
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    from cpc_speech.runlock import hold_output

    with hold_output(run_cfg.out, "abx", kind="file"):
        if run_cfg.features:
            sources = [from_folder(run_cfg.features, run_cfg.name, ids=items.files)]
        else:
            sources = from_model(run_cfg.model, run_cfg.manifest, items.files, run_cfg.cache_dir or default_cache_dir(run_cfg.out),
                                 layer=run_cfg.layer, baselines=parse_baselines(run_cfg.baselines), device=run_cfg.device,
                                 workers=run_cfg.workers, progress=not args.no_progress, log=log)
        result = score_sources(items, sources, cfg, log=log)
        AbxResult.from_json(result, where="ABX result").write(run_cfg.out)  # checked, written atomically
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
    print(f"results in {run_cfg.out} ({result['seconds']:.1f} s)")
    return 0
