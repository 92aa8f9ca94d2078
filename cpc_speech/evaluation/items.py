"""ABX item files (the Libri-light / ZeroSpeech 2021 ``.item`` format): reading, writing, and
building one from frame-level phone alignments.

Format: one header line (not interpreted), then one line per item, seven whitespace-separated
fields::

    #file onset offset #phone prev-phone next-phone speaker
    1272-128104-0000 0.3200 0.4100 AH S T 1272

``file`` is the utterance id (the feature file ``<file>.npy``), ``onset``/``offset`` are in seconds,
``phone`` is the central phone, ``prev-phone``/``next-phone`` its context, ``speaker`` the speaker.
Every error is an :class:`ItemError` naming the file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from cpc_speech.types import PathLike

HEADER = "#file onset offset #phone prev-phone next-phone speaker"
FRAME_SECONDS = 0.01


class ItemError(ValueError):
    """A malformed item file; the message names the file and line."""


@dataclass
class ItemFile:
    """The items of one ``.item`` file, as parallel lists in file order (``lines``: 1-based)."""

    path: Path
    files: List[str]
    onsets: np.ndarray  # (items,) float64 seconds
    offsets: np.ndarray  # (items,) float64 seconds
    phones: List[str]
    prev: List[str]
    next: List[str]
    speakers: List[str]
    lines: List[int]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def contexts(self) -> List[str]:
        """``prev+next`` per item: the reference scorer's context key."""
        return [f"{p}+{n}" for p, n in zip(self.prev, self.next)]


def read_item_file(path: PathLike) -> ItemFile:
    """Read an item file (format in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ItemError(f"item file not found: {path}")
    cols: List[List[str]] = [[] for _ in range(7)]
    times: List[List[float]] = [[], []]
    lines: List[int] = []
    with open(path, encoding="utf-8") as f:
        f.readline()  # header
        for lineno, line in enumerate(f, start=2):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 7:
                raise ItemError(f"{path}: line {lineno}: expected 7 fields (#file onset offset #phone prev-phone "
                                f"next-phone speaker), got {len(parts)}")
            try:
                onset, offset = float(parts[1]), float(parts[2])
            except ValueError:
                raise ItemError(f"{path}: line {lineno}: onset and offset must be numbers (seconds), "
                                f"got {parts[1]!r} {parts[2]!r}") from None
            if not (np.isfinite(onset) and np.isfinite(offset)) or onset < 0 or offset <= onset:
                raise ItemError(f"{path}: line {lineno}: need 0 <= onset < offset, got {onset} {offset}")
            for c, v in zip(cols, parts):
                c.append(v)
            times[0].append(onset)
            times[1].append(offset)
            lines.append(lineno)
    if not lines:
        raise ItemError(f"{path}: item file has no items")
    return ItemFile(path, cols[0], np.array(times[0]), np.array(times[1]), cols[3], cols[4], cols[5], cols[6], lines)


def format_item_file(files: Sequence[str], onsets: Sequence[float], offsets: Sequence[float], phones: Sequence[str],
                     prev: Sequence[str], nxt: Sequence[str], speakers: Sequence[str]) -> str:
    """The text of an item file (header + one line per item; times with 4 decimals)."""
    out = [HEADER + "\n"]
    for row in zip(files, onsets, offsets, phones, prev, nxt, speakers):
        fields = [str(row[0]), f"{row[1]:.4f}", f"{row[2]:.4f}"] + [str(v) for v in row[3:]]
        bad = [v for v in fields if not v or any(ch.isspace() for ch in v)]
        if bad:
            raise ItemError(f"item field {bad[0]!r} is empty or contains white space")
        out.append(" ".join(fields) + "\n")
    return "".join(out)


def items_from_alignments(
    labels: Mapping[str, np.ndarray],
    speakers: Mapping[str, str],
    names: Mapping[int, str],
    ids: Optional[Iterable[str]] = None,
    silence: Sequence[str] = ("SIL", "sil", "SPN", "spn"),
    frame_seconds: float = FRAME_SECONDS,
) -> str:
    """Item-file text from frame labels (one integer per 10 ms frame, as in
    ``converted_aligned_phones.txt``): one item per run of equal labels whose phone is not a
    silence and that has a neighbour on both sides (the context may be a silence). Onset and offset
    are the run's frame boundaries (``start * frame_seconds``, ``end * frame_seconds``), so that
    frame ``t`` of a run has its centre inside ``[onset, offset)``."""
    files, on, off, ph, pv, nx, spk = [], [], [], [], [], [], []
    silent = set(silence)
    for uid in (ids if ids is not None else labels):
        lab = np.asarray(labels[uid])
        if lab.size == 0:
            continue
        change = np.flatnonzero(np.diff(lab)) + 1
        starts = np.concatenate([[0], change])
        ends = np.concatenate([change, [lab.size]])
        run_names = [names.get(int(lab[s]), str(int(lab[s]))) for s in starts]
        for r in range(1, len(starts) - 1):
            if run_names[r] in silent:
                continue
            files.append(uid)
            on.append(starts[r] * frame_seconds)
            off.append(ends[r] * frame_seconds)
            ph.append(run_names[r])
            pv.append(run_names[r - 1])
            nx.append(run_names[r + 1])
            spk.append(speakers[uid])
    return format_item_file(files, on, off, ph, pv, nx, spk)


def frame_ranges(onsets: np.ndarray, offsets: np.ndarray, num_frames: np.ndarray, rule: str = "centre",
                 frame_seconds: float = FRAME_SECONDS) -> np.ndarray:
    """Feature frames ``[start, end)`` of each item, clipped to the file's ``num_frames``: (items, 2).

    ``rule="centre"``: the frames whose centre ``(t + 0.5) * frame_seconds`` lies in ``[onset,
    offset)``. ``rule="libri-light"``: the reference scorer's rule, ``start = ceil(onset / step -
    0.5)``, ``end = floor(offset / step - 0.5)``, which also starts at the first centre at or after
    the onset but ends one frame earlier whenever ``offset / step - 0.5`` is not an integer.
    """
    step = 1.0 / frame_seconds
    start = np.maximum(0, np.ceil(step * onsets - 0.5)).astype(np.int64)
    if rule == "centre":
        end = np.ceil(step * offsets - 0.5).astype(np.int64)
    elif rule == "libri-light":
        end = np.floor(step * offsets - 0.5).astype(np.int64)
    else:
        raise ValueError(f"frame rule must be 'centre' or 'libri-light', got {rule!r}")
    end = np.minimum(end, num_frames)
    return np.stack([start, end], axis=1)


def speakers_of(rows: Iterable) -> Dict[str, str]:
    """{utterance id: speaker} of manifest rows."""
    return {r.id: r.speaker for r in rows}
