#!/usr/bin/env bash
# The main job, from a fresh clone: install nemolaunch, build llama.cpp for this
# machine, and serve a model on http://127.0.0.1:8001/v1.
#
#   bash scripts/quickstart.sh [MODEL.gguf] [nemolaunch serve options...]
#
# With no model it serves the embedded tiny Nemotron-architecture model, since
# the real Ultra needs hundreds of GB of memory and a download.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_venv.sh

# Build llama.cpp for this machine (a no-op in well under a second once built).
source_archive="$(PYTHON=.venv/bin/python bash scripts/fetch_llamacpp_source.sh)"
.venv/bin/nemolaunch build --source "$source_archive"

model="${1:-}"
if [[ $# -gt 0 ]]; then
    shift
fi
if [[ -z "$model" ]]; then
    model="${XDG_CACHE_HOME:-$HOME/.cache}/nemolaunch/tiny-nemotron.gguf"
    mkdir -p "$(dirname "$model")"
    [[ -s "$model" ]] || .venv/bin/nemolaunch tiny-model "$model"
fi
exec .venv/bin/nemolaunch serve --model "$model" --port "${PORT:-8001}" "$@"
