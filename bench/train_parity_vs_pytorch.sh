#!/usr/bin/env bash
# Training trajectory of `draftforge train` against the PyTorch eager float32
# reference (bench/reference/eagle3_train_reference.py, recipe mode) on the
# same hidden-states files, with the same seed, the same batches (both shuffle
# with NumPy's default_rng(epoch)) and the same learning-rate schedule. Noise
# is off by default, because the two draw it from different random streams.
# Both draw the initial weights from torch's CPU generator seeded with --seed,
# in the same order, so what is left is the order of floating-point operations.
#
# Usage: bench/train_parity_vs_pytorch.sh MODEL_DIR DATA_DIR LAYER_IDS [EPOCHS] [SCHEDULED_EPOCHS] [NOISE_STD] [SEED]
#   MODEL_DIR         Hugging Face verifier (e.g. the stories260k fixture)
#   DATA_DIR          `draftforge prepare` output with hidden_states/ from `draftforge generate`
#                     and d2t.npy / t2d.npy (draftforge train writes them on its first run)
#   LAYER_IDS         the ids the files were generated with, comma separated (e.g. 1,2,3,5)
#   EPOCHS            epochs to train (default 2)
#   SCHEDULED_EPOCHS  epochs the learning-rate schedule spans (default 10)
#   NOISE_STD         --noise-std for both (default 0)
#   SEED              --seed for both (default 42)
# Both use 2 threads, --lr 1e-3, 8192-token rows, 3 TTT steps and a 256-token
# draft vocabulary. Needs Debian's python3-torch and python3-numpy
# (/usr/bin/python3). Prints per-step training losses side by side at a few
# steps, the largest relative difference over all steps, and the validation
# metrics of every epoch.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}
[[ $# -ge 3 ]] || usage

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=$1
data=$2
layer_ids=$3
epochs=${4:-2}
scheduled=${5:-10}
noise=${6:-0}
seed=${7:-42}
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs a command with its output in LOG. On failure, prints the end of LOG.
run_logged() {
  local log=$1
  shift
  if ! "$@" > "$log" 2>&1; then
    echo "failed: $*" >&2
    tail -n 20 "$log" >&2
    exit 1
  fi
}

# One draftforge run of one epoch resolves the vocabulary mapping and reports
# the batch count, which fixes the schedule that both sides then use.
run_logged "$work/probe.log" "$draftforge" --threads 2 train --verifier-name-or-path "$model" --data-path "$data" \
  --save-path "$work/probe_ckpt" --log-dir "$work/probe_logs" --draft-vocab-size 256 --lr 1e-3 \
  --epochs 1 --max-steps 1 --layer-ids ${layer_ids//,/ } --on-missing raise
batches=$(sed -n 's/.* \([0-9]*\) training batches per epoch.*/\1/p' "$work/probe.log" | head -1)

# Both sides must read the same files: the reference reads only the
# hidden-states files, while draftforge would generate missing ones.
rows=$(sed -n 's/.*: \([0-9]*\) training rows, \([0-9]*\) validation rows.*/\1 + \2/p' "$work/probe.log" | head -1)
rows=$((rows))
files=$(find "$data/hidden_states" -maxdepth 1 -name 'hs_*.safetensors' | wc -l)
if [[ "$files" -ne "$rows" ]]; then
  echo "$data has $rows dataset rows but $files hidden-states files; run \`draftforge generate\` on it" \
    "first, so that both sides train on the same files" >&2
  exit 1
fi
total=$((scheduled * batches))
warmup=$((total / 100))
echo "batches per epoch: $batches, schedule: $total steps with $warmup warm-up steps"

start=$(date +%s)
run_logged "$work/draftforge.log" "$draftforge" --threads 2 train --verifier-name-or-path "$model" \
  --data-path "$data" --save-path "$work/ckpt" --log-dir "$work/logs" --draft-vocab-size 256 --lr 1e-3 \
  --epochs "$epochs" --scheduler-total-steps "$total" --scheduler-warmup-steps "$warmup" \
  --noise-std "$noise" --seed "$seed" --layer-ids ${layer_ids//,/ } --on-missing raise
echo "draftforge: $(( $(date +%s) - start )) s"

start=$(date +%s)
if ! MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 /usr/bin/python3 \
  "$repo_dir/bench/reference/eagle3_train_reference.py" --model "$model" --data "$data" \
  --epochs "$epochs" --epochs-scheduled "$scheduled" --lr 1e-3 --noise-std "$noise" --seed "$seed" \
  --threads 2 --step-log "$work/reference_steps.jsonl" > "$work/reference_epochs.jsonl"; then
  echo "failed: the PyTorch reference (its error is above)" >&2
  exit 1
fi
echo "reference: $(( $(date +%s) - start )) s"

/usr/bin/python3 - "$work/logs/metrics.jsonl" "$work/reference_steps.jsonl" "$work/reference_epochs.jsonl" <<'PY'
import json, sys
ours = [json.loads(line) for line in open(sys.argv[1])]
steps = {r["step"]: r for r in ours if "train/loss" in r}
validation = [r for r in ours if "val/loss_epoch" in r]
reference_steps = [json.loads(line) for line in open(sys.argv[2])]
reference_epochs = [json.loads(line) for line in open(sys.argv[3])]

worst, worst_step = 0.0, None
shown = {0, 1, 2, 5, 10, 20, 50, 100}
print("step  draftforge loss  reference loss  relative difference")
for record in reference_steps:
    step = record["step"]
    if step not in steps:
        continue
    a, b = steps[step]["train/loss"], record["train/loss"]
    difference = abs(a - b) / abs(b)
    if difference > worst:
        worst, worst_step = difference, step
    if step in shown or step % 100 == 0:
        print(f"{step:4d}  {a:15.6f}  {b:14.6f}  {difference:.2e}")
if worst_step is None:
    print(f"largest relative training-loss difference: 0 over {len(reference_steps)} steps")
else:
    print(f"largest relative training-loss difference: {worst:.2e} at step {worst_step}")

names = ["loss", "full_acc_0", "full_acc_1", "full_acc_2", "cond_acc_1", "cond_acc_2"]
print("epoch  " + "  ".join(f"{n} (draftforge / reference)" for n in names))
for a, b in zip(validation, reference_epochs):
    cells = [f"{a[f'val/{n}_epoch']:.4f} / {b[f'val/{n}_epoch']:.4f}" for n in names]
    print(f"{a['epoch']:5d}  " + "  ".join(cells))
PY
