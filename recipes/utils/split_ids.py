#!/usr/bin/env python3
"""Carve a dev list from a train id list, deterministically: split_ids.py TRAIN FRACTION OUT_TRAIN OUT_DEV.

Every utterance goes to dev with a probability given by a hash of its id (stable across runs and
machines); at least one utterance goes to each side."""

import hashlib
import sys


def main() -> None:
    train, fraction, out_train, out_dev = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    ids = [ln.split()[0] for ln in open(train) if ln.strip() and not ln.startswith("#")]
    if len(ids) < 2:
        sys.exit(f"split_ids: {train} needs at least 2 ids")

    def score(uid: str) -> float:
        return int(hashlib.sha1(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    dev = [u for u in ids if score(u) < fraction] or [min(ids, key=score)]
    rest = [u for u in ids if u not in set(dev)] or ids[:1]
    with open(out_train, "w") as f:
        f.write("\n".join(rest) + "\n")
    with open(out_dev, "w") as f:
        f.write("\n".join(dev) + "\n")
    print(f"{out_train}: {len(rest)} ids; {out_dev}: {len(dev)} ids")


if __name__ == "__main__":
    main()
