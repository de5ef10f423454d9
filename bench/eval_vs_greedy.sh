#!/usr/bin/env bash
# Speculative decoding (`draftforge eval`) against plain greedy decoding with
# the embedded engine, side by side: eval decodes every prompt both ways in
# turn, so drift of the machine's speed hits both. Repeats the run ROUNDS
# times and prints one line per run and the median speedup.
#
# Usage: bench/eval_vs_greedy.sh MODEL_DIR DRAFT_DIR PROMPTS_JSONL [ROUNDS] [K] [NEW_TOKENS] [THREADS]
#   MODEL_DIR      verifier (e.g. the stories260k fixture)
#   DRAFT_DIR      checkpoint directory written by `draftforge train` (config.json + model.safetensors)
#   PROMPTS_JSONL  prompts with input_ids (and optional prefix_len)
# Defaults: 3 rounds, K = 3, 128 new tokens, 1 thread.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
model=${1:?MODEL_DIR}
draft=${2:?DRAFT_DIR}
prompts=${3:?PROMPTS_JSONL}
rounds=${4:-3}
k=${5:-3}
new_tokens=${6:-128}
threads=${7:-1}
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for round in $(seq 1 "$rounds"); do
  "$draftforge" --threads "$threads" --log-level warn eval --verifier "$model" --draft "$draft" \
    --prompts "$prompts" --num-speculative-tokens "$k" --max-new-tokens "$new_tokens" \
    --output "$work/run_$round.json" > /dev/null
done

python3 - "$work" "$rounds" <<'PYTHON'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
speedups = []
for run in range(1, rounds + 1):
    report = json.load(open(f"{work}/run_{run}.json"))
    acceptance = report["acceptance_length"]
    speedups.append(report["speedup"])
    print(json.dumps({
        "round": run,
        "pooled_acceptance_length": acceptance["pooled"],
        "per_request_mean": acceptance["per_request_mean"],
        "speculative_tokens_per_s": report["speculative"]["tokens_per_second"],
        "greedy_tokens_per_s": report["greedy"]["tokens_per_second"],
        "speedup": report["speedup"],
        "lossless": report["lossless"]["equal"],
    }))
print(f"median speedup over {rounds} rounds: {statistics.median(speedups):.3f}x")
PYTHON
