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

# parse_options "name1 name2 ..." "$@": --name-with-dashes VALUE (or --name=VALUE) sets $name_with_dashes
# for the listed names; --demo and --force set demo=true / force=true; -h/--help calls usage.
parse_options() {
  local allowed=" $1 " name
  shift
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --demo) demo=true; shift ;;
      --force) force=true; shift ;;
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
      --*)
        name=${1#--}; name=${name//-/_}
        [[ "$allowed" == *" $name "* ]] || die "unknown option $1 (see --help)"
        [ $# -ge 2 ] || die "option $1 needs a value (see --help)"
        printf -v "$name" '%s' "$2"
        shift 2 ;;
      *) die "unexpected argument $1 (see --help)" ;;
    esac
  done
}

# pretrain_cmd CONF MANIFEST [extra args]: stage 1, single process or torchrun with $nproc processes.
pretrain_cmd() {
  local conf_file=$1 manifest=$2
  shift 2
  local launcher=(cpc-speech)
  [ "$nproc" -gt 1 ] && launcher=("$PY" -m torch.distributed.run --nproc-per-node "$nproc" -m cpc_speech.cli)
  logged "$logdir/stage1.log" "${launcher[@]}" pretrain --config "$conf_file" --train-manifest "$manifest" \
    --output-dir "$exp_dir" "$@"
}

# extract_cmd MANIFEST: stage 2, context features into the folder the probes use as their cache.
extract_cmd() {
  logged "$logdir/stage2.log" cpc-speech extract --model "$exp_dir" --manifest "$1" --out "$exp_dir/features/model-context"
}

# units_of NAME MANIFEST FEATURES_DIR UNITS_DIR RESULT_JSON [quantize args]: stage 6 for NAME (model or
# mfcc): features of MANIFEST's utterances (extraction keeps what FEATURES_DIR has), then $units k-means
# units fitted (or assigned with --centroids DIR) and scored into RESULT_JSON.
units_of() {
  local name=$1 manifest=$2 feats=$3 units_dir=$4 result=$5
  shift 5
  logged "$logdir/stage6.log" cpc-speech extract --model "$([ "$name" = model ] && echo "$exp_dir" || echo mfcc)" \
    --manifest "$manifest" --out "$feats" --no-progress
  logged "$logdir/stage6.log" cpc-speech quantize --features "$feats" --units "$units" --out "$units_dir" \
    --results "$result" "$@"
}

# Settings of a stage's command come from a section of a recipe YAML file, which the command reads
# itself: `cpc-speech probe phone --config conf/probe.yaml:phone.$conf` reads the mapping at
# phone -> $conf of the file (sections share settings with YAML merge keys, `<<: *phone_default`).

# derived FILE[,FILE2...] KEY=VALUE... -- CMD...: run CMD (which writes the FILEs) unless they exist
# and were made from the same inputs, as recorded in provenance.json beside them; then record the
# inputs. Values: text, %PATH (resolved path) or @FILE (path + SHA-256 of its content). A change of
# source root, subsets, split file or config redoes the step instead of reusing the old file;
# redo=true (e.g. redo=$force derived ...) redoes it anyway. workdir=DIR names the resumable folder
# CMD works in (fine-tuning checkpoints): it is resumed when it was started from the same inputs, and
# moved aside to DIR.replaced-<time> (never deleted) when they changed or redo=true.
derived() {
  local files=$1; shift
  local inputs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  if ! ${redo:-false} && "$PY" "$utils_dir/provenance.py" check "$files" "${inputs[@]}"; then
    log "  ${files%%,*} is up to date (use --force to redo)"
    return 0
  fi
  if [ -n "${workdir:-}" ]; then
    if [ -d "$workdir" ] && { ${redo:-false} || ! "$PY" "$utils_dir/provenance.py" check "$workdir" "${inputs[@]}" 2>/dev/null; }; then
      local aside
      aside="$workdir.replaced-$(date -u +%Y%m%dT%H%M%S)"
      mv "$workdir" "$aside"
      log "  $workdir was started from other inputs (or --force): moved to $aside"
    fi
    mkdir -p "$workdir"
    "$PY" "$utils_dir/provenance.py" record "$workdir" "${inputs[@]}"
  fi
  "$@"
  "$PY" "$utils_dir/provenance.py" record "$files" "${inputs[@]}"
}

# generated_corpus DIR KEY=VALUE... -- CMD...: generate a corpus into DIR with CMD unless DIR/manifest.tsv
# exists; an existing corpus made with other settings (provenance.json beside DIR) is refused, never
# silently reused nor overwritten. A corpus of an older recipe (no record) is adopted when its
# manifest has speakers=N utterances=M (per speaker) as asked.
generated_corpus() {
  local dir=$1; shift
  local inputs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do inputs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  if [ -f "$dir/manifest.tsv" ]; then
    "$PY" "$utils_dir/provenance.py" check "$dir" "${inputs[@]}" 2>/dev/null && return 0
    if ! "$PY" "$utils_dir/provenance.py" has "$dir" && "$PY" "$utils_dir/provenance.py" matches "$dir/manifest.tsv" "${inputs[@]}"; then
      log "  $dir: corpus of an older recipe with the asked speakers and utterances: adopted"
      "$PY" "$utils_dir/provenance.py" record "$dir" "${inputs[@]}"
      return 0
    fi
    die "$dir was generated with other settings than ${inputs[*]} (see $(dirname "$dir")/provenance.json); remove it or choose another --data-dir"
  fi
  "$@"
  "$PY" "$utils_dir/provenance.py" record "$dir" "${inputs[@]}"
}
utils_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
