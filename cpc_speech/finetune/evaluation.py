"""CTC loss, input statistics, and the dev/test evaluation of a fine-tuned head: greedy decoding
every epoch, and greedy plus (``decode: beam``) prefix beam search with a phone LM for the best one."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from cpc_speech.corpora.manifest import Utterance
from cpc_speech.finetune.batching import length_order
from cpc_speech.finetune.conditions import FeatureSource
from cpc_speech.finetune.config import FinetuneConfig
from cpc_speech.finetune.data import FinetuneData, Split
from cpc_speech.finetune.decode import PhoneLM, prefix_beam_search
from cpc_speech.finetune.head import CTCHead
from cpc_speech.finetune.per import EditCounts, error_counts, greedy_decode


def ctc_loss(logits: torch.Tensor, lengths: torch.Tensor, labels: Sequence[Sequence[int]], blank: int, reduction: str) -> torch.Tensor:
    """CTC loss of (batch, frames, classes) logits; ``mean``: per-utterance loss / its length,
    averaged (training); ``sum``: summed negative log-likelihood (evaluation)."""
    logp = logits.log_softmax(-1).transpose(0, 1)
    dev = logits.device
    target_lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long, device=dev)
    flat = torch.tensor([c for lab in labels for c in lab], dtype=torch.long, device=dev)
    return F.ctc_loss(logp, flat, lengths.to(dev), target_lengths, blank=blank, reduction=reduction, zero_infinity=True)


def feature_stats(source: FeatureSource, utts: Sequence[Utterance], batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation of ``source``'s features over the valid frames
    of ``utts`` (computed in eval mode; float64 sums)."""
    source.train(False)
    total = torch.zeros(source.dim, dtype=torch.float64)
    total_sq = torch.zeros(source.dim, dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for start in range(0, len(utts), batch_size):
            x, lengths = source.batch(utts[start : start + batch_size])
            mask = (torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
            x = x.cpu().double() * mask
            total += x.sum((0, 1))
            total_sq += (x * x).sum((0, 1))
            count += int(lengths.sum())
    mean = total / max(1, count)
    var = (total_sq / max(1, count) - mean * mean).clamp_min(0.0)
    return mean.float(), var.sqrt().float()


def evaluate(head: CTCHead, source: FeatureSource, split: Split, blank: int, batch_size: int,
             keep: Optional[List[np.ndarray]] = None) -> Tuple[EditCounts, float]:
    """Greedy-decode ``split``: edit error counts against its targets, and the CTC loss per
    reference phone (summed negative log-likelihood / total phones). ``keep``: a list that
    receives each utterance's (frames, classes) log-probabilities, in split order."""
    head.eval()
    source.train(False)
    order = length_order(split.utterances)
    refs, hyps = [], []
    nll = 0.0
    kept: Dict[int, np.ndarray] = {}
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x, lengths = source.batch([split.utterances[i] for i in idx])
            logits = head(x, lengths).float().cpu()
            lengths = head.output_lengths(lengths)
            labels = [split.targets[i].labels for i in idx]
            nll += float(ctc_loss(logits, lengths, labels, blank, "sum"))
            hyps += greedy_decode(logits, lengths.tolist(), blank)
            refs += labels
            if keep is not None:
                logp = logits.log_softmax(-1).numpy()
                for row, i in enumerate(idx):
                    kept[i] = logp[row, : int(lengths[row])]
    if keep is not None:
        keep.extend(kept[i] for i in range(len(split.utterances)))
    counts = error_counts(refs, hyps)
    return counts, nll / max(1, counts.ref_length)


def phone_lm(cfg: FinetuneConfig, data: FinetuneData) -> Optional[PhoneLM]:
    """The phone n-gram model of the training transcripts (``lm_order`` > 0), else None."""
    if cfg.lm_order <= 0:
        return None
    return PhoneLM([t.labels for t in data.train.targets], data.inventory.blank, cfg.lm_order)


def decode_split(head: CTCHead, source: FeatureSource, split: Split, cfg: FinetuneConfig, data: FinetuneData) -> Dict[str, Any]:
    """The best epoch on ``split``: greedy and (``decode: beam``) prefix-beam-search PER with
    their error counts; ``per`` is the configured decoder's."""
    blank = data.inventory.blank
    logps: List[np.ndarray] = []
    greedy, _ = evaluate(head, source, split, blank, cfg.eval_batch_size, keep=logps)
    out: Dict[str, Any] = {"greedy": {"per": greedy.rate, "errors": asdict(greedy)}}
    if cfg.decode == "beam":
        lm = phone_lm(cfg, data)
        hyps = [prefix_beam_search(lp, blank, cfg.beam_size, lm, cfg.lm_weight, cfg.insertion_bonus) for lp in logps]
        beam = error_counts([t.labels for t in split.targets], hyps)
        out["beam"] = {"per": beam.rate, "errors": asdict(beam), "beam_size": cfg.beam_size, "lm_order": cfg.lm_order,
                       "lm_weight": cfg.lm_weight if lm else None, "insertion_bonus": cfg.insertion_bonus}
        if lm is not None:
            out["beam"]["lm_perplexity"] = lm.perplexity([t.labels for t in split.targets])
    chosen = out[cfg.decode]
    return {"per": chosen["per"], "errors": chosen["errors"], "decoding": out}
