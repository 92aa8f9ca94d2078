# Shared shell helpers for the recipes (sourced by run.sh).

log() { echo -e "[$(date +%H:%M:%S)] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# run_stage N NAME: true when stage N is inside [stage, stop_stage]; prints a banner.
run_stage() {
  local n=$1 name=$2
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    log "stage $n: $name"
    return 0
  fi
  return 1
}

# logged LOGFILE CMD...: run CMD, appending its output to LOGFILE and echoing it.
logged() {
  local logfile=$1; shift
  mkdir -p "$(dirname "$logfile")"
  echo "# $(date -u +%FT%TZ) $*" >> "$logfile"
  "$@" 2>&1 | tee -a "$logfile"
}

require_cli() {
  command -v cpc-speech >/dev/null 2>&1 || die "cpc-speech is not on PATH: run 'make install' and activate .venv (source .venv/bin/activate)"
  PY=${PYTHON:-$(dirname "$(command -v cpc-speech)")/python}
  [ -x "$PY" ] || PY=python3
}

# newer_than A B: true when file A exists and is newer than B (or B does not exist).
newer_than() { [ -e "$1" ] && { [ ! -e "$2" ] || [ "$1" -nt "$2" ]; }; }
