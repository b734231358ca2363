#!/usr/bin/env bash
# Make .venv (once) and install nemolaunch into it, editable, with optional extras.
#
#   bash scripts/install_venv.sh [EXTRAS]     e.g. `test`
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
target="."
if [[ $# -gt 0 && -n "$1" ]]; then
    target=".[$1]"
fi
if [[ ! -x .venv/bin/python ]]; then
    "$python" -m venv .venv
fi
# pip's notes about unreadable local index mirrors are noise here; real errors still fail the install.
.venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' >&2 || true
.venv/bin/python -m pip install --quiet -e "$target" 2>&1 | grep -v '^WARNING: Location' >&2 || true
.venv/bin/python -c 'import nemolaunch, typer, gguf, openai, huggingface_hub, fnv_c' # the install really worked
