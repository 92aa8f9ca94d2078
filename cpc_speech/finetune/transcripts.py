"""Phone inventories and phone transcripts (or frame alignments) for CTC fine-tuning.

Files:

* inventory ``phones.txt``: one ``<id> <name>`` per line; id 0 is silence. Blank lines and ``#``
  comments are ignored.
* transcripts: one ``<utt-id> <phone> <phone> ...`` per line; phones are inventory names, or integer
  ids of the inventory. Silence (id 0) is dropped from the label sequence.
* alignments (CPC_audio ``converted_aligned_phones.txt`` format): ``<utt-id>`` then one integer
  phone id per 10 ms frame. The label sequence is the frames with runs of equal ids collapsed,
  then silence dropped (so ``3 3 0 3`` gives two ``3`` labels).

CTC output classes are the inventory phones except silence, in id order (class ``k`` is
``inventory.class_names[k]``), and the blank is the extra last class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from cpc_speech.audio import missing_file

SILENCE_ID = 0
PathLike = Union[str, Path]


class TranscriptError(ValueError):
    """A malformed inventory, transcript or alignment file; the message names the file and line."""


@dataclass(frozen=True)
class PhoneInventory:
    """Phone ids and names (sorted by id); ``silence`` is never a CTC target."""

    ids: Tuple[int, ...]
    names: Tuple[str, ...]
    silence: int = SILENCE_ID
    source: str = "<inventory>"

    def __post_init__(self):
        if len(self.ids) != len(self.names):
            raise ValueError("ids and names need equal lengths")

    @property
    def class_ids(self) -> Tuple[int, ...]:
        """Inventory ids of the CTC classes (silence removed), in class order."""
        return tuple(i for i in self.ids if i != self.silence)

    @property
    def class_names(self) -> List[str]:
        return [n for i, n in zip(self.ids, self.names) if i != self.silence]

    @property
    def blank(self) -> int:
        """Class index of the CTC blank (after the last phone class)."""
        return len(self.class_ids)

    @property
    def num_classes(self) -> int:
        """Phone classes + blank."""
        return len(self.class_ids) + 1

    def class_of_id(self) -> Dict[int, int]:
        return {pid: k for k, pid in enumerate(self.class_ids)}

    def id_of_name(self) -> Dict[str, int]:
        return dict(zip(self.names, self.ids))


def read_phones(path: PathLike) -> PhoneInventory:
    """Read a ``<id> <name>`` inventory file."""
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(f"phone inventory not found: {path}")
    ids: List[int] = []
    names: List[str] = []
    seen_names: Dict[str, int] = {}
    seen_ids: Dict[int, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise TranscriptError(f"{path}: line {lineno}: expected '<id> <name>', got {text!r}")
        try:
            pid = int(parts[0])
        except ValueError:
            raise TranscriptError(f"{path}: line {lineno}: phone id must be an integer, got {parts[0]!r}") from None
        if pid < 0:
            raise TranscriptError(f"{path}: line {lineno}: phone id must be >= 0, got {pid}")
        name = parts[1]
        if pid in seen_ids:
            raise TranscriptError(f"{path}: line {lineno}: phone id {pid} already defined on line {seen_ids[pid]}")
        if name in seen_names:
            raise TranscriptError(f"{path}: line {lineno}: phone name {name!r} already defined on line {seen_names[name]}")
        seen_ids[pid], seen_names[name] = lineno, lineno
        ids.append(pid)
        names.append(name)
    if not ids:
        raise TranscriptError(f"{path}: phone inventory is empty")
    order = sorted(range(len(ids)), key=lambda k: ids[k])
    inv = PhoneInventory(tuple(ids[k] for k in order), tuple(names[k] for k in order), source=str(path))
    if not inv.class_ids:
        raise TranscriptError(f"{path}: phone inventory holds only silence (id {SILENCE_ID})")
    return inv


def inventory_from_ids(ids: Sequence[int], source: str = "<ids>") -> PhoneInventory:
    """An inventory ``0..max(ids)`` named by the ids themselves (for integer-only data)."""
    top = max([SILENCE_ID, *ids])
    return PhoneInventory(tuple(range(top + 1)), tuple(str(i) for i in range(top + 1)), source=source)


@dataclass(frozen=True)
class Transcript:
    """One utterance's CTC target: class indices (silence removed) and where it was read."""

    id: str
    labels: Tuple[int, ...]
    where: str  # "file: line N"


def _iter_lines(path: Path):
    if not path.is_file():
        raise TranscriptError(missing_file("file", path))
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            yield lineno, text.split()


