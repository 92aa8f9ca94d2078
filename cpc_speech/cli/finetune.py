"""``cpc-speech finetune``: CTC phone recognition with limited labels, with MFCC and from-scratch baselines."""

from __future__ import annotations

import argparse

CONDITION_HELP = "frozen, unfrozen, mfcc, scratch"


def _hours(text: str):
    """A positive number of hours, or 0.0 for 'all' (the config treats <= 0 as no limit)."""
    if text.lower() in ("all", "none"):
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"hours must be a number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("hours must be >= 0")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="train a CTC phone recogniser on a pretrained model with limited labels (+ MFCC / from-scratch baselines)",
        description=(
            "Train a small CTC head over phone sequences on top of a pretrained model's features: frozen "
            "(features cached once) and/or fine-tuned end to end, plus the same head on MFCCs and the same "
            "architecture trained from random init. The best epoch is picked on dev PER; test PER is "
            "reported for it only. Results go to --out as JSON; --output-dir keeps per-condition "
            "checkpoints for --resume."
        ),
    )
    data = p.add_argument_group("data")
    data.add_argument("--model", help="pretrained checkpoint file or run folder")
    data.add_argument("--preset", help="architecture for the scratch condition when no --model is given (default: default)")
    data.add_argument("--manifest", help="TSV manifest (id, path, speaker, num_samples, sample_rate)")
    data.add_argument("--phones", help="phone inventory: '<id> <name>' lines, id 0 = silence")
    targets = data.add_mutually_exclusive_group()
    targets.add_argument("--transcripts", help="'<utt-id> <phone> <phone> ...' lines (names from --phones, or integer ids)")
    targets.add_argument("--alignments", help="CPC_audio converted_aligned_phones.txt: '<utt-id>' + one phone id per 10 ms frame")
    data.add_argument("--train-split", help="file of training utterance ids (one per line)")
    data.add_argument("--dev-split", help="file of dev utterance ids (model selection)")
    data.add_argument("--test-split", help="file of test utterance ids (reported only)")
    data.add_argument("--hours", type=_hours, help="training label budget in hours, or 'all' (default: 1.0)")

    cond = p.add_argument_group("conditions")
    mode = cond.add_mutually_exclusive_group()
    mode.add_argument("--freeze", dest="freeze", action="store_true", default=None, help="pretrained model kept fixed (condition 'frozen')")
    mode.add_argument("--no-freeze", dest="freeze", action="store_false", help="pretrained model fine-tuned too (condition 'unfrozen')")
    mode.add_argument("--from-scratch", action="store_true", help="no pretrained conditions: train the architecture from random init ('scratch')")
    cond.add_argument("--baselines", help="comma list of mfcc, scratch, or 'none' (default: mfcc,scratch)")
    cond.add_argument("--conditions", help=f"comma list overriding the above: {CONDITION_HELP} (default: all four)")

    head = p.add_argument_group("head and training")
    head.add_argument("--head", choices=["linear", "conv", "conv-lstm", "conv-gru"], help="CTC head (default: conv)")
    head.add_argument("--head-hidden", type=int, help="conv channels / RNN size (default: 256)")
    head.add_argument("--head-kernel", type=int, help="conv width in frames, odd (default: 5)")
    head.add_argument("--head-dropout", type=float, help="dropout in the head (default: 0.1)")
    head.add_argument("--bidirectional", action="store_true", default=None, help="bidirectional RNN in conv-lstm / conv-gru heads")
    head.add_argument("--head-layers", type=int, help="conv layers of the conv heads (default: 3)")
    head.add_argument("--head-stride", type=int, help="conv heads: one output frame per this many feature frames (default: 2)")
    head.add_argument("--head-norm", action=argparse.BooleanOptionalAction, default=None, help="layer norm after each conv layer of the head (default: on)")
    head.add_argument("--features", help="pretrained layer to read: context (c_t), encoder (z_t), context.N, encoder+context (default: context)")
    head.add_argument("--epochs", type=int, help="maximum epochs (default: 30)")
    head.add_argument("--end-to-end-epochs", type=int, help="maximum epochs of the unfrozen and scratch conditions (default: 0 = --epochs)")
    head.add_argument("--patience", type=int, help="stop after this many epochs without a better dev PER or dev loss (default: 8)")
    head.add_argument("--batch-size", type=int, help="utterances per step when --batch-frames is 0 (default: 8)")
    head.add_argument("--batching", choices=["length", "random"], help="length: batches of similar-length utterances (less padding), random: shuffled (default: length)")
    head.add_argument("--batch-frames", type=int, help="batches of at most this many padded 10 ms frames, 0 = --batch-size utterances (default: 1500)")
    head.add_argument("--lr", type=float, help="head learning rate (Adam; default: 3e-3)")
    head.add_argument("--lr-schedule", choices=["constant", "cosine"], help="learning-rate schedule after warm-up (default: cosine)")
    head.add_argument("--warmup-steps", type=int, help="linear learning-rate warm-up steps (default: 50)")
    head.add_argument("--time-masks-per-second", type=float, help="SpecAugment time masks per second of audio on the head input, 0 = off (default: 2)")
    head.add_argument("--time-mask-frames", type=int, help="widest time mask in frames (default: 10)")
    head.add_argument("--channel-masks", type=int, help="SpecAugment channel masks per utterance, 0 = off (default: 2)")
    head.add_argument("--channel-mask-fraction", type=float, help="widest channel mask as a fraction of the feature dimensions (default: 0.1)")
    head.add_argument("--unfrozen-init", choices=["frozen", "random"], help="the unfrozen condition starts from the frozen condition's best head or a random one (default: frozen)")
    head.add_argument("--backbone-lr-scale", type=float, help="unfrozen: pretrained part at lr * this (default: 0.1)")
    head.add_argument("--scratch-lr-scale", type=float, help="scratch: random-init network at lr * this (default: 1.0)")
    head.add_argument("--weight-decay", type=float, help="Adam weight decay (default: 0)")
    head.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default: 5)")
    head.add_argument("--seed", type=int, help="seed for the subset, initialisation and shuffling (default: 0)")
    head.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    head.add_argument("--device", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    head.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="precision of the CPC networks; heads and CTC stay float32 (default: auto)")

    dec = p.add_argument_group("decoding (the best epoch, on dev and test)")
    dec.add_argument("--decode", choices=["greedy", "beam"], help="greedy best path or CTC prefix beam search (default: beam)")
    dec.add_argument("--beam-size", type=int, help="prefixes kept per frame (default: 8)")
    dec.add_argument("--lm-order", type=int, help="phone n-gram LM from the training transcripts for the beam search, 0 = none (default: 3)")
    dec.add_argument("--lm-weight", type=float, help="weight of the LM log-probability (default: 0.5)")
    dec.add_argument("--insertion-bonus", type=float, help="score added per emitted phone in the beam search (default: 0)")

    out = p.add_argument_group("output")
    out.add_argument("--config", help="a finetune_config.yaml to start from (flags override it)")
    out.add_argument("--out", help="write the result JSON here")
    out.add_argument("--output-dir", help="per-condition checkpoints, config and result.json (needed for --resume)")
    out.add_argument("--resume", action="store_true", help="skip finished conditions and continue an interrupted one in --output-dir")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


