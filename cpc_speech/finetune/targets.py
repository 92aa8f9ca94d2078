"""CTC targets: the output classes of a phone set, and each utterance's class-index labels.

The files (phone set, phone transcripts, frame alignments) are read by
:mod:`cpc_speech.corpora.labels`. CTC output classes are the phone set's phones except silence
(id :data:`~cpc_speech.corpora.labels.SILENCE_ID`), in id order (class ``k`` is
``classes.class_names[k]``), and the blank is the extra last class. Silence is dropped from the
targets; from alignments, runs of equal frame labels are collapsed first (``3 3 0 3`` gives two
``3`` labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

from cpc_speech.corpora.labels import (
    SILENCE_ID,
    LabelFileError,
    PhoneSequence,
    PhoneSet,
    read_frame_labels,
    read_phone_transcripts,
    transcript_phone_ids,
)

PathLike = Union[str, Path]


@dataclass(frozen=True)
class CTCClasses:
    """The CTC output classes of ``phones``: every phone but ``silence``, then the blank."""

    phones: PhoneSet
    silence: int = SILENCE_ID

    @property
    def source(self) -> str:
        return self.phones.source

    @property
    def class_ids(self) -> Tuple[int, ...]:
        """Phone ids of the CTC classes (silence removed), in class order."""
        return tuple(i for i in self.phones.ids if i != self.silence)

    @property
    def class_names(self) -> List[str]:
        return [n for i, n in zip(self.phones.ids, self.phones.names) if i != self.silence]

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


@dataclass(frozen=True)
class Transcript:
    """One utterance's CTC target: class indices (silence removed) and where it was read."""

    id: str
    labels: Tuple[int, ...]
    where: str  # "file: line N"


def ctc_classes(phones: PhoneSet) -> CTCClasses:
    """The CTC classes of a phone set; a set holding only silence is an error naming its file."""
    classes = CTCClasses(phones)
    if not classes.class_ids:
        raise LabelFileError(f"{phones.source}: phone set holds only silence (id {SILENCE_ID})")
    return classes


def _to_targets(sequences: Mapping[str, PhoneSequence], classes: CTCClasses) -> Dict[str, Transcript]:
    cls = classes.class_of_id()
    known = set(classes.phones.ids)
    out: Dict[str, Transcript] = {}
    for uid, seq in sequences.items():
        unknown = next((p for p in seq.phones if p not in known), None)
        if unknown is not None:
            raise LabelFileError(f"{seq.where}: utterance {uid!r}: unknown phone id {unknown} (not in the phone set {classes.source})")
        out[uid] = Transcript(uid, tuple(cls[p] for p in seq.phones if p != classes.silence), seq.where)
    return out


def load_targets(
    phones: Optional[PathLike] = None,
    transcripts: Optional[PathLike] = None,
    alignments: Optional[PathLike] = None,
) -> Tuple[Dict[str, Transcript], CTCClasses]:
    """CTC targets from phone transcripts (which need ``phones`` unless every phone is an integer
    id) or from frame alignments; without ``phones`` the set is ``0..max id``, named by the ids.
    Returns ``(targets by utterance id, classes)``."""
    if (transcripts is None) == (alignments is None):
        raise LabelFileError("give exactly one of transcripts or alignments")
    classes = ctc_classes(PhoneSet.read(phones)) if phones is not None else None
    if alignments is not None:
        sequences = read_frame_labels(alignments).phone_sequences(SILENCE_ID)
        if classes is None:
            classes = ctc_classes(PhoneSet.numbered([p for s in sequences.values() for p in s.phones], source=f"ids of {alignments}"))
    else:
        if classes is None:
            classes = ctc_classes(PhoneSet.numbered(transcript_phone_ids(transcripts), source=f"ids of {transcripts}"))
        sequences = read_phone_transcripts(transcripts, classes.phones)
    return _to_targets(sequences, classes), classes
