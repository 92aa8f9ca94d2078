#!/usr/bin/env python3
"""Utterance id lists of a Common Voice locale's train/dev/test split, checked to be speaker-disjoint:

    cv_splits.py LOCALE_DIR OUT_DIR

Reads ``LOCALE_DIR/{train,dev,test}.tsv`` and writes ``OUT_DIR/{train,dev,test}_ids.txt`` (clip
names without their extension, one per line, in file order). Common Voice's released splits share
no ``client_id`` (the speaker); fine-tuning selects on dev and reports test, so a dev or test
speaker also heard in training would inflate the result. A pair of splits that shares a client_id
is refused (exit 1, a message naming both files, the number of shared speakers and one of them)
and no id list is written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

SPLITS = ("train", "dev", "test")


class SplitError(ValueError):
    """Split files that are missing, unreadable or not speaker-disjoint; the message names the file."""


def read_split(tsv: Path) -> Tuple[List[str], set]:
    """(utterance ids in file order, client_ids) of one split TSV."""
    from cpc_speech.corpora.commonvoice import read_tsv

    if not tsv.is_file():
        raise SplitError(f"Common Voice split file not found: {tsv}")
    ids, speakers = [], set()
    for row in read_tsv(tsv):
        name = row["path"].strip()
        if not name:
            continue
        ids.append(Path(name).stem)  # the clip name without its extension, as in the manifest
        speakers.add(row["client_id"].strip())
    return ids, speakers


def check_disjoint(speakers: Dict[str, set], files: Dict[str, Path]) -> None:
    """Raise :class:`SplitError` when two splits share a client_id."""
    names = list(speakers)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = speakers[a] & speakers[b]
            if shared:
                raise SplitError(
                    f"{files[b]} shares {len(shared)} client_id(s) with {files[a]} (e.g. {sorted(shared)[0]!r}): "
                    f"the {b} speakers must not be in the {a} split (Common Voice's released train/dev/test are "
                    "speaker-disjoint; regenerate the split files or use the released ones)")


def write_split_ids(locale_dir: Path, out_dir: Path, splits: Sequence[str] = SPLITS) -> Dict[str, int]:
    """Check the splits of ``locale_dir`` and write their id lists into ``out_dir``; {split: ids}."""
    from cpc_speech.corpora.labels import write_id_list

    files = {s: locale_dir / f"{s}.tsv" for s in splits}
    read = {s: read_split(p) for s, p in files.items()}
    check_disjoint({s: spk for s, (_, spk) in read.items()}, files)
    for s, (ids, _) in read.items():
        write_id_list(out_dir / f"{s}_ids.txt", ids)
    return {s: len(ids) for s, (ids, _) in read.items()}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: cv_splits.py LOCALE_DIR OUT_DIR", file=sys.stderr)
        return 2
    try:
        counts = write_split_ids(Path(argv[0]), Path(argv[1]))
    except (SplitError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{argv[1]}: " + ", ".join(f"{s} {n} ids" for s, n in counts.items()) + " (speaker-disjoint)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