_FIELDS = [
    "model", "preset", "manifest", "phones", "transcripts", "alignments", "train_split", "dev_split", "test_split",
    "hours", "features", "head", "head_hidden", "head_kernel", "head_dropout", "bidirectional", "epochs", "patience",
    "batch_size", "batching", "lr", "backbone_lr_scale", "scratch_lr_scale", "weight_decay", "grad_clip", "seed", "threads", "output_dir",
    "head_layers", "head_norm", "head_stride", "end_to_end_epochs", "batch_frames", "lr_schedule", "warmup_steps", "time_masks_per_second", "time_mask_frames",
    "channel_masks", "channel_mask_fraction", "unfrozen_init", "device", "precision", "decode", "beam_size", "lm_order",
    "lm_weight", "insertion_bonus",
]
_PATHS = ("model", "manifest", "phones", "transcripts", "alignments", "train_split", "dev_split", "test_split", "output_dir")


def _conditions(args, default):
    from cpc_speech.finetune.config import CONDITIONS

    def parse(text, allowed, what):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items in (["none"], []):
            return []
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ValueError(f"{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
        return items

    if args.conditions:
        return parse(args.conditions, CONDITIONS, "--conditions")
    if args.freeze is None and not args.from_scratch and args.baselines is None:
        return list(default)
    pretrained = [] if args.from_scratch else (["frozen"] if args.freeze else ["unfrozen"] if args.freeze is False else ["frozen", "unfrozen"])
    baselines = parse(args.baselines if args.baselines is not None else "mfcc,scratch", ("mfcc", "scratch"), "--baselines")
    if args.from_scratch and "scratch" not in baselines:
        baselines.append("scratch")
    chosen = [c for c in CONDITIONS if c in pretrained + baselines]
    if not chosen:
        raise ValueError("no condition left to run (check --freeze/--no-freeze/--from-scratch and --baselines)")
    return chosen


def run(args) -> int:
    import json
    from pathlib import Path

    from cpc_speech.config import to_dict
    from cpc_speech.finetune.config import CONFIG_NAME, FinetuneConfig, read_settings
    from cpc_speech.finetune.run import run_finetune

    base = FinetuneConfig()
    config_file = args.config
    if config_file is None and args.resume and args.output_dir and (Path(args.output_dir) / CONFIG_NAME).is_file():
        config_file = str(Path(args.output_dir) / CONFIG_NAME)
    data = to_dict(base)
    if config_file:
        path = Path(config_file)
        loaded = read_settings(path)
        unknown = set(loaded) - set(data)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
        data.update(loaded)
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = str(Path(value).resolve()) if name in _PATHS else value
    data["conditions"] = _conditions(args, data.get("conditions") or base.conditions)

    from cpc_speech.config import from_dict

    cfg = from_dict(FinetuneConfig, data, "finetune config").validate()
    result = run_finetune(cfg, progress=not args.no_progress, resume=args.resume, out=args.out)
    rows = [("condition", "dev PER", "test PER", "test S/D/I", "best ep", "epochs", "train h", "utts", "seconds")]
    for name, r in result["finetune"].items():
        errors = r.get("test_errors")
        rows.append(
            (
                name,
                f"{r['per_dev']:.4f}",
                "-" if r["per_test"] is None else f"{r['per_test']:.4f}",
                f"{errors['substitutions']}/{errors['deletions']}/{errors['insertions']}" if errors else "-",
                str(r["best_epoch"]),
                str(r["epochs_run"]),
                f"{r['train_hours']:.3f}",
                str(r["train_utterances"]),
                f"{r['seconds']:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    if args.out:
        print(f"result written to {args.out}")
    elif not cfg.output_dir:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
    return 0

