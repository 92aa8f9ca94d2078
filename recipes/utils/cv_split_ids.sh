#!/usr/bin/env bash
# cv_split_ids.sh SPLIT.tsv OUT: the utterance ids (clip names without extension) of a Common Voice
# split TSV, one per line, read from its `path` column.
set -euo pipefail
[ -f "$1" ] || { echo "error: Common Voice split file not found: $1" >&2; exit 1; }
awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "path") col = i;
                       if (!col) { print "error: no path column in " FILENAME > "/dev/stderr"; exit 1 }; next }
            { p = $col; sub(/\.[^.\/]*$/, "", p); print p }' "$1" > "$2"
