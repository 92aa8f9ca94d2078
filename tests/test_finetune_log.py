"""Fine-tuning's logs: ``log.jsonl`` (one record per epoch and condition, matching the result JSON,
exactly one record per epoch after an interrupted and resumed run, killed before or after
``last.pt`` was written) and the one-line summary of the training data."""

import json
import math
from pathlib import Path

import pytest

from cpc_speech.finetune.config import FinetuneConfig
from cpc_speech.finetune.loop import ConditionTraining
from cpc_speech.finetune.run import run_finetune

from test_finetune import corpus, make_corpus  # noqa: F401  (the module-scoped synthetic corpus)

FIELDS = {"condition", "epoch", "train_loss", "dev_loss", "dev_per", "lr", "seconds", "precision"}


def _cfg(corpus, out, **kw):  # noqa: F811
    base = dict(corpus, hours=None, epochs=3, patience=100, lr=1e-2, batch_size=8, lr_schedule="constant", warmup_steps=0,
                decode="greedy", conditions=["mfcc", "frozen"], output_dir=str(out))
    base.update(kw)
    return FinetuneConfig(**base)


def _epochs(out):
    return [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "condition" in r]


def test_log_has_one_finite_record_per_epoch_matching_the_result(corpus, tmp_path):  # noqa: F811
    result = run_finetune(_cfg(corpus, tmp_path / "o"), progress=False)
    records = _epochs(tmp_path / "o")
    assert [(r["condition"], r["epoch"]) for r in records] == [("mfcc", 1), ("mfcc", 2), ("mfcc", 3),
                                                                ("frozen", 1), ("frozen", 2), ("frozen", 3)]
    for r in records:
        assert set(r) >= FIELDS
        assert all(math.isfinite(r[k]) for k in ("train_loss", "dev_loss", "dev_per", "lr", "seconds")), r
        assert r["lr"] == 1e-2 and r["seconds"] > 0
    assert {r["precision"] for r in records if r["condition"] == "mfcc"} == {None}
    assert {r["precision"] for r in records if r["condition"] == "frozen"} == {result["finetune"]["frozen"]["precision"]} != {None}
    for name in ("mfcc", "frozen"):
        res = result["finetune"][name]
        mine = [r for r in records if r["condition"] == name]
        assert [(r["train_loss"], r["dev_per"], r["dev_loss"]) for r in mine] == [
            (c["train_loss"], c["dev_per"], c["dev_loss"]) for c in res["curve"]]
        # the best epoch (0: the untrained head) is the first lowest dev PER, and its PER is the result's
        pers = [res["initial_dev_per"]] + [r["dev_per"] for r in mine]
        assert res["best_epoch"] == pers.index(min(pers)) and pers[res["best_epoch"]] == res["per_dev"]


class Interrupt(Exception):
    pass


def test_resume_keeps_one_record_per_epoch(corpus, tmp_path, monkeypatch):  # noqa: F811
    """Killed after epoch 2's ``last.pt`` (b), or after logging epoch 2 but before its ``last.pt``
    (c: epoch 2 is trained and logged again): resumed, the log equals an uninterrupted run's."""
    kw = dict(conditions=["mfcc"], epochs=3)
    straight = run_finetune(_cfg(corpus, tmp_path / "a", **kw), progress=False)

    def stop(name, epoch, record):
        if epoch == 2:
            raise Interrupt()

    with pytest.raises(Interrupt):
        run_finetune(_cfg(corpus, tmp_path / "b", **kw), progress=False, on_epoch_end=stop)
    save_last = ConditionTraining.save_last

    def dying_save_last(self):
        if self.state["epoch"] == 2:
            raise Interrupt()
        save_last(self)

    monkeypatch.setattr(ConditionTraining, "save_last", dying_save_last)
    with pytest.raises(Interrupt):
        run_finetune(_cfg(corpus, tmp_path / "c", **kw), progress=False)
    monkeypatch.setattr(ConditionTraining, "save_last", save_last)
    a = _epochs(tmp_path / "a")
    keys = ("condition", "epoch", "train_loss", "dev_loss", "dev_per", "lr", "precision")
    for folder in ("b", "c"):
        cfg = _cfg(corpus, tmp_path / folder, **kw)
        assert [r["epoch"] for r in _epochs(tmp_path / folder)] == [1, 2], folder
        run_finetune(cfg, progress=False, resume=True)
        b = _epochs(tmp_path / folder)
        assert [r["epoch"] for r in b] == [1, 2, 3], folder
        assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b], folder
        assert [r["dev_per"] for r in b] == [c["dev_per"] for c in straight["finetune"]["mfcc"]["curve"]]
        run_finetune(cfg, progress=False, resume=True)  # finished: nothing trained, nothing logged again
        assert [r["epoch"] for r in _epochs(tmp_path / folder)] == [1, 2, 3], folder


@pytest.mark.parametrize("hours, budget", [(0.0, "budget all"), (None, "budget all"), (0.0025, "budget 0.0025 h")])
def test_train_line_names_the_budget_and_the_real_hours(corpus, tmp_path, hours, budget):  # noqa: F811
    """``--hours all`` (0.0) used to print ``budget 0.0 h``; the line says ``all`` and the pool's hours."""
    from cpc_speech.corpora.manifest import read_manifest
    from cpc_speech.finetune.run import Finetuner

    lines = []
    data = Finetuner(_cfg(corpus, tmp_path / "o", hours=hours), progress=False, log=lines.append).prepare()
    pool_ids = set((Path(corpus["train_split"]).read_text()).split())
    pool_hours = sum(u.duration for u in read_manifest(corpus["manifest"]) if u.id in pool_ids) / 3600.0
    (line,) = [m for m in lines if m.startswith("train:")]
    assert f"({budget}, pool {data.train_pool} utterances ({pool_hours:.3f} h))" in line, line
    assert "0.0 h" not in line and pool_hours > 0.006
    assert f"{data.subset.hours:.3f} h from" in line


def test_tensorboard_has_the_fine_tuning_curves(corpus, tmp_path):  # noqa: F811
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_finetune(_cfg(corpus, tmp_path / "o", conditions=["mfcc"]), progress=False)
    records = _epochs(tmp_path / "o")
    events = EventAccumulator(str(tmp_path / "o" / "tensorboard"))
    events.Reload()
    for key in ("train_loss", "dev_loss", "dev_per", "lr"):
        scalars = events.Scalars(f"finetune/mfcc/{key}")
        assert [(s.step, round(s.value, 5)) for s in scalars] == [(r["epoch"], round(r[key], 5)) for r in records], key
