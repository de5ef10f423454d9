#!/usr/bin/env bash
# Encode throughput of draftforge's tokenizer against Hugging Face's Rust
# tokenizers engine (npm package `tokenizers`, pinned in
# bench/hf_tokenizers/package-lock.json), in one run, both pinned to CPU 0.
#
# Usage: bench/tokenizer_vs_hf.sh [TOKENIZER_JSON] [SHAREGPT_JSON] [ROUNDS] [REPEATS]
#   defaults: ../shared/tokenizers/qwen3/tokenizer.json,
#             ../shared/data/sharegpt/dummy_conversation.json, 50 rounds, 3 repeats
# Each side encodes every conversation (message texts joined with "\n") as one
# call, add_special_tokens=false, after one untimed warm-up round. The sides
# alternate REPEATS times (A B A B ...) so that drift of the machine's speed
# hits both. Prints every JSON line, checks that the ids of both engines are
# equal, and prints the ratio of the best rounds against the faster reference
# mode. Needs build/tokenizer_throughput (ninja -C build tokenizer_throughput),
# node and npm.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tokenizer=${1:-$repo_dir/../shared/tokenizers/qwen3/tokenizer.json}
data=${2:-$repo_dir/../shared/data/sharegpt/dummy_conversation.json}
rounds=${3:-50}
repeats=${4:-3}
bench=${TOKENIZER_BENCH:-$repo_dir/build/tokenizer_throughput}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ! -x $bench ]]; then
  echo "missing $bench; build it with: ninja -C $repo_dir/build tokenizer_throughput" >&2
  exit 1
fi
(cd "$repo_dir/bench/hf_tokenizers" && npm ci --no-audit --no-fund --silent)

for ((i = 0; i < repeats; i++)); do
  taskset -c 0 "$bench" "$tokenizer" "$data" "$rounds" "$work/draftforge_ids.jsonl" | tee -a "$work/results.jsonl"
  taskset -c 0 node "$repo_dir/bench/hf_tokenizers/encode.js" "$tokenizer" "$data" "$rounds" "$work/hf_ids.jsonl" |
    tee -a "$work/results.jsonl"
done

if cmp -s "$work/draftforge_ids.jsonl" "$work/hf_ids.jsonl"; then
  echo "ids: equal for all $(wc -l <"$work/hf_ids.jsonl") conversations"
else
  echo "ids: DIFFERENT between draftforge and the reference" >&2
  exit 1
fi

node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse)
const best = (rows) => Math.max(...rows.map((r) => r.best_tokens_per_s))
const mean = (rows) => rows.reduce((s, r) => s + r.mean_tokens_per_s, 0) / rows.length
const df = lines.filter((r) => r.engine === "draftforge")
const hf = lines.filter((r) => r.engine !== "draftforge")
const modes = [...new Set(hf.map((r) => r.mode))]
const hfBest = Math.max(...modes.map((m) => best(hf.filter((r) => r.mode === m))))
const hfMean = Math.max(...modes.map((m) => mean(hf.filter((r) => r.mode === m))))
console.log(JSON.stringify({
  draftforge_best_tokens_per_s: Math.round(best(df)),
  reference_best_tokens_per_s: Math.round(hfBest),
  ratio_best: +(best(df) / hfBest).toFixed(2),
  draftforge_mean_tokens_per_s: Math.round(mean(df)),
  reference_mean_tokens_per_s: Math.round(hfMean),
  ratio_mean: +(mean(df) / hfMean).toFixed(2),
}))' "$work/results.jsonl"
