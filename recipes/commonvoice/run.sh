#!/usr/bin/env bash
# CPC on Common Voice, after Riviere et al. (2020): pretrain on the untranscribed clips of several
# locales, then per-locale CTC phone recognition in the paper's cells (1 h of labels frozen; 5 h
# frozen, fine-tuned, from scratch, + MFCC), a speaker probe over client_id, and a report with the
# paper's table.
#
#   recipes/commonvoice/run.sh --cv-root /data/cv-corpus-17.0 --locales fr,es,nl \
#       --transcripts-dir /data/cv-phones     # <dir>/<locale>/phone_transcripts.txt + phones.txt
#   recipes/commonvoice/run.sh --demo         # generated corpus (eSpeak NG), no download
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../utils/common.sh"

stage=0
stop_stage=8
cv_root=
locales=
transcripts_dir=
conf=default
exp_dir=
data_dir=
nproc=1
label_hours=          # default: paper_label_hours, or demo_label_hours with --demo
paper_label_hours=1,5
demo_label_hours=0.02,0.1   # the demo corpus has 0.138-0.147 h of training clips per locale
demo=false
demo_languages=en-us,fr,es
demo_speakers=8
demo_utterances=20
seed=0
units=50
force=false

usage() {
  cat <<USAGE
Usage: $0 [options]
  --cv-root DIR            Common Voice release folder (holding <locale>/clips, <locale>/validated.tsv, ...)
  --locales LIST           comma-separated locales, e.g. fr,es (default: all present)
  --transcripts-dir DIR    phone transcriptions: DIR/<locale>/phone_transcripts.txt ('<clip-id> <phone> ...')
                           and DIR/<locale>/phones.txt ('<id> <name>', 0 = silence) (default: --cv-root)
  --label-hours SMALL,LARGE the two label budgets in hours (default: $paper_label_hours, the paper's; --demo:
                           $demo_label_hours): SMALL frozen, LARGE frozen / fine-tuned / from scratch / MFCC;
                           SMALL is drawn inside LARGE, and a budget a locale's train split cannot
                           supply is not trained (the report says so)
  --units K                k-means units of the discrete-unit stage (default: $units)
  --conf NAME              fast | default | paper | demo | demo_aug | cpu1h (conf/NAME.yaml; default: pretrain.yaml)
  --exp-dir DIR            run folder (default: exp/commonvoice-<conf>)
  --data-dir DIR           manifests and id lists, with their provenance.json (default: EXP_DIR/data;
                           --demo: data/demo-commonvoice, holding the generated corpus)
  --nproc N                pretraining processes through torchrun (default: 1)
  --stage N --stop-stage M run stages N..M (default: $stage..$stop_stage):
                           0 prepare, 1 pretrain, 2 extract, 3 phone probe, 5 ABX and 6 discrete units
                           (locales with alignments), 4 speaker probe, 7 fine-tune per locale and budget,
                           8 report. Per-locale results: the first locale with alignments in
                           EXP_DIR/results (what the report shows), the others in EXP_DIR/results/LOCALE
  --demo                   generate a Common Voice-layout corpus (MP3, 48 kHz) with eSpeak NG and run on it
                           (--demo-languages $demo_languages --demo-speakers $demo_speakers --demo-utterances $demo_utterances --seed $seed)
  --seed N                 seeds the demo corpus and the draw of the label budgets' clips (default: $seed)
  --force                  redo finished probe and fine-tuning stages
  -h, --help               this help
USAGE
}

parse_options "stage stop_stage cv_root locales transcripts_dir conf exp_dir data_dir nproc label_hours units demo_languages demo_speakers demo_utterances seed" "$@"

require_cli
if $demo; then
  data_dir=${data_dir:-data/demo-commonvoice}
  cv_root=${cv_root:-$data_dir/corpus}
  [ "$conf" = default ] && conf=demo
  exp_dir=${exp_dir:-exp/demo-commonvoice}
  label_hours=${label_hours:-$demo_label_hours}
