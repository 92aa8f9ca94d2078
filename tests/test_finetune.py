"""CTC fine-tuning: PER and decoding by hand, subsets, transcripts, learning, frozen/unfrozen, resume, errors.

The learning tests use a tiny synthetic corpus built here: four "phones" (two two-tone chords, a
low chord and high-passed noise) strung into 3-6 phone utterances by three "speakers" (pitch
shifted by -10 %, 0, +12 %), written as FLAC with a manifest, an inventory and transcripts.
"""

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cpc_speech.audio import write_audio
from cpc_speech.engine.checkpoint import read_checkpoint, save_checkpoint
from cpc_speech.config import preset
from cpc_speech.corpora.labels import LabelFileError, collapse_runs
from cpc_speech.corpora.manifest import Utterance, write_manifest
from cpc_speech.finetune import (
    CTCHead,
    HeadConfig,
    ctc_min_frames,
    edit_counts,
    edit_distance,
    greedy_decode,
    load_targets,
    phone_error_rate,
    select_hours,
)
from cpc_speech.finetune.batching import epoch_batches
from cpc_speech.finetune.config import FinetuneConfig, FinetuneError, FinetuneWarning
from cpc_speech.finetune.run import Finetuner, run_finetune
from cpc_speech.model.cpc import CPCModel

# ------------------------------------------------------------------------------------------ PER


def test_edit_distance_hand_worked():
    assert edit_counts([1, 2, 3], [1, 2, 3]).errors == 0
    c = edit_counts([1, 2, 3], [1, 4, 3])  # one substitution
    assert (c.substitutions, c.deletions, c.insertions, c.ref_length) == (1, 0, 0, 3)
    c = edit_counts([1, 2, 3], [1, 3])  # one deletion
    assert (c.substitutions, c.deletions, c.insertions) == (0, 1, 0)
    c = edit_counts([1, 2, 3], [1, 2, 5, 3])  # one insertion
    assert (c.substitutions, c.deletions, c.insertions) == (0, 0, 1)
    c = edit_counts([1, 2, 3], [])  # empty hypothesis: everything deleted
    assert (c.substitutions, c.deletions, c.insertions, c.errors) == (0, 3, 0, 3)
    c = edit_counts([], [4, 4])  # empty reference: everything inserted
    assert (c.insertions, c.errors, c.ref_length) == (2, 2, 0)
    # kitten -> sitting: k->s, e->i, +g
    k = [ord(ch) for ch in "kitten"]
    s = [ord(ch) for ch in "sitting"]
    c = edit_counts(k, s)
    assert (c.substitutions, c.deletions, c.insertions) == (2, 0, 1)
    assert edit_distance(s, k) == 3
    # shift: a b c d -> b c d e is one deletion + one insertion (2), not four substitutions
    assert edit_distance([1, 2, 3, 4], [2, 3, 4, 5]) == 2


def test_per_is_total_errors_over_total_reference_length():
    refs = [[1, 2, 3, 4], [5, 6]]
    hyps = [[1, 2, 3, 4], []]
    assert phone_error_rate(refs, hyps) == pytest.approx(2 / 6)  # not the mean of 0 and 1
    assert phone_error_rate([[1, 2, 3], []], [[1, 2], [7]]) == pytest.approx(2 / 3)  # del + ins
    assert phone_error_rate([[1, 2]], [[3, 4, 5, 6]]) == pytest.approx(2.0)  # PER can exceed 1
    assert phone_error_rate([[1, 2, 3]], [[]]) == 1.0
    with pytest.raises(ValueError, match="no phones"):
        phone_error_rate([[], []], [[1], []])
    with pytest.raises(ValueError):
        phone_error_rate([[1]], [])


