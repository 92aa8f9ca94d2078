"""ABX item file from frame alignments: make_abx_item.py ALIGNMENTS MANIFEST SPLIT OUT [PHONES].

One item per phone (not silence) of the utterances listed in SPLIT, with its neighbours as context
and the manifest's speaker (cpc_speech.evaluation.items.items_from_alignments)."""

import sys

from cpc_speech.corpora.manifest import read_manifest
from cpc_speech.evaluation.items import items_from_alignments, speakers_of
from cpc_speech.atomic import atomic_write_text
from cpc_speech.corpora.labels import PhoneSet, read_frame_labels, read_id_list

if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    ali = read_frame_labels(sys.argv[1])
    speakers = speakers_of(read_manifest(sys.argv[2]))
    ids = [u for u in read_id_list(sys.argv[3]).ids if u in ali.labels and u in speakers]
    names = PhoneSet.read(sys.argv[5]).name_of() if len(sys.argv) == 6 else {}
    from pathlib import Path

    atomic_write_text(Path(sys.argv[4]), items_from_alignments(ali.labels, speakers, names, ids))
    print(f"{sys.argv[4]}: ABX items of {len(ids)} utterances")
