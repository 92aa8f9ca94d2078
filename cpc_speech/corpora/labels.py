"""The on-disk label formats: phone sets, frame labels, phone transcripts and id lists.

This module is the one reader and writer of each. Common rules: UTF-8 text, one record per line,
fields separated by whitespace; blank lines and lines whose first field starts with ``#`` are
ignored; every problem is a :class:`LabelFileError` naming the file and, where there is one, the
line.

* **Phone set** (``phones.txt``, :class:`PhoneSet`): one phone per line, an integer id and a name,
  either ``<id> <name>`` (the order written here) or ``<name> <id>`` (Kaldi's order). The first
  line fixes the order for the whole file (a first field that is an integer means ``<id> <name>``).
  Ids are integers >= 0, names and ids are unique, gaps in the ids are allowed. By convention id
  :data:`SILENCE_ID` (0) is silence: CTC fine-tuning drops it from its targets, probes treat it like
  any other class.
* **Frame labels** (CPC_audio ``converted_aligned_phones.txt``, :class:`FrameLabels`):
  ``<utt-id> <label> <label> ...`` with one integer label >= 0 per 10 ms frame (label ``t`` covers
  samples ``[160 t, 160 t + 160)`` at 16 kHz), at least one label per utterance.
* **Phone transcripts** (``phone_transcripts.txt``): ``<utt-id> <phone> <phone> ...``; each phone
  is a name of the phone set, or one of its integer ids when it is not a name. A line may hold the
  id alone (an utterance without phones).
* **Id lists** (split files ``train_split.txt``, ``test_split.txt``, :class:`IdList`): the first
  field of each line is an utterance id (the rest of the line is ignored). A list holds at least
  one id.

Utterance ids are unique in every file: a repeated id is an error naming both lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from cpc_speech.atomic import atomic_write_text
from cpc_speech.audio import missing_file

PathLike = Union[str, Path]
SILENCE_ID = 0


class LabelFileError(ValueError):
    """A malformed or inconsistent label file (or label input); the message names the file and line."""


def _records(path: Path, what: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line number, fields)`` of the non-blank, non-comment lines of ``path``."""
    if not path.is_file():
        raise LabelFileError(missing_file(what, path))
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    yield lineno, fields
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"{path}: {what} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _as_int(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        return None


def _check_new_id(path: Path, lineno: int, uid: str, lines: Mapping[str, int], what: str = "utterance") -> None:
    if uid in lines:
        raise LabelFileError(f"{path}: line {lineno}: duplicate {what} {uid!r} (first on line {lines[uid]})")


def collapse_runs(labels: Sequence[int], drop: Optional[int] = None) -> List[int]:
    """Merge runs of equal labels, then remove the label ``drop`` (silence or the CTC blank):
    ``[3, 3, 0, 3]`` with ``drop=0`` gives ``[3, 3]``."""
    arr = np.asarray(labels, dtype=np.int64).reshape(-1)
    if arr.size == 0:
        return []
    starts = np.empty(arr.size, dtype=bool)
    starts[0] = True
    np.not_equal(arr[1:], arr[:-1], out=starts[1:])
    runs = arr[starts]
    return (runs if drop is None else runs[runs != drop]).tolist()


# ------------------------------------------------------------------------------------ phone sets


