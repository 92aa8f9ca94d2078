"""InfoNCE loss and negative samplers: pools, exclusion of the positive, numerics, seeding, learning."""

import math

import pytest
import torch
import torch.nn.functional as F

from cpc_speech.config import preset
from cpc_speech.loss import InfoNCELoss, NegativeSampler, parse_sampling
from cpc_speech.model.cpc import CPCModel

B, T, K, N = 6, 20, 4, 16
SPEAKER = torch.tensor([0, 0, 0, 1, 1, 2])
UTTERANCE = torch.tensor([10, 10, 11, 12, 13, 14])  # windows 0 and 1 come from one utterance


def _decompose(idx):
    return idx // T, idx % T  # window, frame


def _positive_window_frame():
    b = torch.arange(B).view(B, 1, 1, 1)
    t = torch.arange(T).view(1, T, 1, 1)
    k = torch.arange(1, K + 1).view(1, 1, K, 1)
    return b, t + k


def test_parse_sampling_counts_add_up():
    assert parse_sampling("cross_batch", 128) == [("cross_batch", 128)]
    plan = dict(parse_sampling("same_utterance:0.5,cross_batch:0.25,same_speaker:0.25", 127))
    assert sum(plan.values()) == 127 and plan["same_utterance"] in (63, 64)
    with pytest.raises(ValueError, match="unknown negative sampling mode"):
        parse_sampling("same_room:1", 8)
    with pytest.raises(ValueError, match="positive share"):
        parse_sampling("cross_batch:0", 8)


def _hits_a_positive(idx):
    """(B, T, K or 1, N) negatives -> whether any equals a positive of its query (any of the K steps
    when the set is shared by the steps)."""
    win, frame = _decompose(idx)
    pb, pframe = _positive_window_frame()  # (B, 1, 1, 1), (1, T, K, 1)
    if idx.shape[2] == 1:  # compare every negative with every step's positive
        return bool(((win.unsqueeze(2) == pb.unsqueeze(2)) & (frame.unsqueeze(2) == pframe.unsqueeze(-1))).any())
    return bool(((win == pb) & (frame == pframe)).any())


@pytest.mark.parametrize("shared", [False, True])
def test_same_utterance_pool(shared):
    idx = NegativeSampler("same_utterance", N, shared=shared).sample(B, T, K, SPEAKER, UTTERANCE, torch.Generator().manual_seed(0))
    assert idx.shape == (B, T, 1 if shared else K, N) and idx.dtype == torch.long
    win, frame = _decompose(idx)
    assert torch.equal(UTTERANCE[win], UTTERANCE.view(B, 1, 1, 1).expand_as(win))  # same utterance only
    assert not _hits_a_positive(idx)  # never a positive
    # windows 0 and 1 share an utterance: their pool spans both windows
    assert set(win[0].unique().tolist()) == {0, 1} and set(win[2].unique().tolist()) == {2}


def test_same_speaker_pool_excludes_own_window():
    spk = torch.tensor([0, 0, 0, 1, 1, 1])
    idx = NegativeSampler("same_speaker", N).sample(B, T, K, spk, UTTERANCE, torch.Generator().manual_seed(0))
    win, _ = _decompose(idx)
    own = torch.arange(B).view(B, 1, 1, 1)
    assert torch.equal(spk[win], spk.view(B, 1, 1, 1).expand_as(win))
    assert not (win == own).any()
    assert set(win[0].unique().tolist()) == {1, 2}  # both other windows of speaker 0 are used


def test_same_speaker_without_partner_is_an_error():
    with pytest.raises(ValueError, match=r"window\(s\) \[5\] have no other window of their speaker"):
        NegativeSampler("same_speaker", N).sample(B, T, K, SPEAKER, UTTERANCE)


