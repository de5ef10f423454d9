#!/usr/bin/env bash
# Data-parallel scaling of `draftforge train` from 1 to 2 ranks on one
# machine (Gloo over 127.0.0.1): per-rank training tokens/s, the scaling
# efficiency (per-rank tokens/s at 2 ranks over the 1-rank figure) and the
# share of training time spent in collectives.
#
# Usage: bench/distributed_scaling.sh [STEPS] [TOTAL_SEQ_LEN]
# Builds its own data with `draftforge demo-assets` (random Llama verifier,
# synthetic tokens), prepare and generate, in a temporary directory. Every
# rank runs with --threads 1, so 2 ranks need 2 free cores. Prints one line
# per run and rank, parsed from the trainer's epoch log lines.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
steps=${1:-30}
total_seq_len=${2:-2048}
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$draftforge" --log-level warn demo-assets --output "$work/assets" >/dev/null
"$draftforge" --log-level warn prepare --model "$work/assets/model" --data "$work/assets/train.jsonl" \
  --output "$work/data" --seq-length 512 >/dev/null
"$draftforge" --log-level warn --threads 2 generate --model "$work/assets/model" \
  --preprocessed-data "$work/data" >/dev/null 2>&1

for ranks in 1 2; do
  log="$work/train_$ranks.log"
  "$draftforge" --threads 1 train --verifier-name-or-path "$work/assets/model" --data-path "$work/data" \
    --save-path "$work/ckpt_$ranks" --log-dir "$work/logs_$ranks" --draft-vocab-size 128 --epochs 1000 \
    --lr 1e-3 --total-seq-len "$total_seq_len" --num-workers 1 --max-steps "$steps" \
    --gradient-accumulation-steps $((3 - ranks)) --nproc-per-node "$ranks" >"$log" 2>&1
  # Sum tokens, seconds and collective seconds over the epochs of each rank.
  awk -v ranks="$ranks" '
    /epoch [0-9]+ training: / {
      rank = match($0, /\[rank [0-9]+\]/) ? substr($0, RSTART + 6, RLENGTH - 7) : 0
      for (i = 1; i <= NF; ++i) {
        if ($i == "tokens" && $(i + 1) == "in") tokens[rank] += $(i - 1)
        if ($i == "s," && $(i - 2) == "in") seconds[rank] += $(i - 1)
      }
    }
    /epoch [0-9]+ communication: / {
      rank = match($0, /\[rank [0-9]+\]/) ? substr($0, RSTART + 6, RLENGTH - 7) : 0
      for (i = 1; i <= NF; ++i) if ($i == "s" && $(i + 1) == "in") collective[rank] += $(i - 1)
    }
    END {
      for (rank in tokens) {
        printf "ranks %d rank %d: %d tokens in %.2f s, %.0f tokens/s, collectives %.2f s (%.1f%%)\n",
               ranks, rank, tokens[rank], seconds[rank], tokens[rank] / seconds[rank], collective[rank],
               100 * collective[rank] / seconds[rank]
      }
    }' "$log"
done
