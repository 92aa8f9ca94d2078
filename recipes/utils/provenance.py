#!/usr/bin/env python3
"""Where a recipe's derived files came from: provenance.py check|record|has|matches FILE[,FILE...] KEY=VALUE...

``record`` writes, into ``provenance.json`` beside the first FILE, the inputs a file was made from
and the SHA-256 of every FILE (folders: inputs only). ``check`` exits 0 when every FILE exists,
the recorded inputs are the same and the files are unchanged since; otherwise it exits 1 and says
why on stderr (so the recipe redoes the step). Values: ``KEY=text`` as is; ``KEY=%PATH`` the
resolved path; ``KEY=@FILE`` the resolved path and the SHA-256 of the file's content (``missing``
when absent), so a split file edited in place counts as a change. ``has FILE``: whether FILE has a
record; ``matches MANIFEST speakers=N utterances=M [languages=a,b]``: whether a generated corpus'
manifest has that many speakers and utterances per speaker (adopting corpora of older recipes).
"""

import hashlib
import json
import os
import sys
import time


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def value(raw):
    if raw.startswith("%"):
        return os.path.realpath(raw[1:]) if raw[1:] else ""
    if raw.startswith("@"):
        path = raw[1:]
        if not path:
            return ""
        return f"{os.path.realpath(path)} sha256:{sha256(path) if os.path.isfile(path) else 'missing'}"
    return raw


def parse(pairs):
    out = {}
    for pair in pairs:
        if "=" not in pair:
            sys.exit(f"provenance.py: expected KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key] = value(raw)
    return out


def store_of(first):
    return os.path.join(os.path.dirname(os.path.abspath(first)), "provenance.json")


def load(store):
    try:
        with open(store, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def digest(path):
    return sha256(path) if os.path.isfile(path) else None


def check(files, inputs):
    entry = load(store_of(files[0])).get(os.path.basename(files[0]))
    shown = files[0]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        return False, None
    if not isinstance(entry, dict):
        return False, f"{shown} has no provenance record (made by an older recipe?): rebuilding it"
    old = entry.get("inputs", {})
    changed = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
    if changed:
        what = "; ".join(f"{k}: {old.get(k, '(none)')} -> {inputs.get(k, '(none)')}" for k in changed)
        return False, f"{shown} was made from other inputs ({what}): rebuilding it"
    for f in files:
        if entry.get("sha256", {}).get(os.path.basename(f)) != digest(f):
            return False, f"{f} changed since it was made: rebuilding it"
    return True, None


def record(files, inputs):
    store = store_of(files[0])
    data = load(store)
    data[os.path.basename(files[0])] = {
        "inputs": inputs,
        "sha256": {os.path.basename(f): digest(f) for f in files},
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = f"{store}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, store)


def matches(manifest, inputs):
    """Whether a generated corpus' manifest has ``speakers`` speakers (per language when
    ``languages`` is given) with ``utterances`` utterances each."""
    with open(manifest, encoding="utf-8") as f:
        speakers = [ln.split("\t")[2] for ln in list(f)[1:] if ln.strip() and not ln.startswith("#")]
    langs = len([x for x in inputs.get("languages", "x").split(",") if x])
    want_spk, want_utt = int(inputs["speakers"]) * langs, int(inputs["utterances"])
    counts = {s: speakers.count(s) for s in set(speakers)}
    return len(counts) == want_spk and all(c == want_utt for c in counts.values())


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("check", "record", "matches", "has"):
        sys.exit(__doc__.strip().splitlines()[0])
    files = [f for f in sys.argv[2].split(",") if f]
    inputs = parse(sys.argv[3:])
    if sys.argv[1] == "has":  # whether FILE has a record at all
        sys.exit(0 if os.path.basename(files[0]) in load(store_of(files[0])) else 1)
    if sys.argv[1] == "matches":
        sys.exit(0 if matches(files[0], inputs) else 1)
    if sys.argv[1] == "record":
        record(files, inputs)
        return
    fresh, why = check(files, inputs)
    if why:
        print(why, file=sys.stderr)
    sys.exit(0 if fresh else 1)


if __name__ == "__main__":
    main()
