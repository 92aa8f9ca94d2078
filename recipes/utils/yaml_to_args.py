#!/usr/bin/env python3
"""Print command-line options from a recipe YAML file: yaml_to_args.py FILE GROUP SECTION.

    python yaml_to_args.py conf/probe.yaml phone fast   ->   --epochs 20 --context-frames 0 ...

The file maps groups (``phone``, ``speaker``, ``finetune``, ...) to sections (``default``,
``fast``, ``paper``, ...) of option dictionaries; SECTION is merged over ``default``. ``true``
becomes a bare flag, ``false``/``null`` are dropped, lists are joined with commas.
"""

import shlex
import sys

import yaml


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: yaml_to_args.py FILE GROUP SECTION")
    path, group, section = sys.argv[1:4]
    with open(path) as f:
        data = (yaml.safe_load(f) or {}).get(group) or {}
    options = dict(data.get("default") or {})
    options.update(data.get(section) or {})
    out = []
    for key, value in options.items():
        flag = "--" + str(key).replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    print(" ".join(shlex.quote(x) for x in out))


if __name__ == "__main__":
    main()