@pytest.mark.parametrize("shared", [False, True])
def test_cross_batch_pool_is_whole_batch_and_uniform(shared):
    idx = NegativeSampler("cross_batch", 256 if shared else 64, shared=shared).sample(B, T, K, generator=torch.Generator().manual_seed(0))
    assert not _hits_a_positive(idx)
    counts = torch.bincount(idx.flatten(), minlength=B * T).float()
    assert counts.min() > 0
    assert (counts.std() / counts.mean()) < 0.1  # close to uniform over all B*T frames


def test_mixed_modes_fill_their_shares():
    spk = torch.tensor([0, 0, 0, 1, 1, 1])
    idx = NegativeSampler("same_utterance:0.5,same_speaker:0.25,cross_batch:0.25", 16).sample(B, T, K, spk, UTTERANCE)
    win, _ = _decompose(idx)
    own = torch.arange(B).view(B, 1, 1)
    same_utt = win[..., :8]
    assert torch.equal(UTTERANCE[same_utt], UTTERANCE.view(B, 1, 1, 1).expand_as(same_utt))
    same_spk = win[..., 8:12]
    assert not (same_spk == own.unsqueeze(-1)).any() and torch.equal(spk[same_spk], spk.view(B, 1, 1, 1).expand_as(same_spk))


def test_shared_negatives_skip_exactly_the_future_positives():
    """Shared sets leave out frames t+1..t+K of the query's own window and nothing else: with a
    one-window pool every other frame (including t itself and the past) is drawn."""
    idx = NegativeSampler("same_utterance", 4000, shared=True).sample(1, T, K, generator=torch.Generator().manual_seed(0))
    for t in (0, 5, T - 3, T - 1):
        drawn = set(idx[0, t, 0].tolist())
        assert drawn == set(range(T)) - set(range(t + 1, min(T, t + K + 1))), t


def test_sampling_is_seeded():
    s = NegativeSampler("same_utterance:0.5,cross_batch:0.5", N)
    a = s.sample(B, T, K, SPEAKER, UTTERANCE, torch.Generator().manual_seed(3))
    b = s.sample(B, T, K, SPEAKER, UTTERANCE, torch.Generator().manual_seed(3))
    c = s.sample(B, T, K, SPEAKER, UTTERANCE, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def reference_infonce(z, pred, negatives, temperature):
    """Straightforward loops: per step k, the mean over valid t of cross-entropy, summed over k."""
    b, t, k_steps, dim = pred.shape
    flat = z.reshape(-1, dim)
    total, accs = 0.0, []
    for k in range(k_steps):
        losses, correct = [], []
        for bi in range(b):
            for ti in range(t - (k + 1)):
                neg = negatives[bi, ti, min(k, negatives.shape[2] - 1)]  # a set per step, or one shared set
                cand = torch.cat([z[bi, ti + k + 1].unsqueeze(0), flat[neg]])
                logits = cand @ pred[bi, ti, k] / temperature
                losses.append(F.cross_entropy(logits.unsqueeze(0), torch.tensor([0])))
                correct.append(float(logits.argmax() == 0))
        total = total + torch.stack(losses).mean()
        accs.append(sum(correct) / len(correct))
    return total, torch.tensor(accs)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("spec,temperature", [("cross_batch", None), ("same_utterance", None), ("same_utterance:0.5,cross_batch:0.5", 0.7)])
def test_infonce_matches_reference(spec, temperature, shared):
    torch.manual_seed(0)
    z = torch.randn(B, T, 8, dtype=torch.float64)
    pred = torch.randn(B, T, K, 8, dtype=torch.float64)
    utt = torch.arange(B)  # one window per utterance: exercises the per-window fast path
    loss_fn = InfoNCELoss(N, spec, temperature, shared_negatives=shared)
    result = loss_fn(z, pred, SPEAKER, utt, generator=torch.Generator().manual_seed(1))
    ref_loss, ref_acc = reference_infonce(z, pred, result.negatives, temperature or 8)
    assert result.loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)
    assert torch.allclose(result.accuracy.double(), ref_acc.double(), atol=1e-6)
    # the same negatives through the all-frames path give the same loss
    forced = loss_fn(z, pred, SPEAKER, UTTERANCE, negatives=result.negatives)
    if spec == "cross_batch":
        assert forced.loss.item() == pytest.approx(ref_loss.item(), abs=1e-5)


