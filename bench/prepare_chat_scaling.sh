#!/usr/bin/env bash
# Whole `draftforge prepare` runs on chat data (render + tokenize + loss masks
# + Arrow write + token_freq.pt) at growing input sizes, to show the wall time
# on all cores and that peak memory does not grow with the input.
#
# Usage: bench/prepare_chat_scaling.sh TOKENIZER_DIR SHAREGPT_JSON [COPIES...]
#   TOKENIZER_DIR  a directory with tokenizer.json and tokenizer_config.json
#   SHAREGPT_JSON  a ShareGPT JSON array (e.g. FastChat's dummy_conversation.json)
#   COPIES         input sizes as multiples of the file (default: 1 4 16)
# Prints one line per size: records, rows, tokens, wall seconds, tokens/s and
# peak resident memory (GNU time's maximum RSS).
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tokenizer=${1:?TOKENIZER_DIR}
source_json=${2:?SHAREGPT_JSON}
shift 2
copies=("$@")
[ ${#copies[@]} -gt 0 ] || copies=(1 4 16)
draftforge=${DRAFTFORGE:-$repo_dir/build/draftforge}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# One JSONL line per conversation; copy k gets its own ids so rows stay distinct.
/usr/bin/python3 - "$source_json" "$work/base.jsonl" <<'PY'
import json, sys
records = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as out:
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
PY

printf '%8s %8s %10s %8s %12s %10s\n' copies records tokens wall_s tokens_per_s max_rss_mb
for k in "${copies[@]}"; do
  input="$work/input_$k.jsonl"
  : > "$input"
  for ((i = 0; i < k; i++)); do cat "$work/base.jsonl" >> "$input"; done
  out="$work/out_$k"
  /usr/bin/time -f '%e %M' -o "$work/time_$k" \
    "$draftforge" prepare --model "$tokenizer" --data "$input" --output "$out" \
    --seq-length 8192 --no-progress --no-sample > "$work/log_$k" 2>&1
  read -r wall rss_kb < "$work/time_$k"
  tokens=$(grep -o 'with [0-9]* tokens' "$work/log_$k" | head -1 | grep -o '[0-9]*')
  records=$(wc -l < "$input")
  awk -v k="$k" -v r="$records" -v t="$tokens" -v w="$wall" -v m="$rss_kb" \
    'BEGIN { printf "%8s %8s %10s %8s %12.0f %10.0f\n", k, r, t, w, t / w, m / 1024 }'
done