@dataclass(frozen=True)
class PhoneSet:
    """Phone ids (ascending) and their names, read from ``source``."""

    ids: Tuple[int, ...]
    names: Tuple[str, ...]
    source: str = "<phones>"

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.names):
            raise ValueError("a phone set needs as many names as ids")
        if list(self.ids) != sorted(set(self.ids)):
            raise ValueError("phone set ids must be unique and ascending")

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def read(cls, path: PathLike) -> "PhoneSet":
        """Read a ``phones.txt`` file (rules in the module docstring)."""
        path = Path(path)
        name_of: Dict[int, str] = {}
        id_line: Dict[int, int] = {}
        name_line: Dict[str, int] = {}
        id_first: Optional[bool] = None
        for lineno, fields in _records(path, "phone set"):
            if len(fields) != 2:
                raise LabelFileError(f"{path}: line {lineno}: expected '<id> <name>', got {' '.join(fields)!r}")
            if id_first is None:
                id_first = _as_int(fields[0]) is not None
            pid = _as_int(fields[0] if id_first else fields[1])
            name = fields[1] if id_first else fields[0]
            if pid is None:
                order = "'<id> <name>'" if id_first else "'<name> <id>' (the order of its first line)"
                raise LabelFileError(f"{path}: line {lineno}: expected {order}, got {' '.join(fields)!r}")
            if pid < 0:
                raise LabelFileError(f"{path}: line {lineno}: phone id must be >= 0, got {pid}")
            if pid in id_line:
                raise LabelFileError(f"{path}: line {lineno}: phone id {pid} already defined on line {id_line[pid]}")
            if name in name_line:
                raise LabelFileError(f"{path}: line {lineno}: phone name {name!r} already defined on line {name_line[name]}")
            id_line[pid], name_line[name] = lineno, lineno
            name_of[pid] = name
        if not name_of:
            raise LabelFileError(f"{path}: phone set is empty")
        ids = tuple(sorted(name_of))
        return cls(ids, tuple(name_of[i] for i in ids), source=str(path))

    @classmethod
    def from_names(cls, names: Sequence[str], source: str = "<phones>") -> "PhoneSet":
        """Ids ``0..len(names)-1`` in the order given."""
        return cls(tuple(range(len(names))), tuple(names), source)

    @classmethod
    def from_mapping(cls, name_of: Mapping[int, str], source: str = "<phones>") -> "PhoneSet":
        """From ``{id: name}``."""
        ids = tuple(sorted(int(i) for i in name_of))
        return cls(ids, tuple(name_of[i] for i in ids), source)

    @classmethod
    def numbered(cls, ids: Sequence[int], source: str = "<ids>") -> "PhoneSet":
        """Ids ``0..max(ids)`` (at least silence), each named by its number: for integer-only data."""
        top = max([SILENCE_ID, *(int(i) for i in ids)])
        return cls.from_names([str(i) for i in range(top + 1)], source)

    def write(self, path: PathLike) -> Path:
        """Write ``<id> <name>`` lines (atomically)."""
        return atomic_write_text(path, "".join(f"{i} {n}\n" for i, n in zip(self.ids, self.names)))

    def name_of(self) -> Dict[int, str]:
        return dict(zip(self.ids, self.names))

    def id_of(self) -> Dict[str, int]:
        return dict(zip(self.names, self.ids))

    def indexed_names(self) -> List[str]:
        """Names as a list indexed by id; an error naming the file unless the ids are exactly
        ``0..N-1`` (a dense label set, as the corpus generator writes)."""
        if list(self.ids) != list(range(len(self.ids))):
            gap = next(i for i, pid in enumerate(self.ids) if pid != i)
            raise LabelFileError(f"{self.source}: phone ids must be 0..{len(self.ids) - 1} without gaps (id {gap} is missing)")
        return list(self.names)

    def names_for(self, num_classes: int) -> List[str]:
        """Names of ids ``0..num_classes-1`` (the id itself where the set has no name for it)."""
        name_of = self.name_of()
        return [name_of.get(i, str(i)) for i in range(num_classes)]


# ---------------------------------------------------------------------------------- frame labels


@dataclass(frozen=True)
class PhoneSequence:
    """One utterance's phone ids and where they were read (``"file: line N"``)."""

    id: str
    phones: Tuple[int, ...]
    where: str


@dataclass
class FrameLabels:
    """Per-utterance frame labels read from ``path``: ``labels[id]`` is ``(frames,)`` int64, one
    label per 10 ms; ``lines[id]`` is its 1-based line number."""

    path: Path
    labels: Dict[str, np.ndarray]
    lines: Dict[str, int]

    def __contains__(self, uid: str) -> bool:
        return uid in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """``max label + 1``."""
        return int(max((int(v.max()) for v in self.labels.values() if v.size), default=-1)) + 1

    def where(self, uid: str) -> str:
        return f"{self.path}: line {self.lines[uid]}"

    def for_frames(self, uid: str, frames: int, source: str = "features") -> np.ndarray:
        """Labels of ``uid`` matched to ``frames`` feature frames.

        A difference of one frame (rounding of the last partial 10 ms) is absorbed by trimming the
        longer of the two; the caller trims the features to ``len(result)``. A larger difference is
        an error naming the file and line.
        """
        if uid not in self.labels:
            raise LabelFileError(f"{self.path}: no alignment for utterance {uid!r}")
        lab = self.labels[uid]
        if abs(lab.size - frames) > 1:
            raise LabelFileError(
                f"{self.where(uid)}: utterance {uid!r} has {lab.size} labels but its {source} have {frames} "
                f"frames (difference {lab.size - frames:+d}; at most one frame is tolerated). Is the "
                "alignment for the same audio, at 10 ms per label and 16 kHz?"
            )
        return lab[: min(lab.size, frames)]

    def phone_sequences(self, silence: int = SILENCE_ID) -> Dict[str, PhoneSequence]:
        """Each utterance's phones: runs of equal labels collapsed, then ``silence`` dropped (so
        ``3 3 0 3`` gives two ``3``)."""
        return {
            uid: PhoneSequence(uid, tuple(collapse_runs(lab, drop=silence)), self.where(uid))
            for uid, lab in self.labels.items()
        }


