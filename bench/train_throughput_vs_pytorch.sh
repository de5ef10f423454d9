#!/usr/bin/env bash
# Training throughput of `draftforge train` against a PyTorch eager float32
# implementation of the same EAGLE-3 step (bench/reference/), side by side on
# the same hidden-states files, alternating A B A B ... so that drift of the
# machine's speed hits both.
#
# Usage: bench/train_throughput_vs_pytorch.sh MODEL_DIR DATA_DIR LAYER_IDS [ROUNDS] [STEPS]
#   MODEL_DIR  Hugging Face verifier (e.g. the stories260k fixture)
#   DATA_DIR   `draftforge prepare` output with hidden_states/ from `draftforge generate`
#   LAYER_IDS  the ids the files were generated with, comma separated (e.g. 1,2,3,5)
# Needs Debian's python3-torch (/usr/bin/python3). Prints one JSON line per run
# and the medians. Both sides use 2 threads, total sequence length 8192,
# 3 TTT steps and a 256-token draft vocabulary.
#
# The reference runs twice per round: as it comes, and with the settings
# draftforge applies to itself, so the comparison does not hinge on them:
# glibc keeps freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_) and
# idle OpenMP and OpenBLAS workers sleep (OMP_WAIT_POLICY=PASSIVE,
# OPENBLAS_THREAD_TIMEOUT=4).
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${1:?MODEL_DIR}
data=${2:?DATA_DIR}
layer_ids=${3:?LAYER_IDS}
rounds=${4:-3}
steps=${5:-40}
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run_draftforge() {
  rm -rf "$work/ckpt" "$work/logs"
  "$draftforge" --threads 2 train --verifier-name-or-path "$model" --data-path "$data" \
    --save-path "$work/ckpt" --log-dir "$work/logs" --draft-vocab-size 256 --lr 1e-3 \
    --epochs 1 --layer-ids ${layer_ids//,/ } --max-steps "$steps" --num-workers 1 2>&1 |
    sed -n 's/.*epoch 0 training: \([0-9]*\) tokens in \([0-9.]*\) s, \([0-9]*\) tokens\/s.*/{"implementation": "draftforge", "tokens": \1, "seconds": \2, "tokens_per_second": \3}/p'
}

run_reference() {
  /usr/bin/python3 "$repo_dir/bench/reference/eagle3_train_reference.py" --model "$model" \
    --hidden-states "$data/hidden_states" --steps "$steps" --warmup-steps 1 --threads 2
}

results="$work/results.jsonl"
for round in $(seq "$rounds"); do
  run_draftforge | tee -a "$results"
  run_reference | sed 's/"pytorch-eager-fp32"/"pytorch-eager-fp32 (glibc default)"/' | tee -a "$results"
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 OMP_WAIT_POLICY=PASSIVE OPENBLAS_THREAD_TIMEOUT=4 \
    run_reference | sed 's/"pytorch-eager-fp32"/"pytorch-eager-fp32 (draftforge'"'"'s environment)"/' |
    tee -a "$results"
done

/usr/bin/python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
medians = {}
for name in dict.fromkeys(r["implementation"] for r in runs):
    medians[name] = statistics.median(r["tokens_per_second"] for r in runs if r["implementation"] == name)
    print(f"median {name}: {medians[name]:.0f} tokens/s")
for name, value in medians.items():
    if name != "draftforge":
        print(f"ratio draftforge / {name}: {medians['draftforge'] / value:.2f}")
PY
