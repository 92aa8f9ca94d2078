"""Linear (softmax-regression) probes on frozen features, with model selection on a dev split.

:class:`ProbeData` holds standardisable inputs ``X`` (rows, dim), integer targets ``y`` and, for
frame probes with context, ``neighbors`` (rows, 2N+1): the row indices whose features are
concatenated to form each example (neighbouring frames of the same utterance, clamped at its edges),
so the (rows, (2N+1) dim) matrix is never materialised.

Training: a linear layer from zero initialisation, cross-entropy + ``weight_decay / 2 * ||W||^2``.
Two optimisers are implemented:

* ``lbfgs`` (default): full batch (loss and gradient accumulated in 64k-row pieces, so memory stays
  bounded), strong-Wolfe line search; one "epoch" is a round of 10 L-BFGS iterations. The problem
  is convex, so this converges to the regularised optimum, deterministically.
* ``adam``: mini-batches of 256 rows (fewer when an epoch would have < 50 steps), lr 1e-2 multiplied
  by 0.7 after every epoch (a per-epoch decay, so the run that stops after E epochs is exactly the
  prefix of a longer run: epoch selection stays consistent), shuffled by a seeded generator.

Which is faster on CPU (measured on this 2-core machine, 1 thread, other jobs running; phone probe
on an eSpeak corpus, 47.9k training frames, 40 classes, dev accuracy per epoch/round):

=====================  ===================================  =====================================
features               L-BFGS (per round; reached)          Adam (per epoch; plateau after 12)
=====================  ===================================  =====================================
MFCC 39-d              0.34 s; 57.2% after 5 rounds (1.7 s)  0.10-0.22 s; 54-56% (all lr/batch tried)
MFCC +-4 frames 351-d  1.35 s; 62.7% after 5 rounds (6.8 s)  0.26-0.43 s; 62.4% after 11 (4.7 s)
random CPC 256-d       1.5 s; 31.7% after 4 rounds (6 s)     0.35-0.58 s; 31.5-31.9% after 8-11 (5 s)
=====================  ===================================  =====================================

So at these sizes L-BFGS reaches a better optimum in similar time (Adam with a fixed or decaying
learning rate plateaus 1-3 points lower on the ill-conditioned MFCC+delta features) and is the
default. A round costs ~11 passes over the data (measured), an Adam epoch one: for millions of frames
(LibriSpeech-100 scale) ``optimizer="adam"`` is ~4x cheaper per unit of progress.

Model selection (:func:`select_and_fit`): for each weight decay of a small grid, train on the *fit*
part of the train split and record dev accuracy after every epoch (stopping after ``patience`` = 3
epochs without improvement); the (weight decay, epochs) pair
with the best dev accuracy wins (ties: lower dev cross-entropy, then fewer epochs, then larger weight
decay; a small dev set is often classified perfectly after one epoch, e.g. 32 utterances of 16
speakers, and picking the first perfect epoch then stopped the probe undertrained). That snapshot is the
final probe (``refit=True`` instead retrains with those settings on the whole train split, fit + dev,
standardised with its own statistics: one more run); it is evaluated once on the test split. The
test split never influences a choice.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

EVAL_ROWS = 65536


@dataclass
class ProbeData:
    """Inputs ``X`` (rows, dim) float32, targets ``y`` (rows,) int64, optional ``neighbors``
    (rows, width) int64 row indices into ``X`` (examples are the concatenated rows)."""

    X: np.ndarray
    y: np.ndarray
    neighbors: Optional[np.ndarray] = None

    def __post_init__(self):
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise ValueError(f"ProbeData: X {self.X.shape} and y {self.y.shape} do not match")
        if self.neighbors is not None and self.neighbors.shape[0] != self.y.shape[0]:
            raise ValueError("ProbeData: neighbors must have one row per example")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return 1 if self.neighbors is None else int(self.neighbors.shape[1])

    @property
    def in_dim(self) -> int:
        return self.X.shape[1] * self.width

    @staticmethod
    def concat(parts: Sequence["ProbeData"]) -> "ProbeData":
        X = np.concatenate([p.X for p in parts])
        y = np.concatenate([p.y for p in parts])
        if all(p.neighbors is None for p in parts):
            return ProbeData(X, y)
        nbrs, offset = [], 0
        for p in parts:
            nb = p.neighbors if p.neighbors is not None else np.arange(len(p))[:, None]
            nbrs.append(nb + offset)
            offset += p.X.shape[0]
        return ProbeData(X, y, np.concatenate(nbrs))


def context_neighbors(lengths: Sequence[int], context: int) -> Optional[np.ndarray]:
    """Row indices (rows, 2*context+1) of frames t-context..t+context within each utterance of the
    given lengths (frames stacked in order), clamped at utterance edges; None if context == 0."""
    if context <= 0:
        return None
    offsets = np.arange(-context, context + 1)
    out, start = [], 0
    for n in lengths:
        t = np.arange(n)[:, None] + offsets[None, :]
        out.append(start + np.clip(t, 0, max(n - 1, 0)))
        start += n
    return np.concatenate(out) if out else np.zeros((0, 2 * context + 1), np.int64)


@dataclass
class FitConfig:
    """Probe training settings (see the module docstring)."""

    optimizer: str = "lbfgs"  # lbfgs | adam
    lr: float = 1e-2  # adam: initial learning rate
    lr_decay: float = 0.7  # adam: the learning rate is multiplied by this after every epoch
    batch_size: int = 256  # adam: largest mini-batch
    min_steps_per_epoch: int = 50  # adam: smaller batches on small data sets
    max_epochs: int = 10  # epochs (adam) or rounds of lbfgs_iters_per_epoch iterations (lbfgs)
    weight_decays: Tuple[float, ...] = (0.0, 1e-4, 1e-3)
    lbfgs_iters_per_epoch: int = 10
    patience: int = 3  # model selection: stop a run after this many epochs without a better dev score (accuracy, then loss)
    seed: int = 0

    def validate(self) -> "FitConfig":
        if self.optimizer not in ("adam", "lbfgs"):
            raise ValueError(f"optimizer must be adam or lbfgs, got {self.optimizer!r}")
        if self.max_epochs < 1 or not self.weight_decays:
            raise ValueError("max_epochs must be >= 1 and weight_decays non-empty")
        from cpc_speech.settings import check_limits

        check_limits(self, FIT_LIMITS)
        return self


# ranges of every numeric FitConfig field (see cpc_speech.settings.check_limits)
FIT_LIMITS = {"lr": "> 0", "lr_decay": "(0, 1]", "batch_size": ">= 1", "min_steps_per_epoch": ">= 1", "max_epochs": ">= 1",
              "weight_decays": ">= 0", "lbfgs_iters_per_epoch": ">= 1", "patience": ">= 1", "seed": ">= 0"}


class LinearProbe:
    """Standardisation + linear layer; ``predict`` gives class ids."""

    def __init__(self, in_dim: int, n_classes: int, mean: np.ndarray, std: np.ndarray):
        self.mean = torch.from_numpy(mean.astype(np.float32))
        self.std = torch.from_numpy(std.astype(np.float32))
        self.weight = torch.zeros(n_classes, in_dim, requires_grad=True)
        self.bias = torch.zeros(n_classes, requires_grad=True)

    def parameters(self) -> List[torch.Tensor]:
        return [self.weight, self.bias]

    def inputs(self, Xs: torch.Tensor, data: ProbeData, idx, nbr: Optional[torch.Tensor]) -> torch.Tensor:
        """The examples ``idx`` (a row slice: a view without neighbours, or an index tensor)."""
        if nbr is None:
            return Xs[idx]
        rows = nbr[idx]
        return Xs[rows].reshape(rows.shape[0], -1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def standardised(self, data: ProbeData) -> torch.Tensor:
        return (torch.from_numpy(np.ascontiguousarray(data.X, dtype=np.float32)) - self.mean) / self.std

    @torch.no_grad()
    def _logit_blocks(self, data: ProbeData, Xs: Optional[torch.Tensor]):
        Xs = self.standardised(data) if Xs is None else Xs
        nbr = None if data.neighbors is None else torch.from_numpy(data.neighbors)
        for s in range(0, len(data), EVAL_ROWS):
            idx = slice(s, min(len(data), s + EVAL_ROWS))
            yield idx, self.logits(self.inputs(Xs, data, idx, nbr))

    def predict(self, data: ProbeData, Xs: Optional[torch.Tensor] = None) -> np.ndarray:
        out = [logits.argmax(1) for _, logits in self._logit_blocks(data, Xs)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.int64)

    @torch.no_grad()
    def score(self, data: ProbeData, Xs: Optional[torch.Tensor] = None) -> Tuple[float, float]:
        """(accuracy, -mean cross-entropy) on ``data``: larger is better, compared in that order."""
        y = torch.from_numpy(data.y.astype(np.int64))
        correct, loss = 0, 0.0
        for idx, logits in self._logit_blocks(data, Xs):
            correct += int((logits.argmax(1) == y[idx]).sum())
            loss += float(F.cross_entropy(logits, y[idx], reduction="sum"))
        n = max(1, len(data))
        return correct / n, -loss / n


def feature_stats(data: ProbeData) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std (floored at 1e-5) of ``data.X`` (in float64)."""
    X = data.X
    mean = np.zeros(X.shape[1])
    sq = np.zeros(X.shape[1])
    for s in range(0, X.shape[0], EVAL_ROWS):
        block = np.asarray(X[s:s + EVAL_ROWS], dtype=np.float64)
        mean += block.sum(0)
        sq += (block ** 2).sum(0)
    n = max(1, X.shape[0])
    mean /= n
    var = np.maximum(sq / n - mean ** 2, 0.0)
    return mean, np.maximum(np.sqrt(var), 1e-5)


def accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred == y).mean()) if len(y) else float("nan")


def _stalled(scores: List[Tuple[float, float]], patience: int) -> bool:
    """No better (dev accuracy, -dev loss) during the last ``patience`` epochs."""
    return patience > 0 and len(scores) > patience and max(scores[-patience:]) <= max(scores[:-patience])


def effective_batch_size(n: int, cfg: FitConfig) -> int:
    """``cfg.batch_size``, reduced so an epoch has at least ``cfg.min_steps_per_epoch`` steps."""
    return int(max(1, min(cfg.batch_size, -(-n // max(1, cfg.min_steps_per_epoch)))))


def train_probe(
    train: ProbeData,
    n_classes: int,
    weight_decay: float,
    epochs: int,
    cfg: FitConfig,
    dev: Optional[ProbeData] = None,
    keep_best: bool = False,
) -> Tuple[LinearProbe, List[float]]:
    """Train for ``epochs`` epochs; returns the probe and the (dev accuracy, -dev cross-entropy)
    after each epoch (empty without ``dev``). With ``dev``, training stops early after
    ``cfg.patience`` epochs without a better score (higher accuracy, or the same accuracy at a lower
    loss); with ``keep_best`` the returned probe has the weights of the best-scoring epoch (else
    those of the last epoch)."""
    cfg.validate()
    if len(train) == 0:
        raise ValueError("cannot train a probe on an empty train set")
    mean, std = feature_stats(train)
    probe = LinearProbe(train.in_dim, n_classes, mean, std)
    Xs = probe.standardised(train)
    y = torch.from_numpy(train.y.astype(np.int64))
    nbr = None if train.neighbors is None else torch.from_numpy(train.neighbors)
    Xdev = probe.standardised(dev) if dev is not None else None
    history: List[Tuple[float, float]] = []
    n = len(train)
    snapshot: List[Optional[Tuple[torch.Tensor, torch.Tensor]]] = [None]

    def record() -> bool:
        """Append the dev score (snapshotting a new best); True when training should stop."""
        history.append(probe.score(dev, Xdev))
        if keep_best and history[-1] > max(history[:-1], default=(-1.0, -math.inf)):
            snapshot[0] = (probe.weight.detach().clone(), probe.bias.detach().clone())
        return _stalled(history, cfg.patience)

    def penalty() -> torch.Tensor:
        return 0.5 * weight_decay * (probe.weight ** 2).sum()

    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        bs = effective_batch_size(n, cfg)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, bs):
                idx = perm[s:s + bs]
                loss = F.cross_entropy(probe.logits(probe.inputs(Xs, train, idx, nbr)), y[idx])
                if weight_decay:
                    loss = loss + penalty()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            for group in opt.param_groups:
                group["lr"] *= cfg.lr_decay
            if dev is not None and record():
                break
    else:
        opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=cfg.lbfgs_iters_per_epoch,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for s in range(0, n, EVAL_ROWS):
                idx = slice(s, min(n, s + EVAL_ROWS))
                part = F.cross_entropy(probe.logits(probe.inputs(Xs, train, idx, nbr)), y[idx], reduction="sum") / n
                part.backward()
                total += float(part.detach())
            if weight_decay:
                reg = penalty()
                reg.backward()
                total += float(reg.detach())
            return torch.tensor(total)

        for _ in range(epochs):
            opt.step(closure)
            if dev is not None and record():
                break
    if keep_best and snapshot[0] is not None:
        with torch.no_grad():
            probe.weight.copy_(snapshot[0][0])
            probe.bias.copy_(snapshot[0][1])
    return probe, history


@dataclass
class ProbeOutcome:
    """Result of :func:`select_and_fit`."""

    accuracy: float
    predictions: np.ndarray
    best: Dict[str, object]
    dev_curve: Dict[str, List[float]] = field(default_factory=dict)
    seconds: float = 0.0
    probe: Optional[LinearProbe] = None


def select_and_fit(
    fit: ProbeData,
    dev: ProbeData,
    test: ProbeData,
    n_classes: int,
    cfg: Optional[FitConfig] = None,
    refit: bool = False,
) -> ProbeOutcome:
    """Choose (weight decay, epochs) on ``dev``; keep the best dev model (default) or retrain it on
    fit + dev (``refit``, one more run), and evaluate on ``test`` (see the module docstring)."""
    cfg = (cfg or FitConfig()).validate()
    t0 = time.time()
    if len(dev) == 0:
        raise ValueError("the dev split is empty: cannot select probe hyper-parameters")
    best_key, best_probe = None, None
    curves: Dict[str, List[float]] = {}
    for wd in cfg.weight_decays:
        probe, scores = train_probe(fit, n_classes, wd, cfg.max_epochs, cfg, dev, keep_best=True)
        curves[f"{wd:g}"] = [acc for acc, _ in scores]
        ep = max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1  # the snapshot's epoch
        key = (*scores[ep - 1], -ep, wd)
        if best_key is None or key > best_key:
            best_key, best_probe = key, probe
    dev_acc, neg_loss, neg_ep, wd = best_key  # type: ignore[misc]
    epochs = -neg_ep
    if refit:
        final, _ = train_probe(ProbeData.concat([fit, dev]), n_classes, wd, epochs, cfg)
    else:
        final = best_probe
    pred = final.predict(test)
    best = {
        "weight_decay": wd,
        "epochs": epochs,
        "dev_accuracy": dev_acc,
        "dev_loss": -neg_loss,
        "optimizer": cfg.optimizer,
        "lr": cfg.lr if cfg.optimizer == "adam" else 1.0,
        "batch_size": effective_batch_size(len(fit), cfg) if cfg.optimizer == "adam" else None,
        "refit_on_train": refit,
    }
    return ProbeOutcome(accuracy(pred, test.y), pred, best, curves, time.time() - t0, final)


def confusion_matrix(y: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    return cm


def per_class_accuracy(cm: np.ndarray, names: Sequence[str]) -> Dict[str, Optional[float]]:
    """Recall per true class (None for classes absent from the evaluated set)."""
    out: Dict[str, Optional[float]] = {}
    for i, name in enumerate(names):
        total = int(cm[i].sum())
        out[name] = float(cm[i, i] / total) if total else None
    return out
