#!/usr/bin/env bash
# Runs the whole draftforge pipeline offline on a built-in demo: installs
# packages and builds (scripts/setup.sh), writes a small random Llama and
# synthetic token data, then prepare -> generate (hidden states with the
# embedded CPU engine) -> vocab mapping -> EAGLE-3 training. Everything goes to
# ${DEMO_DIR:-/tmp/draftforge-demo}; the final checkpoint is a directory that
# vLLM loads as a speculator.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${DRAFTFORGE_BUILD_DIR:-$repo_dir/build}
demo_dir=${DEMO_DIR:-/tmp/draftforge-demo}

"$repo_dir/scripts/setup.sh"
draftforge="$build_dir/draftforge"

rm -rf "$demo_dir"
mkdir -p "$demo_dir"
set -x
"$draftforge" demo-assets --output "$demo_dir/assets"
"$draftforge" prepare --model "$demo_dir/assets/model" --data "$demo_dir/assets/train.jsonl" \
  --output "$demo_dir/data" --seq-length 512
"$draftforge" generate --model "$demo_dir/assets/model" --preprocessed-data "$demo_dir/data" \
  --validate-outputs
"$draftforge" train --verifier-name-or-path "$demo_dir/assets/model" --data-path "$demo_dir/data" \
  --save-path "$demo_dir/checkpoints" --log-dir "$demo_dir/logs" \
  --draft-vocab-size 128 --epochs 3 --lr 1e-3 --total-seq-len 2048
set +x
echo
echo "demo: checkpoints in $demo_dir/checkpoints:"
ls -l "$demo_dir/checkpoints"
echo "demo: last checkpoint's config.json:"
cat "$demo_dir/checkpoints/2/config.json"
