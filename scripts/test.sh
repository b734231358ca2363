#!/usr/bin/env bash
# The test command: from a fresh clone to the full test suite, on the real llama.cpp.
#
#   bash scripts/test.sh [pytest args...]
#
# Makes .venv, installs nemolaunch with its test extra, builds llama.cpp (CPU)
# with nemolaunch's own `build` command from the llama-cpp-python sdist (cached
# outside the checkout, so a warm run skips the build), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_venv.sh test

source_archive="$(PYTHON=.venv/bin/python bash scripts/fetch_llamacpp_source.sh)"
start=$(date +%s)
build_json="$(.venv/bin/nemolaunch build --backend cpu --source "$source_archive" --json)"
printf 'llama.cpp build: %ss %s\n' "$(( $(date +%s) - start ))" "$build_json" | tr -s ' \n' ' ' >&2
echo >&2
bin_dir="$(.venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["bin_dir"])' <<<"$build_json")"

# The smoke tests use this build and fail (not skip) if it is unusable.
export NEMOLAUNCH_TEST_LLAMA_CPP="$bin_dir"
export NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE="$source_archive"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
exec .venv/bin/python -m pytest -q "$@"
