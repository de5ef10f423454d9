#!/usr/bin/env bash
# Runs every test: installs packages and builds (scripts/setup.sh), installs the
# npm packages the interoperability tests use, then runs ctest. Tests that need
# the shared fixtures find them through DRAFTFORGE_TEST_DATA (default: ../shared
# next to this repository) and are reported as skipped, with the reason, when
# the fixtures are absent. Exits non-zero when any test fails.
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${DRAFTFORGE_BUILD_DIR:-$repo_dir/build}

"$repo_dir/scripts/setup.sh"

if [[ -f "$repo_dir/tests/interop/package-lock.json" ]]; then
  npm ci --prefix "$repo_dir/tests/interop" --no-audit --no-fund --loglevel=error
fi

cd "$build_dir"
ctest --output-on-failure --timeout 1500 "$@"