def test_infonce_gradients_flow_to_both_inputs():
    z = torch.randn(B, T, 8, requires_grad=True)
    pred = torch.randn(B, T, K, 8, requires_grad=True)
    InfoNCELoss(N, "cross_batch")(z, pred).loss.backward()
    assert z.grad.abs().sum() > 0 and pred.grad.abs().sum() > 0
    assert pred.grad[:, T - 1, 0].abs().sum() == 0  # the last frame has no z_{t+1}: no loss term


@pytest.mark.parametrize("spec", ["cross_batch", "same_utterance"])
def test_gradients_equal_across_scoring_paths(spec):
    """The same shared negatives scored by the gathered path, the per-window path and the dense
    all-frames path (negatives expanded per step) give the same loss and gradients."""
    torch.manual_seed(0)
    z = torch.randn(B, T, 8, dtype=torch.float64, requires_grad=True)
    pred = torch.randn(B, T, K, 8, dtype=torch.float64, requires_grad=True)
    loss_fn = InfoNCELoss(N, spec, shared_negatives=True)
    utt = torch.arange(B)
    shared = loss_fn(z, pred, SPEAKER, utt, generator=torch.Generator().manual_seed(1))
    g_shared = torch.autograd.grad(shared.loss, (z, pred))
    per_step = InfoNCELoss(N, spec, shared_negatives=False)
    # UTTERANCE has two windows of one utterance: forces the dense all-frames path
    dense = per_step(z, pred, SPEAKER, UTTERANCE, negatives=shared.negatives.expand(B, T, K, N).contiguous())
    g_dense = torch.autograd.grad(dense.loss, (z, pred))
    assert dense.loss.item() == pytest.approx(shared.loss.item(), abs=1e-10)
    for a, b in zip(g_shared, g_dense):
        assert torch.allclose(a, b, atol=1e-10)