def read_transcripts(path: PathLike, inventory: PhoneInventory) -> Dict[str, Transcript]:
    """Read ``<utt-id> <phone> ...`` lines into class-index labels.

    Tokens are inventory names, or integer inventory ids when they are not names. Unknown phones,
    duplicate ids and lines without an id are errors naming the file and line.
    """
    path = Path(path)
    by_name = inventory.id_of_name()
    known_ids = set(inventory.ids)
    cls = inventory.class_of_id()
    out: Dict[str, Transcript] = {}
    for lineno, parts in _iter_lines(path):
        uid, tokens = parts[0], parts[1:]
        if uid in out:
            raise TranscriptError(f"{path}: line {lineno}: duplicate utterance id {uid!r} (first on {out[uid].where})")
        labels: List[int] = []
        for tok in tokens:
            pid = by_name.get(tok)
            if pid is None:
                try:
                    pid = int(tok)
                except ValueError:
                    pid = None
                if pid is not None and pid not in known_ids:
                    pid = None
            if pid is None:
                raise TranscriptError(
                    f"{path}: line {lineno}: utterance {uid!r}: unknown phone {tok!r} "
                    f"(not in the inventory {inventory.source}, which has {len(inventory.ids)} phones)"
                )
            if pid != inventory.silence:
                labels.append(cls[pid])
        out[uid] = Transcript(uid, tuple(labels), f"{path}: line {lineno}")
    if not out:
        raise TranscriptError(f"{path}: no transcripts")
    return out


def alignment_to_ids(frames: Sequence[int], silence: int = SILENCE_ID) -> List[int]:
    """Frame labels -> phone sequence: collapse runs of equal ids, then drop silence."""
    out: List[int] = []
    last = None
    for f in frames:
        if f != last and f != silence:
            out.append(f)
        last = f
    return out


def read_alignment_ids(path: PathLike) -> Dict[str, Tuple[List[int], int]]:
    """Raw alignment file: ``{utt_id: (frame_ids, line)}``."""
    path = Path(path)
    out: Dict[str, Tuple[List[int], int]] = {}
    for lineno, parts in _iter_lines(path):
        uid = parts[0]
        if uid in out:
            raise TranscriptError(f"{path}: line {lineno}: duplicate utterance id {uid!r} (first on line {out[uid][1]})")
        try:
            frames = [int(t) for t in parts[1:]]
        except ValueError:
            bad = next(t for t in parts[1:] if not t.lstrip("-").isdigit())
            raise TranscriptError(f"{path}: line {lineno}: utterance {uid!r}: frame label {bad!r} is not an integer") from None
        out[uid] = (frames, lineno)
    if not out:
        raise TranscriptError(f"{path}: no alignments")
    return out


def read_alignments(path: PathLike, inventory: Optional[PhoneInventory] = None) -> Tuple[Dict[str, Transcript], PhoneInventory]:
    """Transcripts derived from a frame-alignment file.

    Without an ``inventory`` one is made from the ids (``0..max id``, named by their numbers).
    Returns ``(transcripts, inventory)``.
    """
    path = Path(path)
    raw = read_alignment_ids(path)
    if inventory is None:
        inventory = inventory_from_ids([i for frames, _ in raw.values() for i in frames], source=f"ids of {path}")
    known = set(inventory.ids)
    cls = inventory.class_of_id()
    out: Dict[str, Transcript] = {}
    for uid, (frames, lineno) in raw.items():
        ids = alignment_to_ids(frames, inventory.silence)
        for pid in ids:
            if pid not in known:
                raise TranscriptError(
                    f"{path}: line {lineno}: utterance {uid!r}: unknown phone id {pid} (not in the inventory {inventory.source})"
                )
        out[uid] = Transcript(uid, tuple(cls[p] for p in ids), f"{path}: line {lineno}")
    return out, inventory


def load_targets(
    phones: Optional[PathLike] = None,
    transcripts: Optional[PathLike] = None,
    alignments: Optional[PathLike] = None,
) -> Tuple[Dict[str, Transcript], PhoneInventory]:
    """Read transcripts (needs ``phones`` unless every token is an integer id) or alignments."""
    if (transcripts is None) == (alignments is None):
        raise TranscriptError("give exactly one of transcripts or alignments")
    inventory = read_phones(phones) if phones is not None else None
    if alignments is not None:
        return read_alignments(alignments, inventory)
    if inventory is None:
        # integer-only transcripts: inventory from the ids used
        ids: List[int] = []
        path = Path(transcripts)
        for lineno, parts in _iter_lines(path):
            for tok in parts[1:]:
                try:
                    ids.append(int(tok))
                except ValueError:
                    raise TranscriptError(
                        f"{path}: line {lineno}: phone {tok!r} is a name; pass the inventory (phones.txt, '<id> <name>' lines) with it"
                    ) from None
        inventory = inventory_from_ids(ids, source=f"ids of {path}")
    return read_transcripts(transcripts, inventory), inventory
