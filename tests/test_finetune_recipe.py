"""The CTC recipe's parts: prefix beam search and phone LM against brute force, masking, frame-budget
batches, the learning-rate schedule, and the unfrozen condition starting from the frozen head."""

import itertools
import math

import numpy as np
import pytest
import torch

from cpc_speech.corpora.manifest import Utterance
from cpc_speech.engine.schedule import lr_factor
from cpc_speech.finetune.batching import epoch_batches
from cpc_speech.finetune.decode import PhoneLM, prefix_beam_search
from cpc_speech.corpora.labels import collapse_runs
from cpc_speech.finetune.per import greedy_decode
from cpc_speech.finetune.specaugment import MaskingConfig, keep_mask
from cpc_speech.finetune.config import FinetuneConfig, FinetuneError
from cpc_speech.finetune.run import Finetuner

from test_finetune import corpus, make_corpus  # noqa: F401  (the module-scoped synthetic corpus)

# ------------------------------------------------------------------------------------ decoding


def _label_sequence_log_probs(logp: np.ndarray, blank: int):
    """log P(label sequence) for every sequence, by summing over all frame paths (brute force)."""
    frames, classes = logp.shape
    totals = {}
    for path in itertools.product(range(classes), repeat=frames):
        seq = tuple(collapse_runs(path, drop=blank))
        score = sum(logp[t, c] for t, c in enumerate(path))
        totals[seq] = np.logaddexp(totals.get(seq, -np.inf), score)
    return totals


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_finds_the_most_probable_sequence(seed):
    rng = np.random.default_rng(seed)
    frames, classes, blank = 5, 3, 2
    logits = rng.normal(size=(frames, classes)) * 2
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    totals = _label_sequence_log_probs(logp, blank)
    best = max(totals, key=totals.get)
    got = prefix_beam_search(logp, blank, beam_size=50, prune=-np.inf)
    assert tuple(got) == best, (got, best)


def test_beam_search_beats_greedy_where_paths_add_up():
    # frame-wise best path is all blanks (0.4 each), but the label 0 has 0.6 of the mass over its
    # many paths: P("") = 0.4^3 = 0.064, P("0") = sum of paths with only 0s and blanks, >= 1 zero
    p = np.array([[0.3, 0.3, 0.4]] * 3)  # classes: 0, 1, blank=2
    logp = np.log(p)
    assert greedy_decode(torch.from_numpy(logp), blank=2) == [[]]
    assert prefix_beam_search(logp, blank=2, beam_size=8, prune=-np.inf) in ([0], [1])


def test_phone_lm_is_a_distribution_and_counts_by_hand():
    sents = [[0, 1, 0, 1], [0, 1, 2], [1, 0]]
    lm = PhoneLM(sents, num_labels=3, order=2)
    for history in ([], [0], [1], [2], [1, 0, 1]):
        total = sum(math.exp(lm.log_prob(history, w)) for w in list(range(3)) + [lm.eos])
        assert total == pytest.approx(1.0, abs=1e-9), history
    # unigram (add one): counts 0:4, 1:4, 2:1, eos:3 over 12 tokens, + 4 symbols
    uni = PhoneLM(sents, num_labels=3, order=1)
    assert math.exp(uni.log_prob([], 0)) == pytest.approx(5 / 16)
    assert math.exp(uni.log_prob([], 2)) == pytest.approx(2 / 16)
    # bigram after 0: 0->1 three times, 0->end once (two types): (3 + 2 * P_uni(1)) / (4 + 2)
    assert math.exp(lm.log_prob([0], 1)) == pytest.approx((3 + 2 * 5 / 16) / 6)
    # the LM prefers what it saw: 0 1 0 1 over 0 0 0 0
    assert lm.sentence_log_prob([0, 1, 0, 1]) > lm.sentence_log_prob([0, 0, 0, 0])
    assert lm.perplexity(sents) < uni.perplexity(sents) < 4.0


def test_lm_moves_the_beam_towards_likely_sequences():
    # acoustics cannot tell 0 from 1 in the second phone; the LM (always 0 then 1) decides
    lm = PhoneLM([[0, 1]] * 20, num_labels=2, order=2)
    p = np.array([[0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.55, 0.35, 0.1]])
    logp = np.log(p / p.sum(1, keepdims=True))
    assert prefix_beam_search(logp, blank=2, beam_size=8) == [0, 0]
    assert prefix_beam_search(logp, blank=2, beam_size=8, lm=lm, lm_weight=1.0) == [0, 1]


# ------------------------------------------------------------------------------ masking, batches


