#!/usr/bin/env bash
# Print the path of a llama.cpp source archive, fetching it once into a cache.
#
# GitHub is out of reach on CI and on many build machines, but PyPI is not:
# the llama-cpp-python sdist carries the whole llama.cpp tree (commit 0c1e570)
# under vendor/llama.cpp, and scripts/build_llamacpp.sh builds from it.
#
#   bash scripts/fetch_llamacpp_source.sh [--cached]
#
# --cached  never fetch: print the path if the archive is already cached, else exit 1 (offline machines).
set -euo pipefail

readonly VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
cache="${NEMOLAUNCH_SOURCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nemolaunch/sources}"
archive="$cache/llama_cpp_python-$VERSION.tar.gz"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--cached" ]]; then
    [[ -s "$archive" ]] || exit 1
    printf '%s\n' "$archive"
    exit 0
fi
if [[ ! -s "$archive" ]]; then
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/.download.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    printf 'fetching llama-cpp-python %s (llama.cpp source, ~76 MB) from PyPI\n' "$VERSION" >&2
    "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" >&2
    # Rename into place only once complete, so an interrupted fetch is never taken for a whole one.
    mv -f "$tmp/llama_cpp_python-$VERSION.tar.gz" "$archive"
fi
printf '%s\n' "$archive"