fi
exp_dir=${exp_dir:-exp/commonvoice-$conf}
label_hours=${label_hours:-$paper_label_hours}
budgets=$("$PY" "$here/../utils/label_budgets.py" --check-hours "$label_hours") || die "--label-hours $label_hours: $budgets"
read -r small_h large_h <<< "$budgets"
data_dir=${data_dir:-$exp_dir/data}   # per run: another run never picks up these manifests
conf_dir=$here/../librispeech/conf   # the configs are shared with the LibriSpeech recipe
[ -d "$here/conf" ] && [ -n "$(ls "$here/conf" 2>/dev/null)" ] && conf_dir=$here/conf
conf_file=$conf_dir/$conf.yaml
[ "$conf" = default ] && conf_file=$conf_dir/pretrain.yaml
[ -f "$conf_file" ] || die "no pretraining config $conf_file (choose fast, default, paper, demo, demo_aug or cpu1h)"
mkdir -p "$data_dir" "$exp_dir/log" "$exp_dir/results"
logdir=$exp_dir/log
log "run folder $exp_dir (config $conf), data $data_dir"

# ------------------------------------------------------------------- stage 0: data preparation
if run_stage 0 "prepare manifests and id lists"; then
  if $demo; then
    generated_corpus "$cv_root" generator=synth-commonvoice languages="$demo_languages" speakers="$demo_speakers" \
      utterances="$demo_utterances" seed="$seed" -- \
      logged "$logdir/stage0.log" cpc-speech synth "$cv_root" --layout commonvoice --languages "$demo_languages" \
      --speakers "$demo_speakers" --utterances "$demo_utterances" --seed "$seed"
  fi
  [ -n "$cv_root" ] || die "--cv-root is required"
  [ -d "$cv_root" ] || die "--cv-root: folder not found: $cv_root"
  if [ -z "$locales" ]; then
    locales=$(for d in "$cv_root"/*/; do [ -d "$d/clips" ] && basename "$d"; done | paste -sd, -)
    [ -n "$locales" ] || die "no <locale>/clips folder under $cv_root"
  fi
  echo "$locales" > "$data_dir/locales"
  # every derived file records its inputs in provenance.json beside it: a change rebuilds it
  cv_inputs=(root=%"$cv_root" locales="$locales")
  for loc in ${locales//,/ }; do cv_inputs+=("validated_$loc=@$cv_root/$loc/validated.tsv"); done
  derived "$data_dir/train.tsv" "${cv_inputs[@]}" -- \
    logged "$logdir/stage0.log" cpc-speech prepare commonvoice "$cv_root" \
    --locales "$locales" --splits validated --out "$data_dir/train.tsv"
  for loc in ${locales//,/ }; do
    mkdir -p "$data_dir/$loc"
    derived "$data_dir/$loc/manifest.tsv" root=%"$cv_root" locale="$loc" validated=@"$cv_root/$loc/validated.tsv" -- \
      logged "$logdir/stage0.log" cpc-speech prepare commonvoice "$cv_root" \
      --locales "$loc" --splits validated --out "$data_dir/$loc/manifest.tsv"
    # train/dev/test id lists; splits sharing a client_id (speaker) are refused
    logged "$logdir/stage0.log" "$PY" "$here/../utils/cv_splits.py" "$cv_root/$loc" "$data_dir/$loc" \
      || die "$loc: the Common Voice splits are not speaker-disjoint (see $logdir/stage0.log)"
  done
fi
[ -f "$data_dir/train.tsv" ] || die "$data_dir/train.tsv is missing: run stage 0 first"
locales=${locales:-$(cat "$data_dir/locales")}
transcripts_dir=${transcripts_dir:-$cv_root}

# ----------------------------------------------------------------------- stage 1: pretraining
if run_stage 1 "pretrain on $locales ($conf_file, $nproc process(es))"; then
  pretrain_cmd "$conf_file" "$data_dir/train.tsv"
fi
model_ckpt=$exp_dir/checkpoints/best.pt

# -------------------------------------------------------------------- stage 2: feature extraction
if run_stage 2 "extract context features"; then
  extract_cmd "$data_dir/train.tsv"
fi


# ---------------------------------------------- stage 3: phone probe (where frame labels exist)
if run_stage 3 "phone linear probe per locale with alignments"; then
  first=true   # the first locale's result is the report's phone_probe.json; the others sit beside it
  for loc in ${locales//,/ }; do
    ali=$transcripts_dir/$loc/converted_aligned_phones.txt
    if [ ! -f "$ali" ] || [ ! -f "$transcripts_dir/$loc/train_split.txt" ]; then
      log "  $loc: no frame alignments ($ali): skipped"; continue
    fi
    out=$exp_dir/results/phone_probe_$loc.json
    $first && out=$exp_dir/results/phone_probe.json
    first=false
    extra=(--config "$conf_dir/probe.yaml:phone.$conf")
    redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/$loc/manifest.tsv" alignments=@"$ali" \
      phones=@"$transcripts_dir/$loc/phones.txt" train_split=@"$transcripts_dir/$loc/train_split.txt" \
      test_split=@"$transcripts_dir/$loc/test_split.txt" args="${extra[*]}" settings=@"$conf_dir/probe.yaml" -- \
      logged "$logdir/stage3.log" cpc-speech probe phone --model "$exp_dir" --manifest "$data_dir/$loc/manifest.tsv" \
        --alignments "$ali" --phones "$transcripts_dir/$loc/phones.txt" \
        --train-split "$transcripts_dir/$loc/train_split.txt" --test-split "$transcripts_dir/$loc/test_split.txt" \
        --cache-dir "$exp_dir/features" --out "$out" "${extra[@]}"
  done
fi

# ---------------------------------------------------------- stage 4: speaker probe (client_id)
if run_stage 4 "speaker linear probe over client_id"; then
  out=$exp_dir/results/speaker_probe.json
  extra=(--config "$conf_dir/probe.yaml:speaker.$conf")
  redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/train.tsv" holdout=0.2 args="${extra[*]}" settings=@"$conf_dir/probe.yaml" -- \
    logged "$logdir/stage4.log" cpc-speech probe speaker --model "$exp_dir" --manifest "$data_dir/train.tsv" \
      --holdout 0.2 --cache-dir "$exp_dir/features" --out "$out" "${extra[@]}"
fi

# ABX and units per locale with frame alignments: LOCALE_ITEM (the corpus's abx.item, else built from
# the alignments of the test split) and LOCALE_RESULTS (the first such locale: results/, which the
# report reads; the others: results/LOCALE/)
aligned_locales=()
for loc in ${locales//,/ }; do
  [ -f "$transcripts_dir/$loc/converted_aligned_phones.txt" ] && [ -f "$transcripts_dir/$loc/test_split.txt" ] && aligned_locales+=("$loc")
done
locale_item() {  # locale_item LOCALE: the item file, built once from the alignments when the corpus has none
  local dir=$transcripts_dir/$1
  if [ -f "$dir/abx.item" ]; then echo "$dir/abx.item"; return; fi
  local names=()
  [ -f "$dir/phones.txt" ] && names=("$dir/phones.txt")
  derived "$data_dir/$1/abx.item" alignments=@"$dir/converted_aligned_phones.txt" manifest=@"$data_dir/$1/manifest.tsv" \
    test_split=@"$dir/test_split.txt" phones=@"$dir/phones.txt" -- \
    "$PY" "$here/../utils/make_abx_item.py" "$dir/converted_aligned_phones.txt" "$data_dir/$1/manifest.tsv" \
      "$dir/test_split.txt" "$data_dir/$1/abx.item" "${names[@]}" >&2
  echo "$data_dir/$1/abx.item"
}
locale_results() {  # locale_results LOCALE
  if [ "$1" = "${aligned_locales[0]}" ]; then echo "$exp_dir/results"; else mkdir -p "$exp_dir/results/$1"; echo "$exp_dir/results/$1"; fi
}

# --------------------------------------------------------- stage 5: ABX (locales with alignments)
if run_stage 5 "ABX phone discriminability per locale (within / across speakers)"; then
  [ ${#aligned_locales[@]} -gt 0 ] || log "  no locale has frame alignments and a test split: ABX skipped"
  for loc in "${aligned_locales[@]}"; do
    item=$(locale_item "$loc")
    out=$(locale_results "$loc")/abx.json
    redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/$loc/manifest.tsv" item=@"$item" -- \
      logged "$logdir/stage5.log" cpc-speech abx --model "$exp_dir" --manifest "$data_dir/$loc/manifest.tsv" --item "$item" \
        --cache-dir "$exp_dir/features" --out "$out"
  done
fi

# ------------------------------------------ stage 6: discrete units (k-means on every locale's clips)
if run_stage 6 "discrete units ($units k-means units of the model and of MFCC, scored per locale)"; then
  [ ${#aligned_locales[@]} -gt 0 ] || log "  no locale has frame alignments: units are fitted but not scored"
  for name in model mfcc; do
    feats=$exp_dir/features/$([ "$name" = model ] && echo model-context || echo mfcc)
    fitted=$exp_dir/units/$name
    for loc in "${aligned_locales[@]:-}"; do
      unit_args=() ali= item=
      if [ -n "$loc" ]; then
        ali=$transcripts_dir/$loc/converted_aligned_phones.txt
        item=$(locale_item "$loc")
        unit_args=(--alignments "$ali" --item "$item")
        out=$(locale_results "$loc")/units_$name.json
      else
        out=$exp_dir/results/units_$name.json
      fi
      # the first pass fits the centroids on the clips of all locales; the others assign with them
      units_dir=$fitted
      [ "$loc" = "${aligned_locales[0]:-}" ] || { unit_args+=(--centroids "$fitted"); units_dir=$exp_dir/units/${name}_$loc; }
      redo=$force derived "$out" model="$([ "$name" = model ] && echo "@$model_ckpt" || echo mfcc)" \
        manifest=@"$data_dir/train.tsv" locale="$loc" alignments=@"$ali" item=@"$item" units="$units" -- \
        units_of "$name" "$data_dir/train.tsv" "$feats" "$units_dir" "$out" "${unit_args[@]}"
    done
  done
fi

# ---------------------------- stage 7: CTC fine-tuning per locale in the cells of Riviere et al. (2020)
if run_stage 7 "CTC phone recognition per locale: $small_h h frozen; $large_h h frozen, fine-tuned, from scratch, MFCC"; then
  extra=(--config "$conf_dir/finetune.yaml:finetune.$conf")
  for loc in ${locales//,/ }; do
    tr=$transcripts_dir/$loc/phone_transcripts.txt
    if [ ! -f "$tr" ]; then
      log "  $loc: no phone transcriptions ($tr): skipped"; continue
    fi
    # the two budgets' clip lists (small inside large) and which budgets the train split cannot supply
    plan=$exp_dir/results/label_budgets_$loc.json
    derived "$plan" manifest=@"$data_dir/$loc/manifest.tsv" phones=@"$transcripts_dir/$loc/phones.txt" transcripts=@"$tr" \
      train_split=@"$data_dir/$loc/train_ids.txt" hours="$small_h,$large_h" seed="$seed" -- \
      logged "$logdir/stage7.log" "$PY" "$here/../utils/label_budgets.py" --manifest "$data_dir/$loc/manifest.tsv" \
        --phones "$transcripts_dir/$loc/phones.txt" --transcripts "$tr" --train-ids "$data_dir/$loc/train_ids.txt" \
        --hours "$small_h,$large_h" --seed "$seed" --locale "$loc" --out-dir "$data_dir/$loc" --plan "$plan"
    for h in "$small_h" "$large_h"; do
      out=$exp_dir/results/finetune_${loc}_${h}h.json
      status=0
      why=$("$PY" "$here/../utils/label_budgets.py" --status "$plan" "${h}h") || status=$?
      [ "$status" -le 1 ] || die "$loc: cannot read the label budget plan $plan"
      if [ "$status" -eq 1 ]; then
        log "  $loc: ${h} h budget not trained: $why"
        rm -f "$out"  # a result of other data must not stand in for a budget this data cannot supply
        continue
      fi
      conditions=frozen
      [ "$h" = "$large_h" ] && conditions=frozen,unfrozen,scratch,mfcc
      ids=$data_dir/$loc/train_${h}h_ids.txt
      # checkpoints per clip list: a redrawn list (other budgets, seed or data) starts afresh, the same one
      # resumes; a folder of another model or settings is moved aside (derived's workdir)
      ckpt_dir=$exp_dir/finetune/${loc}_${h}h-$(sha256sum "$ids" | cut -c1-12)
      redo=$force workdir=$ckpt_dir derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/$loc/manifest.tsv" \
        phones=@"$transcripts_dir/$loc/phones.txt" transcripts=@"$tr" train_split=@"$ids" \
        dev_split=@"$data_dir/$loc/dev_ids.txt" test_split=@"$data_dir/$loc/test_ids.txt" conditions="$conditions" args="${extra[*]}" settings=@"$conf_dir/finetune.yaml" -- \
        logged "$logdir/stage7.log" cpc-speech finetune --model "$exp_dir" --manifest "$data_dir/$loc/manifest.tsv" \
          --phones "$transcripts_dir/$loc/phones.txt" --transcripts "$tr" \
          --train-split "$ids" --dev-split "$data_dir/$loc/dev_ids.txt" \
          --test-split "$data_dir/$loc/test_ids.txt" --hours all --conditions "$conditions" \
          --output-dir "$ckpt_dir" --resume --out "$out" "${extra[@]}"
    done
  done
fi

# ---------------------------------------------------------------------------- stage 8: report
if run_stage 8 "report"; then
  logged "$logdir/stage8.log" cpc-speech report "$exp_dir" --print
fi
log "done: stages $stage..$stop_stage in $exp_dir"
