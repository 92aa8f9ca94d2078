"""Precision resolution (auto -> bf16 or fp32 from the CPU's abilities) and its use in training
and extraction."""

import numpy as np
import pytest
import torch

from cpc_speech.engine import precision
from cpc_speech.engine.precision import Precision, resolve


@pytest.fixture
def fresh_choice():
    precision.cpu_bf16_choice.cache_clear()
    yield
    precision.cpu_bf16_choice.cache_clear()


def test_explicit_choices_and_errors():
    assert resolve("none", "cpu").name == "fp32" and resolve("fp32", "cpu").dtype is None
    assert resolve("bf16", "cpu").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="train.amp=fp16 needs a CUDA device"):
        resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of auto"):
        resolve("half", "cpu", key="precision")


def test_auto_takes_bf16_on_amx_without_measuring(monkeypatch, fresh_choice):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    monkeypatch.setattr(precision, "measure_matmul_rates", lambda *a, **k: pytest.fail("measured on an AMX CPU"))
    p = resolve("auto", "cpu")
    assert p == Precision("bf16", "CPU has AMX-BF16")


def test_auto_takes_fp32_on_x86_without_native_bf16(monkeypatch, fresh_choice):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse2", "avx2", "avx512f"}))
    monkeypatch.setattr(precision, "measure_matmul_rates", lambda *a, **k: pytest.fail("measured without native bf16"))
    p = resolve("auto", "cpu")
    assert p.name == "fp32" and "no native bf16" in p.reason


@pytest.mark.parametrize("bf16_rate, expected", [(410.0, "bf16"), (190.0, "fp32"), (3.0, "fp32")])
def test_auto_follows_the_measured_bf16_speedup(monkeypatch, fresh_choice, bf16_rate, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"sse2", "avx512_bf16"}))
    monkeypatch.setattr(precision, "measure_matmul_rates", lambda *a, **k: {"fp32_gflops": 190.0, "bf16_gflops": bf16_rate})
    p = resolve("auto", "cpu")
    assert p.name == expected
    assert f"{bf16_rate / 190.0:.1f}x" in p.reason


def test_auto_falls_back_to_fp32_when_bf16_kernels_fail(monkeypatch, fresh_choice):
    def broken(*a, **k):
        raise RuntimeError("\"addmm_impl_cpu_\" not implemented for 'BFloat16'")

    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(precision, "measure_matmul_rates", broken)
    p = resolve("auto", "cpu")
    assert p.name == "fp32" and "unavailable" in p.reason


def test_measured_rates_are_positive_and_cached(fresh_choice):
    rates = precision.measure_matmul_rates(rows=64, inner=64, cols=64, repeats=2)
    assert rates["fp32_gflops"] > 0 and rates["bf16_gflops"] > 0
    assert precision.cpu_bf16_choice() is precision.cpu_bf16_choice()


def _trained_run(tmp_path, amp, monkeypatch=None):
    from cpc_speech.audio import write_audio
    from cpc_speech.config import PretrainConfig, preset
    from cpc_speech.corpora.manifest import utterance_from_file, write_manifest
    from cpc_speech.train.trainer import Trainer

    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        p = tmp_path / f"u{i}.flac"
        t = np.arange(16000 * 2) / 16000
        write_audio(p, (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32))
        rows.append(utterance_from_file(f"u{i}", p, f"s{i % 2}"))
    manifest = write_manifest(rows, tmp_path / "m.tsv")
    cfg = PretrainConfig(model=preset("tiny"))
    cfg.data.batch_size, cfg.data.window_samples, cfg.data.num_workers = 4, 8000, 0
    cfg.loss.negatives = 16
    cfg.train.max_steps, cfg.train.log_every, cfg.train.valid_every, cfg.train.checkpoint_every = 30, 5, 1000, 1000
    cfg.train.lr, cfg.train.warmup_steps = 3e-3, 5
    cfg.train.amp = amp
    tr = Trainer(cfg, str(manifest), str(tmp_path / f"run-{amp}"), progress=False)
    tr.fit()
    return tr


def test_bf16_training_learns_and_logs_its_precision(tmp_path):
    import json

    tr = _trained_run(tmp_path, "bf16")
    events = [json.loads(line) for line in (tmp_path / "run-bf16" / "log.jsonl").read_text().splitlines()]
    info = next(e for e in events if e.get("split") == "info")
    assert info["precision"] == "bf16" and info["precision_reason"] == "train.amp=bf16"
    losses = [e["loss"] for e in events if e.get("split") == "train"]
    assert losses[-1] < losses[0] - 0.3, losses  # it learns
    assert all(p.dtype == torch.float32 for p in tr.model.parameters())  # master weights stay float32

    from cpc_speech.report.pretraining import pretraining_section

    assert pretraining_section(events, 0, {})["precision"] == "bf16"


def test_extraction_precision_auto_fp32_bf16(tmp_path, monkeypatch, fresh_choice):
    from cpc_speech.config import preset
    from cpc_speech.features.api import extract_features
    from cpc_speech.model.cpc import CPCModel

    torch.manual_seed(0)
    model = CPCModel(preset("tiny")).eval()
    wav = (0.1 * np.random.default_rng(0).standard_normal(16000 * 6)).astype(np.float32)  # > 2.5 s: chunked
    fp32 = extract_features(wav, 16000, model, precision="fp32")
    bf16 = extract_features(wav, 16000, model, precision="bf16")
    assert fp32.dtype == bf16.dtype == np.float32 and fp32.shape == bf16.shape == (600, 64)
    rel = np.linalg.norm(bf16 - fp32) / np.linalg.norm(fp32)
    assert 0 < rel < 0.05, rel  # bf16 products: close, but really computed in bf16
    # auto follows the CPU's abilities
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    np.testing.assert_array_equal(extract_features(wav, 16000, model, precision="auto"), bf16)
    precision.cpu_bf16_choice.cache_clear()
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset())
    monkeypatch.setattr(precision, "measure_matmul_rates", lambda *a, **k: {"fp32_gflops": 100.0, "bf16_gflops": 20.0})
    np.testing.assert_array_equal(extract_features(wav, 16000, model, precision="auto"), fp32)