def test_masks_hit_only_valid_frames_and_repeat_with_the_seed():
    cfg = MaskingConfig(time_masks_per_second=5, time_mask_frames=10, channel_masks=2, channel_mask_dims=4)
    lengths = torch.tensor([300, 120])
    a = keep_mask(lengths, 300, 40, cfg, torch.Generator().manual_seed(3))
    b = keep_mask(lengths, 300, 40, cfg, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, keep_mask(lengths, 300, 40, cfg, torch.Generator().manual_seed(4)))
    frames_hit = (a[:, :, :].amin(-1) == 0) & (a.amax(-1) == 0)  # whole frames zeroed = time masks
    assert not frames_hit[1, 120:].any()  # padding never masked
    hit0 = int(frames_hit[0].sum())
    assert 10 <= hit0 <= 15 * 10  # 15 masks of 1-10 frames (overlaps possible)
    dims_hit = (a[0].amax(0) == 0)  # zeroed on every frame = channel masks
    assert 1 <= int(dims_hit.sum()) <= 8
    assert torch.equal(keep_mask(lengths, 300, 40, MaskingConfig(), torch.Generator()), torch.ones(2, 300, 40))


def _utts(seconds):
    return [Utterance(f"u{i}", f"/x/u{i}.flac", "s", int(16000 * s), 16000) for i, s in enumerate(seconds)]


