"""The run machinery shared by pretraining and fine-tuning: resume rule, checkpoint slots and
kinds, seeds, schedules, and PretrainStep without a manifest."""

import json
import math

import pytest
import torch

from cpc_speech.batching import Batch
from cpc_speech.config import PretrainConfig, config_from_dict
from cpc_speech.engine.checkpoint import FINETUNE_KIND, FORMAT_VERSION, CheckpointError, read_checkpoint
from cpc_speech.engine.run_dir import CheckpointSlots, RunDir, changed_settings, check_resumable
from cpc_speech.engine.schedule import lr_factor, lr_multiplier
from cpc_speech.engine.seeding import epoch_seed, step_seed
from cpc_speech.train.step import PretrainStep

pytestmark = pytest.mark.usefixtures("one_thread")


def test_changed_settings_flattens_sections_and_skips_resumable_keys():
    saved = {"train": {"lr": 1e-3, "max_steps": 10}, "seed": 0, "gone": 1}
    now = {"train": {"lr": 2e-3, "max_steps": 20}, "seed": 0, "new": 2}
    assert changed_settings(saved, now, {"train.max_steps"}) == ["gone", "new", "train.lr"]
    assert changed_settings(saved, saved, ()) == []
    with pytest.raises(KeyError, match=r"exp/r holds a run with a different config \(train.lr: 0.001 -> 0.002\); start over"):
        check_resumable(saved, {**saved, "train": {"lr": 2e-3, "max_steps": 99}}, {"train.max_steps"}, "exp/r", "start over",
                        error=KeyError)
    check_resumable(saved, {**saved, "train": {"lr": 1e-3, "max_steps": 99}}, {"train.max_steps"}, "exp/r", "x")


def test_checkpoint_slots_rotate_numbered_files_and_link_last_and_best(tmp_path):
    slots = CheckpointSlots(tmp_path / "ck")
    slots.folder.mkdir()
    for step in (2, 4, 6):
        slots.save_step(step, {"format_version": FORMAT_VERSION, "model": {}, "step": step}, keep_last=2, is_best=step == 4)
    assert sorted(p.name for p in slots.folder.glob("step-*.pt")) == ["step-0000004.pt", "step-0000006.pt"]
    assert slots.read_last()["step"] == 6 and slots.read_best()["step"] == 4
    other = CheckpointSlots(tmp_path / "nv")
    other.folder.mkdir()
    other.save_last({"format_version": FORMAT_VERSION, "model": {}, "step": 3})
    other.best_from_last()
    assert other.read_best()["step"] == 3


def test_checkpoint_kind_is_checked(tmp_path):
    slots = CheckpointSlots(tmp_path)
    slots.save_last({"format_version": FORMAT_VERSION, "kind": FINETUNE_KIND, "head": {"w": torch.ones(2)}})
    assert torch.equal(slots.read_last(kind=FINETUNE_KIND)["head"]["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match="no format_version/model"):
        read_checkpoint(slots.last)  # a fine-tuning checkpoint is not a model checkpoint
    slots.save_best({"format_version": FORMAT_VERSION, "model": {}})
    with pytest.raises(CheckpointError, match=r"best\.pt: not a cpc_speech fine-tuning checkpoint"):
        slots.read_best(kind=FINETUNE_KIND)
    slots.save_best({"format_version": FORMAT_VERSION + 1, "kind": FINETUNE_KIND})
    with pytest.raises(CheckpointError, match="newer than this cpc_speech understands"):
        slots.read_best(kind=FINETUNE_KIND)


def test_run_dir_writes_only_on_the_main_process(tmp_path):
    main, other = RunDir(tmp_path / "a"), RunDir(tmp_path / "b", is_main=False)
    for run in (main, other):
        run.path.mkdir()
        run.write_json("result.json", {"x": 1})
        run.log(split="train", step=1, loss=0.5)
    assert main.read_json("result.json") == {"x": 1} and json.loads((main.path / "log.jsonl").read_text())["loss"] == 0.5
    assert other.read_json("result.json") is None and not (other.path / "log.jsonl").exists()


def test_seeds_are_the_formulas_existing_run_folders_were_trained_with():
    assert step_seed(3, 5, 1) == 3 * 1_000_003 + 5 * 7_919 + 104_729
    assert step_seed(2**62, 0, 0) == (2**62 * 1_000_003) % (2**63 - 1)
    assert [epoch_seed(5, 2, s) for s in ("batches", "dropout", "masks")] == [5_000_017, 5_000_167, 5_000_187]


def test_one_schedule_serves_pretraining_and_fine_tuning():
    tc = config_from_dict(PretrainConfig, {}, ["train.max_steps=110", "train.warmup_steps=10", "train.min_lr_ratio=0.05"]).train
    assert lr_multiplier(0, tc) == pytest.approx(0.1) and lr_multiplier(10, tc) == 1.0
    assert lr_multiplier(60, tc) == pytest.approx(0.05 + 0.95 * 0.5) and lr_multiplier(110, tc) == pytest.approx(0.05)
    tc.schedule = "step"
    assert [lr_multiplier(s, tc) for s in (59, 60, 85, 110)] == [1.0, 0.5, 0.25, 0.25]
    assert lr_factor("cosine", 110, 110, 10) == pytest.approx(0.01)  # fine-tuning's floor


def _batch(seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(0.1 * torch.randn(4, 4800, generator=g), torch.tensor([0, 0, 1, 1]), torch.arange(4), [(i, 0) for i in range(4)])


def test_pretrain_step_needs_no_manifest_and_resumes_exactly():
    cfg = config_from_dict(PretrainConfig, {}, ["model.preset=tiny", "model.predictor.steps=4", "loss.negatives=8",
                                                 "data.window_samples=4800", "train.amp=none", "train.device=cpu", "train.max_steps=10"])
    a = PretrainStep(cfg)
    stats = [a.run(_batch(i))["loss"] for i in range(3)]
    assert a.step == 3 and all(math.isfinite(x) for x in stats) and a.precision.name == "fp32"
    b = PretrainStep(cfg)  # same seed: the same initial weights and the same steps
    b.run(_batch(0))
    b.run(_batch(1))
    saved = {"model": {k: v.clone() for k, v in b.model.state_dict().items()}, **b.state_dict()}
    c = PretrainStep(cfg)
    c.load_state_dict(saved)
    assert c.step == 2 and c.scheduler.get_last_lr() == b.scheduler.get_last_lr()
    assert c.run(_batch(2))["loss"] == stats[2]
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, c.model.state_dict()[name]), name
    c.skip()
    assert c.step == 4 and c.scheduler.last_epoch == 4
