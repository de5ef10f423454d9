#!/usr/bin/env bash
# Offline, online and hybrid training of the same data and seed, side by side:
# per-epoch training time, the share of it spent waiting for data, the samples
# generated per epoch, validation metrics, and whether the final weights match.
#
# Usage: bench/online_vs_offline.sh MODEL_DIR STORIES_JSONL LAYER_IDS [ROWS] [EPOCHS]
#   MODEL_DIR      Hugging Face verifier (e.g. the stories260k fixture)
#   STORIES_JSONL  pre-tokenized records with input_ids (e.g. data/stories260k/train.jsonl)
#   LAYER_IDS      capture ids, space separated in one argument (e.g. "1 2 3 5")
#   ROWS           records to prepare (default 600)
#   EPOCHS         epochs per run (default 2)
# Runs at the train defaults otherwise (total sequence length 8192, 12 loader
# threads), with --lr 1e-3 and a 256-token draft vocabulary.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${1:?MODEL_DIR}
stories=${2:?STORIES_JSONL}
layer_ids=${3:?LAYER_IDS}
rows=${4:-600}
epochs=${5:-2}
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$draftforge" prepare --model "$model" --data "$stories" --output "$work/data" --max-samples "$rows" > /dev/null 2>&1
start=$(date +%s.%N)
"$draftforge" generate --model "$model" --preprocessed-data "$work/data" --output "$work/offline_hs" \
  --layer-ids $layer_ids > /dev/null 2>&1
echo "{\"run\": \"generate up front\", \"seconds\": $(echo "$(date +%s.%N) - $start" | bc)}"

train() {
  local name=$1
  shift
  "$draftforge" train --verifier-name-or-path "$model" --data-path "$work/data" --save-path "$work/$name/ckpt" \
    --log-dir "$work/$name/logs" --epochs "$epochs" --lr 1e-3 --draft-vocab-size 256 \
    --layer-ids ${layer_ids// /,} "$@" > "$work/$name.log" 2>&1
  sed -n -e 's/.*epoch \([0-9]*\) training: [0-9]* tokens in \([0-9.]*\) s, \([0-9]*\) tokens\/s, \([0-9.]*\)% of the time waiting.*/{"run": "'"$name"'", "epoch": \1, "seconds": \2, "tokens_per_second": \3, "data_wait_percent": \4}/p' \
    -e 's/.*epoch \([0-9]*\) generated \([0-9]*\) hidden-states samples.*/{"run": "'"$name"'", "epoch": \1, "generated": \2}/p' \
    -e 's/.*epoch \([0-9]*\) validation: \(.*\)/{"run": "'"$name"'", "epoch": \1, "validation": "\2"}/p' "$work/$name.log"
}

train offline --hidden-states-path "$work/offline_hs" --on-missing raise
train online --hidden-states-path "$work/online_hs" --on-generate delete
train hybrid --hidden-states-path "$work/hybrid_hs" --on-generate cache
last=$((epochs - 1))
for name in online hybrid; do
  if cmp -s "$work/offline/ckpt/$last/model.safetensors" "$work/$name/ckpt/$last/model.safetensors"; then
    echo "{\"run\": \"$name\", \"weights_equal_offline\": true}"
  else
    echo "{\"run\": \"$name\", \"weights_equal_offline\": false}"
  fi
done
echo "{\"online_files_left\": $(find "$work/online_hs" -name 'hs_*.safetensors' 2>/dev/null | wc -l), \"hybrid_files\": $(find "$work/hybrid_hs" -name 'hs_*.safetensors' | wc -l)}"
