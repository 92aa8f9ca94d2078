#!/usr/bin/env bash
# CPC on LibriSpeech, Kaldi/ESPnet style: prepare -> pretrain -> extract -> phone probe ->
# speaker probe -> ABX -> discrete units -> CTC fine-tuning -> report. Every stage can be re-run:
# finished work is skipped.
#
#   recipes/librispeech/run.sh --librispeech-root /data/LibriSpeech \
#       --alignments converted_aligned_phones.txt --train-split train_split.txt --test-split test_split.txt
#   recipes/librispeech/run.sh --demo          # generated corpus (eSpeak NG), no download
#
# Run from anywhere; paths given on the command line are relative to the current folder.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../utils/common.sh"

# ------------------------------------------------------------------------------------ options
stage=0
stop_stage=8
librispeech_root=
train_subsets=train-clean-100
valid_subsets=dev-clean
alignments=
train_split=
test_split=
phones=
abx_item=
units=50
conf=default
exp_dir=
data_dir=
nproc=1
hours=1.0
demo=false
demo_speakers=16
demo_utterances=24
seed=0
force=false

usage() {
  cat <<USAGE
Usage: $0 [options]
  --librispeech-root DIR   LibriSpeech folder (holding train-clean-100/, dev-clean/, SPEAKERS.TXT)
  --train-subsets LIST     pretraining subsets, comma-separated (default: $train_subsets)
  --valid-subsets LIST     validation subsets for pretraining (default: $valid_subsets; '' for none)
  --alignments FILE        converted_aligned_phones.txt (frame labels, CPC_audio format)
  --train-split FILE       train_split.txt (probe/fine-tuning train ids)
  --test-split FILE        test_split.txt (probe/fine-tuning test ids)
  --phones FILE            phone inventory '<id> <name>' (optional; names in the report)
  --abx-item FILE          ABX item file (default: built from the alignments of the test split;
                           --demo: the corpus's abx.item)
  --units K                k-means units of the discrete-unit stage (default: $units)
  --conf NAME              fast | default | paper | demo | demo_aug | cpu1h: conf/NAME.yaml for pretraining
                           (default: pretrain.yaml) and the NAME sections of probe.yaml/finetune.yaml
  --exp-dir DIR            run folder (default: exp/librispeech-<conf>)
  --data-dir DIR           manifests and split files, with their provenance.json (default: EXP_DIR/data;
                           --demo: data/demo, holding the generated corpus)
  --nproc N                pretraining processes through torchrun (default: 1)
  --hours H                labelled hours for CTC fine-tuning (default: $hours)
  --stage N --stop-stage M run stages N..M (default: $stage..$stop_stage):
                           0 prepare, 1 pretrain, 2 extract, 3 phone probe, 4 speaker probe,
                           5 ABX, 6 discrete units, 7 fine-tune, 8 report
  --demo                   generate a LibriSpeech-layout corpus with eSpeak NG and run on it
                           (--demo-speakers $demo_speakers --demo-utterances $demo_utterances --seed $seed)
  --force                  redo finished probe and fine-tuning stages
  -h, --help               this help
USAGE
}

parse_options "stage stop_stage librispeech_root train_subsets valid_subsets alignments train_split test_split phones abx_item units conf exp_dir data_dir nproc hours demo_speakers demo_utterances seed" "$@"

require_cli
if $demo; then
  data_dir=${data_dir:-data/demo}
  librispeech_root=${librispeech_root:-$data_dir/corpus}
  [ "$conf" = default ] && conf=demo
  exp_dir=${exp_dir:-exp/demo}
  alignments=${alignments:-$librispeech_root/converted_aligned_phones.txt}
  train_split=${train_split:-$librispeech_root/train_split.txt}
  test_split=${test_split:-$librispeech_root/test_split.txt}
  phones=${phones:-$librispeech_root/phones.txt}
  abx_item=${abx_item:-$librispeech_root/abx.item}
  valid_subsets=   # validation = the held-out test-split utterances
  [ "$hours" = 1.0 ] && hours=0.1
fi
exp_dir=${exp_dir:-exp/librispeech-$conf}
data_dir=${data_dir:-$exp_dir/data}   # per run: another run never picks up these manifests
conf_dir=$here/conf
conf_file=$conf_dir/$conf.yaml
[ "$conf" = default ] && conf_file=$here/conf/pretrain.yaml
[ -f "$conf_file" ] || die "no pretraining config $conf_file (choose fast, default, paper, demo, demo_aug or cpu1h)"
mkdir -p "$data_dir" "$exp_dir/log" "$exp_dir/results"
logdir=$exp_dir/log
log "run folder $exp_dir (config $conf), data $data_dir"

need() { for v in "$@"; do [ -n "${!v}" ] || die "--${v//_/-} is required for stage(s) $stage..$stop_stage"; done; }
need_file() { for v in "$@"; do [ -f "${!v}" ] || die "--${v//_/-}: file not found: ${!v}"; done; }

# ------------------------------------------------------------------- stage 0: data preparation
# Every derived file records its inputs in $data_dir/provenance.json (source root, subsets, split
# files by content): a change rebuilds it, a generated corpus made with other settings is refused.
if run_stage 0 "prepare manifests"; then
  if $demo; then
    generated_corpus "$librispeech_root" generator=synth-librispeech speakers="$demo_speakers" \
      utterances="$demo_utterances" seed="$seed" -- \
      logged "$logdir/stage0.log" cpc-speech synth "$librispeech_root" --speakers "$demo_speakers" \
      --utterances "$demo_utterances" --seed "$seed"
  fi
  need librispeech_root
  [ -d "$librispeech_root" ] || die "--librispeech-root: folder not found: $librispeech_root"
  derived "$data_dir/train.tsv" root=%"$librispeech_root" subsets="$train_subsets" -- \
    logged "$logdir/stage0.log" cpc-speech prepare librispeech "$librispeech_root" --subsets "$train_subsets" --out "$data_dir/train.tsv"
  if [ -n "$valid_subsets" ]; then
    derived "$data_dir/valid.tsv" root=%"$librispeech_root" subsets="$valid_subsets" -- \
      logged "$logdir/stage0.log" cpc-speech prepare librispeech "$librispeech_root" --subsets "$valid_subsets" --out "$data_dir/valid.tsv"
  elif [ -n "$test_split" ]; then
    derived "$data_dir/valid.tsv" manifest=@"$data_dir/train.tsv" test_split=@"$test_split" -- \
      logged "$logdir/stage0.log" "$PY" "$here/../utils/filter_manifest.py" "$data_dir/train.tsv" "$test_split" "$data_dir/valid.tsv"
  else
    rm -f "$data_dir/valid.tsv"  # no validation source this time: never a previous run's
  fi
  if [ -n "$train_split" ]; then
    need_file train_split
    derived "$data_dir/finetune_dev.txt,$data_dir/finetune_train.txt" train_split=@"$train_split" dev_fraction=0.1 -- \
      "$PY" "$here/../utils/split_ids.py" "$train_split" 0.1 "$data_dir/finetune_train.txt" "$data_dir/finetune_dev.txt"
  fi
fi
[ -f "$data_dir/train.tsv" ] || die "$data_dir/train.tsv is missing: run stage 0 first"
valid_args=()
[ -f "$data_dir/valid.tsv" ] && valid_args=(--valid-manifest "$data_dir/valid.tsv")

# ----------------------------------------------------------------------- stage 1: pretraining
if run_stage 1 "pretrain ($conf_file, $nproc process(es))"; then
  pretrain_cmd "$conf_file" "$data_dir/train.tsv" "${valid_args[@]}"
fi
model_ckpt=$exp_dir/checkpoints/best.pt

# -------------------------------------------------------------------- stage 2: feature extraction
if run_stage 2 "extract context features"; then
  extract_cmd "$data_dir/train.tsv"
fi

label_args=()
[ -n "$phones" ] && label_args+=(--phones "$phones")

# ------------------------------------------------------------------------ stage 3: phone probe
if run_stage 3 "phone linear probe"; then
  need alignments train_split test_split
  need_file alignments train_split test_split
  out=$exp_dir/results/phone_probe.json
  extra=(--config "$conf_dir/probe.yaml:phone.$conf")
  redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/train.tsv" alignments=@"$alignments" \
    train_split=@"$train_split" test_split=@"$test_split" phones=@"$phones" args="${extra[*]}" settings=@"$conf_dir/probe.yaml" -- \
    logged "$logdir/stage3.log" cpc-speech probe phone --model "$exp_dir" --manifest "$data_dir/train.tsv" \
      --alignments "$alignments" --train-split "$train_split" --test-split "$test_split" "${label_args[@]}" \
      --cache-dir "$exp_dir/features" --out "$out" "${extra[@]}"
fi

# ---------------------------------------------------------------------- stage 4: speaker probe
if run_stage 4 "speaker linear probe"; then
  split_args=()
  [ -n "$train_split" ] && split_args=(--train-split "$train_split" --test-split "$test_split")
  for protocol in utterance window; do
    suffix=$([ "$protocol" = window ] && echo _window || true)
    out=$exp_dir/results/speaker_probe$suffix.json
    extra=(--config "$conf_dir/probe.yaml:speaker.$conf")
    redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/train.tsv" train_split=@"$train_split" \
      test_split=@"$test_split" protocol="$protocol" args="${extra[*]}" settings=@"$conf_dir/probe.yaml" -- \
      logged "$logdir/stage4.log" cpc-speech probe speaker --model "$exp_dir" --manifest "$data_dir/train.tsv" \
        "${split_args[@]}" --protocol "$protocol" --cache-dir "$exp_dir/features" --out "$out" "${extra[@]}"
  done
fi

# ABX items: --abx-item, or built once from the alignments of the test split
if [ -z "$abx_item" ] && [ -n "$alignments" ] && [ -n "$test_split" ]; then
  abx_item=$data_dir/abx.item
fi
make_abx_item() {  # only the file this recipe builds itself, rebuilt when its sources change
  if [ "$abx_item" = "$data_dir/abx.item" ]; then
    local phone_names=()
    [ -n "$phones" ] && phone_names=("$phones")
    derived "$abx_item" alignments=@"$alignments" manifest=@"$data_dir/train.tsv" test_split=@"$test_split" \
      phones=@"$phones" -- \
      "$PY" "$here/../utils/make_abx_item.py" "$alignments" "$data_dir/train.tsv" "$test_split" "$abx_item" "${phone_names[@]}"
  fi
}

# ------------------------------------------------------------------------------- stage 5: ABX
if run_stage 5 "ABX phone discriminability (within / across speakers)"; then
  out=$exp_dir/results/abx.json
  if [ -z "$abx_item" ]; then
    log "  no --abx-item and no alignments/test split to build one: ABX skipped"
  else
    make_abx_item
    need_file abx_item
    redo=$force derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/train.tsv" item=@"$abx_item" -- \
      logged "$logdir/stage5.log" cpc-speech abx --model "$exp_dir" --manifest "$data_dir/train.tsv" --item "$abx_item" \
        --cache-dir "$exp_dir/features" --out "$out"
  fi
fi

# -------------------------------------------------------------------- stage 6: discrete units
if run_stage 6 "discrete units ($units k-means units of the model and of MFCC)"; then
  [ -n "$abx_item" ] && make_abx_item
  unit_args=()
  [ -n "$alignments" ] && unit_args+=(--alignments "$alignments")
  [ -n "$abx_item" ] && unit_args+=(--item "$abx_item")
  for name in model mfcc; do
    out=$exp_dir/results/units_$name.json
    feats=$exp_dir/features/$([ "$name" = model ] && echo model-context || echo mfcc)
    redo=$force derived "$out" model="$([ "$name" = model ] && echo "@$model_ckpt" || echo mfcc)" \
      manifest=@"$data_dir/train.tsv" alignments=@"$alignments" item=@"$abx_item" units="$units" -- \
      units_of "$name" "$data_dir/train.tsv" "$feats" "$exp_dir/units/$name" "$out" "${unit_args[@]}"
  done
fi

# ---------------------------------------------------------------------- stage 7: CTC fine-tuning
if run_stage 7 "CTC phone recognition, $hours h of labels"; then
  need alignments test_split
  [ -f "$data_dir/finetune_dev.txt" ] || die "$data_dir/finetune_dev.txt is missing: run stage 0 with --train-split"
  extra=(--config "$conf_dir/finetune.yaml:finetune.$conf")
  phone_args=()
  [ -n "$phones" ] && phone_args=(--phones "$phones")
  out=$exp_dir/results/finetune.json
  redo=$force workdir=$exp_dir/finetune derived "$out" model=@"$model_ckpt" manifest=@"$data_dir/train.tsv" alignments=@"$alignments" \
    train_split=@"$data_dir/finetune_train.txt" dev_split=@"$data_dir/finetune_dev.txt" test_split=@"$test_split" \
    phones=@"$phones" hours="$hours" args="${extra[*]}" settings=@"$conf_dir/finetune.yaml" -- \
    logged "$logdir/stage7.log" cpc-speech finetune --model "$exp_dir" --manifest "$data_dir/train.tsv" \
      "${phone_args[@]}" --alignments "$alignments" --train-split "$data_dir/finetune_train.txt" \
      --dev-split "$data_dir/finetune_dev.txt" --test-split "$test_split" --hours "$hours" \
      --output-dir "$exp_dir/finetune" --resume --out "$out" "${extra[@]}"
fi

# ---------------------------------------------------------------------------- stage 8: report
if run_stage 8 "report"; then
  logged "$logdir/stage8.log" cpc-speech report "$exp_dir" --print
fi
log "done: stages $stage..$stop_stage in $exp_dir"
