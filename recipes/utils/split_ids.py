#!/usr/bin/env python3
"""Carve a dev list from a train id list, deterministically: split_ids.py TRAIN FRACTION OUT_TRAIN OUT_DEV.

The dev ids are chosen as the probes choose theirs (cpc_speech.probes.splits.carve_dev, seed 0:
round(FRACTION * n) ids, at least one, from the sorted ids), so the choice does not depend on the
order of the list; the train order is kept."""

import sys

from cpc_speech.corpora.labels import read_id_list, write_id_list
from cpc_speech.probes.splits import carve_dev


def main() -> None:
    train, fraction, out_train, out_dev = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    try:
        ids = read_id_list(train, "train id list").ids
        if len(ids) < 2:
            raise ValueError(f"{train} needs at least 2 ids")
        rest, dev = carve_dev(ids, fraction, seed=0)
    except ValueError as exc:
        sys.exit(f"split_ids: {exc}")
    write_id_list(out_train, rest)
    write_id_list(out_dev, dev)
    print(f"{out_train}: {len(rest)} ids; {out_dev}: {len(dev)} ids")


if __name__ == "__main__":
    main()
