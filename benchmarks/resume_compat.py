"""Run folders written before the engine refactor (issue 16) resume exactly under this code.

Three stages, each a fresh process; ``OLD`` holds the package of the commit before the refactor::

    git archive 501eb38 cpc_speech | tar -x -C OLD
    cd /tmp   # outside the checkout, so that PYTHONPATH decides which cpc_speech is imported
    OMP_NUM_THREADS=1 python CHECKOUT/benchmarks/resume_compat.py corpus DIR
    OMP_NUM_THREADS=1 PYTHONPATH=OLD python CHECKOUT/benchmarks/resume_compat.py old DIR
    OMP_NUM_THREADS=1 python CHECKOUT/benchmarks/resume_compat.py new DIR

``old`` trains an uninterrupted reference and an interrupted run of pretraining (stopped at step
4 with the retired ``train.log_batches`` set) and of fine-tuning (all four conditions, interrupted
in ``unfrozen`` epoch 2); ``new`` resumes both with this code and prints how far the results are
from the references (0.0 and ``identical`` expected).
"""

import json
import sys
from pathlib import Path

import torch

SMALL = ["model.preset=tiny", "model.predictor.steps=4", "loss.negatives=16", "data.window_samples=4800", "data.batch_size=4",
         "data.num_workers=0", "train.lr=2e-3", "train.warmup_steps=2", "train.log_every=2", "train.valid_every=1000",
         "train.threads=1", "train.max_steps=8", "train.checkpoint_every=2"]
FINETUNE = dict(hours=None, epochs=3, patience=100, lr=1e-2, batch_size=8, conditions=["frozen", "unfrozen", "mfcc", "scratch"],
                head="conv", head_hidden=16, seed=5)


class Interrupt(Exception):
    pass


def interrupt(name, epoch, record):
    if name == "unfrozen" and epoch == 2:
        raise Interrupt()


def main(stage: str, root: Path) -> None:
    torch.set_num_threads(1)
    if stage == "corpus":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import write_tone_corpus
        from test_finetune import make_corpus

        corpora = {"finetune": make_corpus(root / "finetune-corpus"), "tone": str(write_tone_corpus(root / "tone"))}
        (root / "corpora.json").write_text(json.dumps(corpora))
        return
    from cpc_speech.config import PretrainConfig, config_from_dict

    corpora = json.loads((root / "corpora.json").read_text())
    from cpc_speech.train.trainer import pretrain

    if stage == "old":
        from cpc_speech.finetune.trainer import FinetuneConfig, run_finetune

        pretrain(config_from_dict(PretrainConfig, {}, SMALL), corpora["tone"], str(root / "pretrain-ref"), progress=False)
        pretrain(config_from_dict(PretrainConfig, {}, SMALL + ["train.log_batches=true"]), corpora["tone"], str(root / "pretrain-cut"),
                 progress=False, stop_after=4)
        ref = run_finetune(FinetuneConfig(**corpora["finetune"], **FINETUNE, output_dir=str(root / "finetune-ref")), progress=False)
        (root / "finetune-ref.json").write_text(json.dumps(ref))
        try:
            run_finetune(FinetuneConfig(**corpora["finetune"], **FINETUNE, output_dir=str(root / "finetune-cut")), progress=False,
                         on_epoch_end=interrupt)
        except Interrupt:
            pass
        return
    from cpc_speech.engine.checkpoint import read_checkpoint
    from cpc_speech.finetune.config import FinetuneConfig
    from cpc_speech.finetune.run import run_finetune

    pretrain(config_from_dict(PretrainConfig, {}, SMALL), corpora["tone"], str(root / "pretrain-cut"), progress=False)
    a, b = (read_checkpoint(root / run / "checkpoints" / "last.pt") for run in ("pretrain-ref", "pretrain-cut"))
    assert a["step"] == b["step"] == 8
    worst = max(float((a["model"][k] - b["model"][k]).abs().max()) for k in a["model"])
    print(f"pretraining: largest |weight difference| against the uninterrupted run: {worst}")
    resumed = run_finetune(FinetuneConfig(**corpora["finetune"], **FINETUNE, output_dir=str(root / "finetune-cut")), progress=False,
                           resume=True)
    ref = json.loads((root / "finetune-ref.json").read_text())
    for name in FINETUNE["conditions"]:
        x, y = ref["finetune"][name], resumed["finetune"][name]
        same = x["curve"] == y["curve"] and [x[k] for k in ("per_dev", "per_test", "best_epoch")] == [y[k] for k in ("per_dev", "per_test", "best_epoch")]
        print(f"fine-tuning {name}: {'identical' if same else 'DIFFERENT'} (dev PER {x['per_dev']:.4f} / {y['per_dev']:.4f})")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