def test_greedy_decoding_collapses_repeats_and_removes_blanks():
    B = 3  # blank
    assert collapse_runs([B, 1, 1, B, 1, 2, 2, B, B], drop=B) == [1, 1, 2]
    assert collapse_runs([0, 0, 0], drop=3) == [0]
    assert collapse_runs([B, B], drop=B) == []
    path = [B, 1, 1, B, 1, 2, 2, B]
    logp = torch.full((len(path), 4), -5.0)
    logp[torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_decode(logp, blank=B) == [[1, 1, 2]]
    batch = torch.stack([logp, logp.flip(0)])
    assert greedy_decode(batch, lengths=[8, 3], blank=B) == [[1, 1, 2], [2]]  # second: B,2,2 -> 2
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8
    assert ctc_min_frames([]) == 0


# -------------------------------------------------------------------------------------- subsets


def _utts(spec):
    """spec: {speaker: [durations in s]} -> Utterance rows at 16 kHz (no files)."""
    rows = []
    for spk, durs in spec.items():
        for i, d in enumerate(durs):
            rows.append(Utterance(f"{spk}-{i:02d}", f"/nowhere/{spk}-{i}.flac", spk, int(d * 16000), 16000))
    return rows


def test_hours_subset_is_deterministic_within_budget_and_stratified():
    rows = _utts({"A": [10.0] * 10, "B": [10.0] * 10, "C": [10.0] * 2})
    sub = select_hours(rows, 180 / 3600, seed=3)  # 18 utterances fit
    assert len(sub.utterances) == 18 and sub.seconds == pytest.approx(180.0)
    assert sub.per_speaker() == {"A": 8, "B": 8, "C": 2}  # round-robin until C runs out
    assert sub.hours == pytest.approx(0.05)
    # independent of input order, repeatable, and the seed matters
    again = select_hours(list(reversed(rows)), 180 / 3600, seed=3)
    assert [u.id for u in again.utterances] == [u.id for u in reversed(sub.utterances)]
    other = select_hours(rows, 180 / 3600, seed=4)
    assert {u.id for u in other.utterances} != {u.id for u in sub.utterances}
    # three utterances' worth: one per speaker
    assert select_hours(rows, 30 / 3600, seed=0).per_speaker() == {"A": 1, "B": 1, "C": 1}
    # no limit
    assert len(select_hours(rows, None).utterances) == len(rows)


def test_hours_subset_never_exceeds_budget_with_mixed_lengths():
    rng = np.random.default_rng(0)
    rows = _utts({f"s{k}": list(rng.uniform(1.0, 20.0, size=15)) for k in range(5)})
    total = sum(u.duration for u in rows)
    for budget_s in (5.0, 37.0, 120.0, 333.0, total - 1.0):
        sub = select_hours(rows, budget_s / 3600, seed=1)
        assert 0 < sub.seconds <= budget_s + 1e-6
        assert sub.seconds == pytest.approx(sum(u.duration for u in sub.utterances))
        assert sub.seconds > budget_s - 20.0  # filled up to less than one (longest) utterance short
        counts = sub.per_speaker()
        if budget_s >= 120.0:
            assert len(counts) == 5  # every speaker gets a turn
    assert select_hours(rows, 0.5 / 3600).utterances == []  # nothing that short


# --------------------------------------------------------------------------- transcripts / files


def test_transcripts_names_ids_and_unknown_phone_error(tmp_path):
    (tmp_path / "phones.txt").write_text("0 sil\n1 a\n2 b\n5 c\n")
    (tmp_path / "t.txt").write_text("u1 sil a b b c sil\n# comment\nu2 a 5 2\n")
    targets, inv = load_targets(tmp_path / "phones.txt", tmp_path / "t.txt")
    assert inv.class_names == ["a", "b", "c"] and inv.blank == 3 and inv.num_classes == 4
    assert targets["u1"].labels == (0, 1, 1, 2)  # silence dropped, classes in id order
    assert targets["u2"].labels == (0, 2, 1)  # integer ids accepted
    (tmp_path / "bad.txt").write_text("u1 a b\n\nu2 a x b\n")
    with pytest.raises(LabelFileError, match=r"bad\.txt: line 3: utterance 'u2': unknown phone 'x'"):
        load_targets(tmp_path / "phones.txt", tmp_path / "bad.txt")
    (tmp_path / "bad2.txt").write_text("u1 a 7\n")  # 7 is an integer but not an inventory id
    with pytest.raises(LabelFileError, match=r"bad2\.txt: line 1: .*unknown phone '7'"):
        load_targets(tmp_path / "phones.txt", tmp_path / "bad2.txt")
    (tmp_path / "dup.txt").write_text("u1 a\nu1 b\n")
    with pytest.raises(LabelFileError, match=r"dup\.txt: line 2: duplicate"):
        load_targets(tmp_path / "phones.txt", tmp_path / "dup.txt")
    (tmp_path / "phones_bad.txt").write_text("0 sil\n1 a\n1 b\n")
    with pytest.raises(LabelFileError, match=r"phones_bad\.txt: line 3: phone id 1 already defined"):
        load_targets(tmp_path / "phones_bad.txt", tmp_path / "t.txt")


def test_alignments_give_phone_sequences(tmp_path):
    (tmp_path / "ali.txt").write_text("u1 0 0 3 3 3 0 3 5 5 0\nu2 1 1 1\nu3 0 0\n")
    targets, inv = load_targets(alignments=tmp_path / "ali.txt")
    assert inv.class_names == ["1", "2", "3", "4", "5"]  # 0..max id, silence removed
    cls = inv.class_of_id()
    assert targets["u1"].labels == (cls[3], cls[3], cls[5])  # 3 | sil | 3 stays two phones
    assert targets["u2"].labels == (cls[1],)
    assert targets["u3"].labels == ()
    (tmp_path / "ali_bad.txt").write_text("u1 0 1\nu2 0 x 1\n")
    with pytest.raises(LabelFileError, match=r"ali_bad\.txt: line 2: .*'x'"):
        load_targets(alignments=tmp_path / "ali_bad.txt")


def test_ctc_head_shapes_and_padding_invariance():
    torch.manual_seed(0)
    for kind in ("linear", "conv", "conv-lstm", "conv-gru"):
        head = CTCHead(6, 5, HeadConfig(kind=kind, hidden=8, kernel=3, bidirectional=kind == "conv-gru")).eval()
        x = torch.randn(2, 12, 6)
        lengths = torch.tensor([12, 7])
        y = head(x, lengths)
        assert y.shape == (2, 12, 5)
        alone = head(x[1:, :7], torch.tensor([7]))
        torch.testing.assert_close(y[1, :7], alone[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------- synthetic corpus

SR = 16000
PHONES = {1: ("a", (300, 900)), 2: ("e", (500, 1700)), 3: ("s", None), 4: ("m", (200, 400))}


def _render(seq, speaker, rng):
    pitch = (1.0, 1.12, 0.9)[speaker]
    parts = [np.zeros(int(SR * rng.uniform(0.03, 0.06)))]
    for k in seq:
        n = int(SR * rng.uniform(0.07, 0.11))
        t = np.arange(n) / SR
        if PHONES[k][1] is None:
            x = np.diff(np.concatenate([[0.0], 0.3 * rng.standard_normal(n)]))
        else:
            f1, f2 = PHONES[k][1]
            x = 0.5 * np.sin(2 * np.pi * f1 * pitch * t) + 0.3 * np.sin(2 * np.pi * f2 * pitch * t)
        parts.append(x * np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / 80))
        if rng.random() < 0.3:
            parts.append(np.zeros(int(SR * 0.03)))
    parts.append(np.zeros(int(SR * rng.uniform(0.03, 0.06))))
    wav = np.concatenate(parts)
    wav = wav + 0.01 * rng.standard_normal(wav.size)
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


def make_corpus(root: Path, sizes=(("train", 48), ("dev", 12), ("test", 12)), seed=0) -> dict:
    rng = np.random.default_rng(seed)
    rows, lines = [], []
    for split, n in sizes:
        ids = []
        for i in range(n):
            spk = i % 3
            seq = []
            while len(seq) < int(rng.integers(3, 7)):
                p = int(rng.integers(1, 5))
                if not seq or seq[-1] != p:  # equal neighbours would be one long sound
                    seq.append(p)
            uid = f"s{spk}-{split}-{i:03d}"
            wav = _render(seq, spk, rng)
            write_audio(root / "wav" / f"{uid}.flac", wav)
            rows.append(Utterance(uid, str(root / "wav" / f"{uid}.flac"), f"spk{spk}", len(wav), SR))
            lines.append(uid + " " + " ".join(PHONES[p][0] for p in seq))
            ids.append(uid)
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    write_manifest(rows, root / "manifest.tsv")
    (root / "phones.txt").write_text("0 sil\n" + "".join(f"{k} {v[0]}\n" for k, v in PHONES.items()))
    (root / "transcripts.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    cfg = preset("tiny")
    save_checkpoint(root / "tiny.pt", CPCModel(cfg), cfg)
    return {
        "model": str(root / "tiny.pt"),
        "manifest": str(root / "manifest.tsv"),
        "phones": str(root / "phones.txt"),
        "transcripts": str(root / "transcripts.txt"),
        "train_split": str(root / "train.txt"),
        "dev_split": str(root / "dev.txt"),
        "test_split": str(root / "test.txt"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ftcorpus"))


def _cfg(corpus, **kw) -> FinetuneConfig:
    base = dict(corpus, hours=None, epochs=3, patience=100, lr=1e-2, batch_size=8)
    base.update(kw)
    return FinetuneConfig(**base)


def test_ctc_head_learns_on_synthetic_corpus(corpus, tmp_path):
    out = tmp_path / "result.json"
    result = run_finetune(_cfg(corpus, conditions=["mfcc"], epochs=20, patience=6), progress=False, out=str(out))
    assert json.loads(out.read_text())["finetune"]["mfcc"]["per_dev"] == result["finetune"]["mfcc"]["per_dev"]
    r = result["finetune"]["mfcc"]
    # untrained head: 0.77 (residual); trained: 0.0 on this corpus
    assert r["initial_dev_per"] > 0.7
    assert r["per_dev"] < 0.2 and r["per_dev"] < r["initial_dev_per"] - 0.7
    assert r["per_test"] < 0.25
    assert r["per_dev"] == min(c["dev_per"] for c in r["curve"])
    assert r["curve"][r["best_epoch"] - 1]["dev_per"] == r["per_dev"]
    assert r["curve"][-1]["train_loss"] < r["curve"][0]["train_loss"] / 3
    assert set(r) >= {"per_dev", "per_test", "train_hours", "train_utterances", "best_epoch", "curve"}
    assert r["train_utterances"] == 48 and 0.006 < r["train_hours"] < 0.008
    assert result["phones"] == ["a", "e", "s", "m"]
    assert set(result) >= {"finetune", "phones", "config", "seconds"}


def test_residual_head_leaves_the_blank_plateau_sooner(corpus):
    def first_good_epoch(residual):
        r = run_finetune(_cfg(corpus, conditions=["mfcc"], epochs=20, patience=20, head_residual=residual), progress=False)
        curve = [c["dev_per"] for c in r["finetune"]["mfcc"]["curve"]]
        return next((i + 1 for i, per in enumerate(curve) if per < 0.2), 99), min(curve)

    (res_epoch, res_best), (plain_epoch, plain_best) = first_good_epoch(True), first_good_epoch(False)
    assert res_epoch + 5 <= plain_epoch, (res_epoch, plain_epoch)  # measured: epoch 4 against 17
    assert res_best < 0.05 and plain_best < 0.05  # both learn the corpus in the end


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_frozen_keeps_pretrained_weights_unfrozen_changes_them(corpus, tmp_path):
    before_file = _sha(corpus["model"])
    original = read_checkpoint(corpus["model"])["model"]
    ft = Finetuner(_cfg(corpus, conditions=["frozen", "unfrozen"], epochs=2, head="conv", head_hidden=32, unfrozen_init="random",
                        output_dir=str(tmp_path / "o")), progress=False)
    frozen = ft.train_condition("frozen")
    for k, v in frozen.backbone.state_dict().items():
        assert torch.equal(v, original[k]), k
    assert frozen.record["curve"][-1]["dev_per"] < 5
    unfrozen = ft.train_condition("unfrozen")
    changed = [k for k, v in unfrozen.backbone.state_dict().items() if not torch.equal(v, original[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("context.") for k in changed)
    assert unfrozen.backbone is not ft.pretrained()
    for k, v in ft.pretrained().state_dict().items():  # the shared copy used for frozen stays intact
        assert torch.equal(v, original[k]), k
    assert _sha(corpus["model"]) == before_file
    best = torch.load(tmp_path / "o" / "unfrozen" / "best.pt", weights_only=True)
    assert best["backbone"] is not None and best["condition"] == "unfrozen"
    frozen_best = torch.load(tmp_path / "o" / "frozen" / "best.pt", weights_only=True)
    assert frozen_best["backbone"] is None and frozen_best["pretrained"] == corpus["model"]


class Interrupt(Exception):
    pass


def test_resume_after_interruption_gives_the_same_result(corpus, tmp_path):
    kw = dict(conditions=["mfcc", "scratch"], epochs=4, hours=0.0025, head="conv", head_hidden=16, head_dropout=0.1, lr=3e-3, seed=5)
    straight = run_finetune(_cfg(corpus, output_dir=str(tmp_path / "a"), **kw), progress=False)
    r = straight["finetune"]["scratch"]
    assert r["train_hours"] <= 0.0025 and r["train_utterances"] < 48
    assert straight["data"]["train"]["speakers"] == 3

    def stop(name, epoch, record):
        if name == "scratch" and epoch == 2:
            raise Interrupt()

    cfg = _cfg(corpus, output_dir=str(tmp_path / "b"), **kw)
    with pytest.raises(Interrupt):
        run_finetune(cfg, progress=False, on_epoch_end=stop)
    assert (tmp_path / "b" / "mfcc" / "result.json").is_file()
    assert not (tmp_path / "b" / "scratch" / "result.json").exists()
    last = torch.load(tmp_path / "b" / "scratch" / "last.pt", weights_only=True)
    assert last["state"]["epoch"] == 2
    assert (tmp_path / "b" / "finetune_config.yaml").is_file()
    with pytest.raises(FinetuneError, match="--resume"):
        run_finetune(cfg, progress=False)
    seen = []
    resumed = run_finetune(cfg, progress=False, resume=True, on_epoch_end=lambda n, e, rec: seen.append((n, e)))
    assert seen == [("scratch", 3), ("scratch", 4)]  # mfcc skipped, scratch continued
    for name in ("mfcc", "scratch"):
        a, b = straight["finetune"][name], resumed["finetune"][name]
        assert a["curve"] == b["curve"], name
        assert (a["per_dev"], a["per_test"], a["best_epoch"]) == (b["per_dev"], b["per_test"], b["best_epoch"])
    changed = _cfg(corpus, output_dir=str(tmp_path / "b"), **dict(kw, lr=1e-3))
    with pytest.raises(FinetuneError, match="lr"):
        run_finetune(changed, progress=False, resume=True)
    # a damaged finished result is refused in one message naming it, not a KeyError
    finished = tmp_path / "b" / "mfcc" / "result.json"
    good = finished.read_text()
    for damage in ("{", json.dumps({k: v for k, v in json.loads(good).items() if k != "per_dev"})):
        finished.write_text(damage)
        with pytest.raises(FinetuneError, match=r"mfcc/result.json: not a finished condition result .*delete it"):
            run_finetune(cfg, progress=False, resume=True)
    finished.write_text(good)
    # a run saved before `batching` existed was trained with random batches: resuming it with
    # length-sorted batches is refused, with random ones allowed
    import yaml

    path = tmp_path / "b" / "finetune_config.yaml"
    saved = yaml.safe_load(path.read_text())
    del saved["batching"]
    path.write_text(yaml.safe_dump(saved))
    with pytest.raises(FinetuneError, match="batching: 'random' -> 'length'"):
        run_finetune(cfg, progress=False, resume=True)
    run_finetune(_cfg(corpus, output_dir=str(tmp_path / "b"), **dict(kw, batching="random")), progress=False, resume=True)


def test_resume_refuses_a_folder_of_another_pretrained_model(corpus, tmp_path):
    model = tmp_path / "model.pt"
    cfg_model = preset("tiny")
    torch.manual_seed(1)
    save_checkpoint(model, CPCModel(cfg_model), cfg_model)
    cfg = _cfg(corpus, model=str(model), conditions=["frozen"], epochs=1, head="conv", head_hidden=16, output_dir=str(tmp_path / "o"))
    first = run_finetune(cfg, progress=False)
    inputs = json.loads((tmp_path / "o" / "inputs.json").read_text())
    assert inputs["format_version"] == 1 and len(inputs["model"]) == 40 and len(inputs["data"]) == 40
    again = run_finetune(cfg, progress=False, resume=True)  # same weights: the finished condition is reused
    assert again["finetune"]["frozen"]["curve"] == first["finetune"]["frozen"]["curve"]
    # the same path, re-pretrained: its old fine-tuning must not be reported as the new model's
    torch.manual_seed(2)
    save_checkpoint(model, CPCModel(cfg_model), cfg_model)
    with pytest.raises(FinetuneError, match=r"holds fine-tuning of other pretrained weights \(.*inputs.json differs\); use a new --output-dir"):
        run_finetune(cfg, progress=False, resume=True)
    (tmp_path / "o" / "inputs.json").write_text("[]")
    with pytest.raises(FinetuneError, match=r"inputs.json: not a fine-tuning inputs record"):
        run_finetune(cfg, progress=False, resume=True)


def test_length_batches_cover_every_utterance_once_and_group_similar_lengths():
    lengths = [16000 * (1 + (i * 37) % 23) // 4 for i in range(50)]
    utts = [Utterance(f"u{i:02d}", f"u{i}.flac", "s", n, 16000) for i, n in enumerate(lengths)]
    gen = torch.Generator().manual_seed(0)
    by_length = epoch_batches(utts, 8, "length", gen)
    assert sorted(i for b in by_length for i in b) == list(range(50))
    assert [len(b) for b in by_length].count(8) == 6 and len(by_length) == 7
    # padded samples (batch size x longest - total): sorted batches waste less than random ones
    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    random_batches = epoch_batches(utts, 8, "random", torch.Generator().manual_seed(0))
    assert sorted(i for b in random_batches for i in b) == list(range(50))
    assert padding(by_length) < 0.25 * padding(random_batches)
    # within a sorted batch, lengths are consecutive in sorted order; the batch order is shuffled
    ranks = {i: r for r, i in enumerate(sorted(range(50), key=lambda i: (lengths[i], utts[i].id)))}
    assert all(sorted(ranks[i] for i in b) == list(range(min(ranks[i] for i in b), min(ranks[i] for i in b) + len(b))) for b in by_length)
    firsts = [min(ranks[i] for i in b) for b in by_length]
    assert firsts != sorted(firsts)
    other = epoch_batches(utts, 8, "length", torch.Generator().manual_seed(1))
    assert other != by_length and sorted(map(sorted, other)) == sorted(map(sorted, by_length))


def test_missing_and_too_short_utterances_are_skipped_or_rejected(corpus, tmp_path):
    trans = Path(corpus["transcripts"]).read_text().splitlines()
    # utterance s0-train-000 (under 1 s: < 100 frames) gets 120 phones with 40 repeats: 160 frames needed
    long_line = "s0-train-000 " + " ".join(["a", "a", "e"] * 40)
    t2 = tmp_path / "t.txt"
    t2.write_text("\n".join([long_line] + trans[1:3] + trans[4:]) + "\n")  # and s0-train-003 untranscribed
    split = tmp_path / "train.txt"
    split.write_text(Path(corpus["train_split"]).read_text() + "ghost-utt\n")
    cfg = _cfg(corpus, transcripts=str(t2), train_split=str(split), conditions=["mfcc"], epochs=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run_finetune(cfg, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, FinetuneWarning)]
    assert any("s0-train-000" in m and "120 phones need at least 160 frames" in m and "line 1" in m for m in messages), messages
    assert any("ghost-utt" in m and "train.txt: line 49" in m and "manifest" in m for m in messages), messages
    assert any("s0-train-003" in m and "train.txt: line 4" in m and "t.txt" in m for m in messages), messages
    assert result["data"]["train"]["skipped"] == {"too short for CTC": 1, "missing from manifest": 1, "missing from transcripts": 1}
    assert result["finetune"]["mfcc"]["train_utterances"] == 46
    assert result["finetune"]["mfcc"]["best_epoch"] == 0  # epochs=0: the untrained head

    only_bad = tmp_path / "dev_bad.txt"
    only_bad.write_text("s0-train-000\nghost-utt\n")
    with pytest.warns(FinetuneWarning), pytest.raises(FinetuneError, match=r"dev split .*dev_bad\.txt: none of its 2 utterances is usable"):
        Finetuner(_cfg(corpus, transcripts=str(t2), dev_split=str(only_bad), conditions=["mfcc"]), progress=False).prepare()


def test_cli_runs_and_writes_result(corpus, tmp_path, capsys):
    from cpc_speech.cli import main

    out = tmp_path / "r.json"
    argv = ["finetune", "--manifest", corpus["manifest"], "--phones", corpus["phones"], "--transcripts", corpus["transcripts"],
            "--train-split", corpus["train_split"], "--dev-split", corpus["dev_split"], "--test-split", corpus["test_split"],
            "--conditions", "mfcc", "--hours", "all", "--epochs", "2",
            "--lr", "0.01", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert list(result["finetune"]) == ["mfcc"] and result["config"]["hours"] == 0.0
    assert len(result["finetune"]["mfcc"]["curve"]) == 2
    assert "mfcc" in capsys.readouterr().out
    bad = tmp_path / "bad.txt"
    bad.write_text("s0-train-000 a zz\n")
    assert main(argv[:6] + [str(bad)] + argv[7:]) == 2
    assert "bad.txt: line 1" in capsys.readouterr().err


def test_cli_condition_flags():
    import argparse

    from cpc_speech.cli.finetune import _conditions

    def conds(**kw):
        ns = argparse.Namespace(conditions=None, freeze=None, from_scratch=False, baselines=None)
        vars(ns).update(kw)
        return _conditions(ns, ["frozen", "unfrozen", "mfcc", "scratch"])

    assert conds() == ["frozen", "unfrozen", "mfcc", "scratch"]
    assert conds(freeze=True) == ["frozen", "mfcc", "scratch"]
    assert conds(freeze=False, baselines="none") == ["unfrozen"]
    assert conds(from_scratch=True, baselines="none") == ["scratch"]
    assert conds(freeze=True, baselines="mfcc") == ["frozen", "mfcc"]
    assert conds(conditions="scratch,frozen") == ["scratch", "frozen"]
    with pytest.raises(ValueError, match="bogus"):
        conds(baselines="bogus")