def read_frame_labels(path: PathLike) -> FrameLabels:
    """Read a frame-label (alignment) file (rules in the module docstring)."""
    path = Path(path)
    labels: Dict[str, np.ndarray] = {}
    lines: Dict[str, int] = {}
    for lineno, fields in _records(path, "alignment file"):
        uid = fields[0]
        _check_new_id(path, lineno, uid, lines)
        try:
            lab = np.array([int(x) for x in fields[1:]], dtype=np.int64)
        except ValueError:
            bad = next(x for x in fields[1:] if _as_int(x) is None)
            raise LabelFileError(f"{path}: line {lineno}: label {bad!r} of utterance {uid!r} is not an integer") from None
        if lab.size == 0:
            raise LabelFileError(f"{path}: line {lineno}: utterance {uid!r} has no labels")
        if lab.min() < 0:
            raise LabelFileError(f"{path}: line {lineno}: negative label {int(lab.min())} in utterance {uid!r}")
        labels[uid] = lab
        lines[uid] = lineno
    if not labels:
        raise LabelFileError(f"{path}: alignment file has no utterances")
    return FrameLabels(path, labels, lines)


def write_frame_labels(path: PathLike, labels: Mapping[str, Sequence[int]]) -> Path:
    """Write ``<utt-id> <label> ...`` lines in the order of ``labels`` (atomically)."""
    return atomic_write_text(path, "".join(f"{uid} {' '.join(str(int(v)) for v in lab)}\n" for uid, lab in labels.items()))


# ------------------------------------------------------------------------------ phone transcripts


def read_phone_transcripts(path: PathLike, phones: PhoneSet) -> Dict[str, PhoneSequence]:
    """Read ``<utt-id> <phone> ...`` lines into phone ids of ``phones`` (silence kept).

    Unknown phones and repeated utterance ids are errors naming the file and line.
    """
    path = Path(path)
    by_name = phones.id_of()
    known = set(phones.ids)
    out: Dict[str, PhoneSequence] = {}
    lines: Dict[str, int] = {}
    for lineno, fields in _records(path, "phone transcripts"):
        uid = fields[0]
        _check_new_id(path, lineno, uid, lines)
        ids: List[int] = []
        for tok in fields[1:]:
            pid = by_name.get(tok)
            if pid is None:
                pid = _as_int(tok)
            if pid is None or pid not in known:
                raise LabelFileError(
                    f"{path}: line {lineno}: utterance {uid!r}: unknown phone {tok!r} "
                    f"(not in the phone set {phones.source}, which has {len(phones)} phones)"
                )
            ids.append(pid)
        lines[uid] = lineno
        out[uid] = PhoneSequence(uid, tuple(ids), f"{path}: line {lineno}")
    if not out:
        raise LabelFileError(f"{path}: no transcripts")
    return out


def transcript_phone_ids(path: PathLike) -> List[int]:
    """Every phone of an integer-only transcript file, as ids (to number a phone set from them);
    a phone name is an error asking for the phone set."""
    path = Path(path)
    ids: List[int] = []
    for lineno, fields in _records(path, "phone transcripts"):
        for tok in fields[1:]:
            pid = _as_int(tok)
            if pid is None:
                raise LabelFileError(
                    f"{path}: line {lineno}: phone {tok!r} is a name; pass the phone set (phones.txt, '<id> <name>' lines) with it"
                )
            ids.append(pid)
    return ids


# -------------------------------------------------------------------------------------- id lists


@dataclass
class IdList:
    """Utterance ids of a list file, in file order, with their 1-based line numbers."""

    path: Path
    ids: List[str]
    lines: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, uid: str) -> bool:
        return uid in self.lines

    def entries(self) -> List[Tuple[str, int]]:
        """``(id, line number)`` pairs in file order."""
        return [(u, self.lines[u]) for u in self.ids]

    @classmethod
    def from_ids(cls, ids: Sequence[str], name: str = "split") -> "IdList":
        """An in-memory list (``path`` is ``<name>``, lines count from 1); duplicates are an error."""
        path = Path(f"<{name}>")
        lines: Dict[str, int] = {}
        for lineno, uid in enumerate(ids, start=1):
            _check_new_id(path, lineno, uid, lines, "id")
            lines[uid] = lineno
        if not lines:
            raise LabelFileError(f"{name} is empty (no utterance ids)")
        return cls(path, list(ids), lines)


def read_id_list(path: PathLike, name: str = "split") -> IdList:
    """Read an id list (split file); ``name`` says what it is in messages (``"train split"``)."""
    path = Path(path)
    ids: List[str] = []
    lines: Dict[str, int] = {}
    for lineno, fields in _records(path, f"{name} file"):
        uid = fields[0]
        _check_new_id(path, lineno, uid, lines, "id")
        lines[uid] = lineno
        ids.append(uid)
    if not ids:
        raise LabelFileError(f"{path}: {name} is empty (no utterance ids)")
    return IdList(path, ids, lines)


def write_id_list(path: PathLike, ids: Sequence[str]) -> Path:
    """Write one id per line (atomically)."""
    return atomic_write_text(path, "".join(f"{u}\n" for u in ids))
