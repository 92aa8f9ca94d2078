"""Fixed-length training windows and batch samplers matching the negative-sampling modes.

A window is ``(row, offset)``: ``window_samples`` samples of utterance ``rows[row]`` from 16 kHz
sample ``offset``. Every epoch each utterance of ``n`` samples gives ``n // window`` windows at a
fresh random phase. Utterances shorter than one window are skipped (counted and reported once).

Batch samplers (``DataConfig.sampler``):

* ``uniform``: windows shuffled over the whole corpus;
* ``same_speaker``: ``batch_size // windows_per_group`` speakers x ``windows_per_group`` windows each;
* ``same_utterance``: groups of ``windows_per_group`` windows (random offsets, may overlap) of one utterance.

Batches are a deterministic function of (seed, epoch); in distributed runs every rank builds the
same global list and takes every ``world_size``-th batch, so ranks see disjoint data. Audio is read
lazily in DataLoader workers: memory does not grow with the corpus.

With ``data.augment`` the workers also augment each window (:mod:`cpc_speech.augment`) from a
generator seeded by (seed, epoch, global batch index, position in the batch), so a resumed run
augments exactly as an uninterrupted one; with ``apply_to: past`` or ``future`` a batch carries
the clean window too (``Batch.target_wav``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cpc_speech.audio import SAMPLE_RATE, AudioError, SegmentPastEndError, read_audio
from cpc_speech.augment import Augmenter
from cpc_speech.config import DataConfig
from cpc_speech.corpora.manifest import Utterance

log = logging.getLogger(__name__)
Window = Tuple[int, int]  # (row index, start offset in 16 kHz samples)


@dataclass
class Batch:
    """wav (batch, samples) float32 at 16 kHz: the context network's input; speaker and utterance
    (batch,) int64 ids; windows: the (row, offset) of each window; target_wav (batch, samples): the
    window the predicted frames come from when it differs from ``wav`` (augmentation of the past or
    of the future only), else None."""

    wav: torch.Tensor
    speaker: torch.Tensor
    utterance: torch.Tensor
    windows: List[Window]
    dropped: int = 0  # windows of this batch left out (unreadable audio, lone speaker)
    unreadable: List[Tuple[int, str]] = field(default_factory=list)  # (row, problem) per unreadable window
    lone: int = 0  # same_speaker batches: windows left without a partner (its audio was unreadable)
    target_wav: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.wav.shape[0])

    def _with(self, wav, speaker, utterance, target_wav=None) -> "Batch":
        return Batch(wav, speaker, utterance, self.windows, self.dropped, self.unreadable, self.lone, target_wav)

    def to(self, device, non_blocking: bool = True) -> "Batch":
        return self._with(
            self.wav.to(device, non_blocking=non_blocking),
            self.speaker.to(device, non_blocking=non_blocking),
            self.utterance.to(device, non_blocking=non_blocking),
            None if self.target_wav is None else self.target_wav.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        return self._with(self.wav.pin_memory(), self.speaker.pin_memory(), self.utterance.pin_memory(),
                          None if self.target_wav is None else self.target_wav.pin_memory())


@dataclass(frozen=True)
class Unreadable:
    """A window that could not be read: its row and the problem (naming the file)."""

    row: int
    problem: str


class WindowBatchSampler:
    """Yields lists of windows (one list per batch). ``set_epoch`` picks the epoch's shuffle;
    ``start_batch`` skips the first batches of the epoch (for exact resume)."""

    def __init__(
        self,
        rows: Sequence[Utterance],
        cfg: DataConfig,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        even: bool = True,
    ):
        self.cfg, self.seed, self.rank, self.world_size, self.shuffle = cfg, seed, rank, world_size, shuffle
        self.even = even
        self.augment = False  # items carry an augmentation seed (set by make_loader)
        self.lengths = np.array([r.num_samples_16k for r in rows], dtype=np.int64)
        self.usable = np.nonzero(self.lengths >= cfg.window_samples)[0]
        self.skipped_short = len(rows) - len(self.usable)
        if len(self.usable) == 0:
            raise ValueError(
                f"no utterance is at least one window long ({cfg.window_samples} samples = "
                f"{cfg.window_samples / SAMPLE_RATE:.2f} s); lower data.window_samples"
            )
        speakers = sorted({r.speaker for r in rows})
        self.speaker_index = {s: i for i, s in enumerate(speakers)}
        self.speaker_ids = np.array([self.speaker_index[r.speaker] for r in rows], dtype=np.int64)
        self.epoch = 0
        self.start_batch = 0
        if cfg.sampler == "same_speaker":
            per_speaker = np.bincount(self.speaker_ids[self.usable], minlength=len(speakers))
            if (per_speaker > 0).sum() < 1:
                raise ValueError("same_speaker batches need at least one speaker")
        if (len(self) if even else len(self.global_batches(0))) == 0:
            raise ValueError(
                f"the corpus is too small for one batch of {cfg.batch_size} windows per rank "
                f"({len(self.usable)} usable utterances, {world_size} rank(s))"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, 7919])

    def _windows(self, rng: np.random.Generator) -> List[Window]:
        w = self.cfg.window_samples
        out: List[Window] = []
        for row in self.usable:
            n = int(self.lengths[row])
            count = n // w
            phase = int(rng.integers(0, n - count * w + 1)) if self.shuffle else 0
            out.extend((int(row), phase + i * w) for i in range(count))
        return out

    def global_batches(self, epoch: int) -> List[List[Window]]:
        """All batches of an epoch (before splitting across ranks)."""
        rng = self._rng(epoch)
        bs, per = self.cfg.batch_size, self.cfg.windows_per_group
        kind = self.cfg.sampler
        if kind == "uniform":
            windows = self._windows(rng)
            order = rng.permutation(len(windows)) if self.shuffle else np.arange(len(windows))
            windows = [windows[i] for i in order]
            batches = [windows[i : i + bs] for i in range(0, len(windows) - bs + 1, bs)]
        else:
            if kind == "same_speaker":
                windows = self._windows(rng)
                by_key: Dict[int, List[Window]] = {}
                for win in windows:
                    by_key.setdefault(int(self.speaker_ids[win[0]]), []).append(win)
            else:  # same_utterance: groups of `per` random windows of one utterance
                w = self.cfg.window_samples
                by_key = {}
                for row in self.usable:
                    n = int(self.lengths[row])
                    reps = max(1, n // (w * per))
                    by_key[int(row)] = [(int(row), int(o)) for o in rng.integers(0, n - w + 1, size=reps * per)]
            groups: List[List[Window]] = []
            for key in sorted(by_key):
                wins = by_key[key]
                order = rng.permutation(len(wins)) if self.shuffle else np.arange(len(wins))
                wins = [wins[i] for i in order]
                groups.extend(wins[i : i + per] for i in range(0, len(wins) - per + 1, per))
            order = rng.permutation(len(groups)) if self.shuffle else np.arange(len(groups))
            groups = [groups[i] for i in order]
            g = bs // per
            batches = [sum(groups[i : i + g], []) for i in range(0, len(groups) - g + 1, g)]
        if not self.even:
            return batches
        usable = len(batches) - len(batches) % self.world_size
        return batches[:usable]

    def __iter__(self) -> Iterator[list]:
        batches = self.global_batches(self.epoch)[self.rank :: self.world_size]
        for i in range(self.start_batch, len(batches)):
            if not self.augment:
                yield batches[i]
                continue
            index = self.rank + i * self.world_size  # the batch's index in the epoch's global list
            yield [(row, offset, (self.seed, self.epoch, index, j)) for j, (row, offset) in enumerate(batches[i])]

    def __len__(self) -> int:
        """Batches of this rank per epoch."""
        return len(self.global_batches(0)[self.rank :: self.world_size])


class WindowDataset(torch.utils.data.Dataset):
    """Reads one window per item. Item = (row, offset) -> (wav (samples,) float32, row, offset), or
    :class:`Unreadable` when the file cannot be decoded or ends before the window does (the
    manifest's ``num_samples`` is wrong). Workers do not warn: the training loop warns once per file.
    With an ``augmenter``, item = (row, offset, seed) -> (augmented or clean wav, row, offset[, the
    other one]) as ``apply_to`` says (see :class:`Batch`)."""

    def __init__(self, rows: Sequence[Utterance], window_samples: int, cache_mb: int = 0,
                 augmenter: Optional[Augmenter] = None, apply_to: str = "past"):
        self.rows = list(rows)
        self.window = window_samples
        self.augmenter = augmenter if augmenter is not None and augmenter.enabled else None
        self.apply_to = apply_to
        self.cache_bytes = cache_mb * 2**20
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._cached = 0
        self._bad: Dict[int, str] = {}  # row -> problem

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, row: int, offset: int, length: Optional[int] = None) -> np.ndarray:
        r = self.rows[row]
        length = length or self.window
        if self.cache_bytes and r.sample_rate != SAMPLE_RATE:  # whole-file decode + resample: keep it
            wav = self._cache.get(row)
            if wav is None:
                wav = read_audio(r.path)
                self._cache[row] = wav
                self._cached += wav.nbytes
                while self._cached > self.cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= old.nbytes
            else:
                self._cache.move_to_end(row)
            return wav[offset : offset + length]
        return read_audio(r.path, start=offset, stop=offset + length)

    def _other(self, row: int, rng: np.random.Generator):
        """For the ``mix`` transform: n samples of another utterance (None when unreadable)."""
        def read(n: int) -> Optional[np.ndarray]:
            others = len(self.rows) - 1
            if others < 1:
                return None
            pick = int(rng.integers(0, others))
            pick += pick >= row
            size = self.rows[pick].num_samples_16k
            start = int(rng.integers(0, max(1, size - n + 1)))
            try:
                return self._read(pick, start, n)
            except AudioError:
                return None
        return read

    def __getitem__(self, item):
        row, offset = item[0], item[1]
        if row in self._bad:
            return Unreadable(row, self._bad[row])
        augmenting = self.augmenter is not None and len(item) > 2
        try:
            wav = self._read(row, offset)
        except SegmentPastEndError:
            wav = np.zeros(0, dtype=np.float32)
        except AudioError as exc:
            self._bad[row] = str(exc)
            return Unreadable(row, str(exc))
        if len(wav) < self.window:  # the manifest said longer than the decoded audio: no zero padding
            r = self.rows[row]
            ends = f"at sample {offset + len(wav)}" if len(wav) else f"before sample {offset}"
            problem = (f"{r.path}: the manifest says {r.num_samples} samples at {r.sample_rate} Hz but the audio ends {ends} "
                       f"(16 kHz); its windows are skipped (rebuild the manifest with cpc-speech prepare)")
            self._bad[row] = problem
            return Unreadable(row, problem)
        clean = torch.from_numpy(np.ascontiguousarray(wav[: self.window]))
        if not augmenting:
            return clean, row, offset
        extra = min(self.augmenter.read_length(), self.rows[row].num_samples_16k - offset) - self.window
        if extra > 0:  # the samples after the window that a speed-up pulls in, where the file has them
            try:
                wav = np.concatenate([wav[: self.window], self._read(row, offset + self.window, extra)])
            except AudioError:
                pass  # the window itself was read: augment it without the margin
        rng = np.random.default_rng(list(item[2]))
        augmented = torch.from_numpy(self.augmenter(wav, rng, other=self._other(row, rng)))
        if self.apply_to == "both":
            return augmented, row, offset
        if self.apply_to == "past":
            return augmented, row, offset, clean
        return clean, row, offset, augmented


class Collate:
    """Stacks windows into a :class:`Batch`, dropping unreadable ones (and, for speaker-grouped
    batches, windows left without another window of their speaker)."""

    def __init__(self, speaker_ids: np.ndarray, need_pairs: bool = False, window_samples: int = 0):
        self.speaker_ids = speaker_ids
        self.need_pairs = need_pairs
        self.window = window_samples

    def __call__(self, items) -> Batch:
        """A batch (of 0 windows when none is usable; ``unreadable`` and ``lone`` say why)."""
        asked = len(items)
        unreadable = [(it.row, it.problem) for it in items if isinstance(it, Unreadable)]
        items = [it for it in items if not isinstance(it, Unreadable)]
        lone = 0
        if self.need_pairs:
            spk = [int(self.speaker_ids[it[1]]) for it in items]
            kept = [it for it, s in zip(items, spk) if spk.count(s) > 1]
            lone, items = len(items) - len(kept), kept
        if items:
            wav = torch.stack([it[0] for it in items])
        else:
            wav = torch.zeros(0, self.window)
        rows = torch.tensor([it[1] for it in items], dtype=torch.long)
        target = torch.stack([it[3] for it in items]) if items and len(items[0]) > 3 else None
        return Batch(wav, torch.from_numpy(self.speaker_ids[rows.numpy()]), rows, [(it[1], it[2]) for it in items],
                     asked - len(items), unreadable, lone, target)


def make_loader(
    rows: Sequence[Utterance],
    cfg: DataConfig,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
    pin_memory: bool = False,
    num_workers: Optional[int] = None,
    augment: bool = True,
    even: bool = True,
) -> Tuple[torch.utils.data.DataLoader, WindowBatchSampler]:
    """A DataLoader of :class:`Batch` (of 0 windows when every window was unusable) and its sampler;
    ``augment=False`` ignores ``cfg.augment``, ``even=False`` lets ranks get unequal numbers of
    batches, even none (both for validation)."""
    sampler = WindowBatchSampler(rows, cfg, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle, even=even)
    augmenter = Augmenter(cfg.augment.transforms, cfg.window_samples) if augment else None
    sampler.augment = augmenter is not None and augmenter.enabled
    dataset = WindowDataset(rows, cfg.window_samples, cfg.cache_mb, augmenter, cfg.augment.apply_to)
    workers = cfg.num_workers if num_workers is None else num_workers
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=Collate(sampler.speaker_ids, need_pairs=cfg.sampler == "same_speaker", window_samples=cfg.window_samples),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )
    return loader, sampler
