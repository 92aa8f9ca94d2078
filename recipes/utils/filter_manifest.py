#!/usr/bin/env python3
"""Keep the manifest rows whose id is listed in an id file: filter_manifest.py IN IDS OUT.

Relative audio paths are rewritten so that OUT may live in another folder than IN."""

import sys

from cpc_speech.corpora.labels import read_id_list
from cpc_speech.corpora.manifest import read_manifest, write_manifest


def main() -> None:
    src, ids_file, dst = sys.argv[1:4]
    ids = set(read_id_list(ids_file, "id list"))
    rows = [r for r in read_manifest(src) if r.id in ids]
    if not rows:
        sys.exit(f"filter_manifest: no row of {src} is listed in {ids_file}")
    write_manifest(rows, dst)
    print(f"{dst}: {len(rows)} of {len(ids)} listed utterances")


if __name__ == "__main__":
    main()