def test_frame_budget_batches_respect_the_budget_and_cover_everything():
    rng = np.random.default_rng(0)
    utts = _utts(rng.uniform(0.5, 6.0, size=60))
    batches = epoch_batches(utts, 8, "length", torch.Generator().manual_seed(0), batch_frames=1200)
    assert sorted(i for b in batches for i in b) == list(range(60))
    for b in batches:
        longest = max(utts[i].num_samples_16k // 160 for i in b)
        assert longest * len(b) <= 1200 or len(b) == 1
    sizes = {len(b) for b in batches}
    assert max(sizes) >= 4 and min(sizes) <= 2  # short utterances come in larger batches


def test_learning_rate_schedule_values():
    assert lr_factor("constant", 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor("constant", 9, 100, 10) == 1.0 and lr_factor("constant", 50, 100, 10) == 1.0
    assert lr_factor("cosine", 10, 110, 10) == pytest.approx(1.0)
    assert lr_factor("cosine", 60, 110, 10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor("cosine", 110, 110, 10) == pytest.approx(0.01)


# ---------------------------------------------------------------------------------- conditions


def _cfg(corpus, **kw):  # noqa: F811
    base = dict(corpus, hours=None, epochs=3, patience=100, lr=1e-2, batch_size=8, head="conv", head_hidden=32)
    base.update(kw)
    return FinetuneConfig(**base)


def test_unfrozen_starts_from_the_frozen_head(corpus, tmp_path):  # noqa: F811
    ft = Finetuner(_cfg(corpus, conditions=["unfrozen"], epochs=2, output_dir=str(tmp_path / "o"), lm_order=2, precision="fp32"), progress=False)
    unfrozen = ft.train_condition("unfrozen")  # trains the frozen head first
    frozen = ft.train_condition("frozen")  # already done: the same result object
    assert frozen.record is ft._done["frozen"].record and (tmp_path / "o" / "frozen" / "result.json").is_file()
    r = unfrozen.record
    assert r["started_from"] == "frozen head"
    # epoch 0 of the unfrozen condition is the frozen head on the same (pretrained) features
    assert r["initial_dev_per"] == pytest.approx(frozen.record["dev_decoding"]["greedy"]["per"], abs=0.05)
    assert r["per_dev"] <= r["initial_dev_per"] + 1e-9
    test = r["test_decoding"]
    assert set(test) == {"greedy", "beam"} and test["beam"]["lm_order"] == 2 and test["beam"]["lm_perplexity"] > 1
    errors = test["beam"]["errors"]
    assert r["per_test"] == pytest.approx((errors["substitutions"] + errors["deletions"] + errors["insertions"]) / errors["ref_length"])
    # a random start is still possible, and recorded
    rnd = Finetuner(_cfg(corpus, conditions=["unfrozen"], epochs=1, unfrozen_init="random"), progress=False).train_condition("unfrozen")
    assert rnd.record["started_from"] == "random head" and "frozen" not in rnd.record


def test_bad_recipe_settings_are_named():
    for kw, key in [({"device": "tpu"}, "device"), ({"decode": "viterbi"}, "decode"), ({"lr_schedule": "step"}, "lr_schedule"),
                    ({"features": "context.x"}, "features"), ({"channel_mask_fraction": 2.0}, "channel_mask_fraction"),
                    ({"head_layers": 0}, "head_layers")]:
        cfg = FinetuneConfig(manifest="m", train_split="t", dev_split="d", transcripts="x", conditions=["mfcc"], **kw)
        with pytest.raises(FinetuneError, match=key):
            cfg.validate()


def test_epoch_budgets_per_condition():
    def budgets(**kw):
        cfg = FinetuneConfig(manifest="m", train_split="t", dev_split="d", transcripts="x", conditions=["mfcc"], epochs=30, **kw)
        return [cfg.validate().epochs_for(c) for c in ("frozen", "mfcc", "unfrozen", "scratch")]

    assert budgets() == [30, 30, 30, 30]
    assert budgets(end_to_end_epochs=5) == [30, 30, 5, 5]
    assert budgets(end_to_end_epochs=5, scratch_epochs=10) == [30, 30, 5, 10]
    assert budgets(scratch_epochs=12) == [30, 30, 30, 12]
    with pytest.raises(FinetuneError, match="scratch_epochs"):
        FinetuneConfig(manifest="m", train_split="t", dev_split="d", transcripts="x", scratch_epochs=-1).validate()


def test_the_default_recipe_learns_mfcc(tmp_path):
    # the command's default head and schedule (3 residual conv layers, layer norm, stride 2, masks, cosine)
    c = make_corpus(tmp_path, sizes=(("train", 36), ("dev", 9), ("test", 9)), seed=1)
    cfg = FinetuneConfig(**c, hours=None, conditions=["mfcc"], epochs=25, head_hidden=64, batch_frames=300, warmup_steps=10)
    r = Finetuner(cfg, progress=False).train_condition("mfcc").record
    assert r["initial_dev_per"] > 0.7 and r["per_dev"] < 0.3 and r["per_test"] < 0.35, r["curve"]


@pytest.mark.parametrize("residual", [False, True])
def test_strided_head_is_padding_invariant_and_shortens_the_output(residual):
    from cpc_speech.finetune.head import CTCHead, HeadConfig

    torch.manual_seed(0)
    head = CTCHead(6, 5, HeadConfig(kind="conv", hidden=8, kernel=5, layers=3, stride=2, norm=True, residual=residual)).eval()
    x = torch.randn(2, 13, 6)
    lengths = torch.tensor([13, 7])
    y = head(x, lengths)
    assert y.shape == (2, 7, 5) and head.output_lengths(lengths).tolist() == [7, 4]
    alone = head(x[1:, :7], torch.tensor([7]))
    torch.testing.assert_close(y[1, :4], alone[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        HeadConfig(kind="linear", stride=2).validate()


def test_residual_head_with_silent_inner_convs_is_the_one_layer_head():
    from cpc_speech.finetune.head import CTCHead, HeadConfig

    torch.manual_seed(0)
    deep = CTCHead(6, 5, HeadConfig(kind="conv", hidden=8, kernel=5, layers=3, stride=2, norm=True, residual=True)).eval()
    shallow = CTCHead(6, 5, HeadConfig(kind="conv", hidden=8, kernel=5, layers=1, stride=2, norm=True)).eval()
    shallow.conv.load_state_dict(deep.conv.state_dict())
    shallow.norms[0].load_state_dict(deep.norms[0].state_dict())
    shallow.out.load_state_dict(deep.out.state_dict())
    x, lengths = torch.randn(2, 13, 6), torch.tensor([13, 7])
    assert (deep(x, lengths) - shallow(x, lengths)).abs().max() > 1e-2  # the inner convs contribute
    with torch.no_grad():
        for conv in deep.more_convs:
            conv.weight.zero_()
            conv.bias.zero_()
    torch.testing.assert_close(deep(x, lengths), shallow(x, lengths), rtol=0, atol=1e-6)


def test_frozen_features_are_the_extraction_codes(corpus):  # noqa: F811
    from cpc_speech.audio import read_audio
    from cpc_speech.features.api import extract_features

    ft = Finetuner(_cfg(corpus, conditions=["frozen"], precision="fp32", features="encoder+context"), progress=False)
    cache = ft.frozen_features()
    u = ft.prepare().dev.utterances[0]
    want = extract_features(read_audio(u.path), 16000, model=ft.pretrained(), layer="encoder+context", precision="fp32")
    np.testing.assert_allclose(cache[u.id].float().numpy(), want, rtol=2e-3, atol=2e-3)  # cached as float16
    assert cache[u.id].shape[1] == ft.pretrained().cfg.encoder.channels + ft.pretrained().cfg.context.hidden