def test_fused_shared_path_in_chunks_equals_dense_path(monkeypatch):
    """The fused shared-negatives cross-entropy (gradients formed while each chunk's frames are
    gathered) run in chunks of 7 queries (not a divisor of the 120 queries) equals the dense path:
    loss, per-step loss and accuracy, and gradients of 3 * loss (the backward scales the stored
    gradients by the incoming gradient); without autograd it returns the same loss."""
    import cpc_speech.loss.infonce as infonce

    torch.manual_seed(0)
    z = torch.randn(B, T, 8, dtype=torch.float64, requires_grad=True)
    pred = torch.randn(B, T, K, 8, dtype=torch.float64, requires_grad=True)
    loss_fn = InfoNCELoss(N, "cross_batch", temperature=0.9, shared_negatives=True)
    neg = loss_fn.sampler.sample(B, T, K, SPEAKER, UTTERANCE, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(infonce, "GATHER_CHUNK_BYTES", 7 * N * 8 * 8)
    fused = loss_fn(z, pred, SPEAKER, UTTERANCE, negatives=neg)
    g_fused = torch.autograd.grad(3 * fused.loss, (z, pred))
    dense_fn = InfoNCELoss(N, "cross_batch", temperature=0.9, shared_negatives=False)
    dense = dense_fn(z, pred, SPEAKER, UTTERANCE, negatives=neg.expand(B, T, K, N).contiguous())
    g_dense = torch.autograd.grad(3 * dense.loss, (z, pred))
    assert fused.loss.item() == pytest.approx(dense.loss.item(), abs=1e-10)
    assert torch.allclose(fused.loss_per_step, dense.loss_per_step, atol=1e-10)
    assert torch.equal(fused.accuracy, dense.accuracy) and 0 < fused.accuracy.mean() < 1
    for a, b in zip(g_fused, g_dense):
        assert torch.allclose(a, b, atol=1e-10) and a.abs().sum() > 0
    with torch.no_grad():
        assert loss_fn(z, pred, SPEAKER, UTTERANCE, negatives=neg).loss.item() == pytest.approx(fused.loss.item(), abs=1e-12)


def test_fused_shared_path_gradcheck():
    from cpc_speech.loss.infonce import shared_negatives_ce

    torch.manual_seed(1)
    pred = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    frames = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    negatives = torch.randint(0, 9, (5, 6))
    positives = torch.randint(0, 9, (5, 3))
    weights = torch.rand(5, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p, f: shared_negatives_ce(p, f, negatives, positives, weights, 0.7)[0], (pred, frames))


def test_window_too_short_for_steps_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        InfoNCELoss(4)(torch.randn(2, 4, 8), torch.randn(2, 4, 4, 8))


def drifting_tones(batch, samples, generator):
    """Sums of two harmonics whose pitch drifts sinusoidally: predictable from the past."""
    t = torch.arange(samples) / 16000.0
    f0 = 150 + 350 * torch.rand(batch, 1, generator=generator)
    rate = 1 + 2 * torch.rand(batch, 1, generator=generator)
    phase0 = 2 * math.pi * torch.rand(batch, 1, generator=generator)
    f = f0 * (1 + 0.5 * torch.sin(2 * math.pi * rate * t + phase0))
    phase = 2 * math.pi * torch.cumsum(f, 1) / 16000
    noise = 0.01 * torch.randn(batch, samples, generator=generator)
    return 0.5 * torch.sin(phase) + 0.3 * torch.sin(2.7 * phase) + noise


def test_tiny_model_learns_to_predict_structured_signal():
    """300 Adam steps of the tiny preset: mean per-step accuracy must exceed 3x chance (1/17)."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    cfg.predictor.steps = 4
    model = CPCModel(cfg)
    loss_fn = InfoNCELoss(16, "cross_batch")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    first = None
    for step in range(300):
        out = model(drifting_tones(8, 6400, gen))
        r = loss_fn(out.z, out.predictions, generator=gen)
        opt.zero_grad()
        r.loss.backward()
        opt.step()
        first = first if first is not None else r.loss.item()
    chance = 1 / 17
    assert r.accuracy.mean().item() > 3 * chance, r.accuracy
    assert r.loss.item() < first - 1.0


def test_fused_shared_path_in_bf16_matches_float64_on_the_same_inputs(monkeypatch):
    """bf16 inputs (as under autocast): the fused path gathers and multiplies in bf16 and scores in
    float32; loss and gradients stay within bf16 rounding of float64 on the same (bf16-valued)
    inputs, the gradients come back in bf16, and several chunks accumulate the frames' gradient
    in float32."""
    import cpc_speech.loss.infonce as infonce

    torch.manual_seed(5)
    z64 = torch.randn(B, T, 16, dtype=torch.float64).bfloat16().double()
    p64 = torch.randn(B, T, K, 16, dtype=torch.float64).bfloat16().double()
    loss_fn = InfoNCELoss(N, "cross_batch", shared_negatives=True)
    neg = loss_fn.sampler.sample(B, T, K, SPEAKER, UTTERANCE, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(infonce, "GATHER_CHUNK_BYTES", 7 * N * 16 * 2)
    z16, p16 = z64.bfloat16().requires_grad_(), p64.bfloat16().requires_grad_()
    z64.requires_grad_(), p64.requires_grad_()
    low = loss_fn(z16, p16, SPEAKER, UTTERANCE, negatives=neg)
    ref = loss_fn(z64, p64, SPEAKER, UTTERANCE, negatives=neg)
    assert low.loss.dtype == torch.float32
    assert low.loss.item() == pytest.approx(ref.loss.item(), rel=1e-2)
    assert (low.accuracy.double() - ref.accuracy).abs().max() <= 0.05
    g16 = torch.autograd.grad(low.loss, (z16, p16))
    g64 = torch.autograd.grad(ref.loss, (z64, p64))
    for a, b in zip(g16, g64):
        assert a.dtype == torch.bfloat16
        assert (a.double() - b).norm() <= 3e-2 * b.norm()
