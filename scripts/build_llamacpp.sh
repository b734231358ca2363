#!/usr/bin/env bash
# Build llama.cpp's llama-server, llama-cli, llama-gguf-split and the RPC worker.
#
# This script is the one place that knows the CMake recipe. nemolaunch's `build`
# command runs it; people may run it by hand too.
#
#   scripts/build_llamacpp.sh [--source DIR|TARBALL] [--ref REF]
#                             [--backend auto|cuda|metal|cpu] [--cuda-arch LIST]
#                             [--prefix DIR] [--jobs N] [--web-ui auto|npm|prebuilt|off]
#
# --source   a llama.cpp tree, or an archive holding one (for example the
#            llama-cpp-python sdist, whose tree is under vendor/llama.cpp).
#            Without it: a shallow git clone of LLAMA_CPP_REPO at --ref.
# --ref      the git ref to clone (default: the pinned, tested one below).
# --backend  auto (CUDA where nvcc or an NVIDIA driver is present, Metal on
#            macOS arm64, else CPU), cuda, metal or cpu.
# --cuda-arch  the GPUs' compute capabilities for CMAKE_CUDA_ARCHITECTURES,
#            such as 90 (H100/H200), 100 (B200), 120 (RTX 50xx), 89 (RTX 40xx)
#            or "86;89" (default: llama.cpp's "native", the GPUs visible here,
#            so a machine without a visible GPU, a container build, needs it).
# --prefix   where bin/ lands (default: ./llama.cpp-build).
# --jobs     parallel compile jobs (default: the number of CPUs).
# --web-ui   llama-server's web chat (tools/ui): npm builds it from the tree's
#            source (npm ci + npm run build, ~2.5 min); prebuilt fetches
#            llama.cpp's built assets from a Hugging Face bucket; off leaves it
#            out. auto: npm when npm is on PATH, else prebuilt when the Hub
#            answers, else off. PREFIX/web-ui.txt says what the build got.
#
# Idempotent: PREFIX/build-stamp.txt records the source hash, ref, backend,
# CMake flags and compiler; when all of them match and the binaries exist, the
# script does nothing. Exit codes: 0 built or up to date, 2 bad usage,
# 3 a missing tool or library, 4 a source that holds no llama.cpp tree,
# 5 the build failed.
set -euo pipefail

readonly LLAMA_CPP_REPO="${LLAMA_CPP_REPO:-https://github.com/ggml-org/llama.cpp}"
# The llama.cpp commit vendored by llama-cpp-python 0.3.36 (2026-10-01), which
# nemolaunch is tested against: it has nemotron_h_moe with latent MoE and --fit.
readonly PINNED_REF="0c1e570"
readonly TARGETS=(llama-server llama-cli llama-gguf-split ggml-rpc-server)

die() {
    local code="$1"
    shift
    printf 'build_llamacpp: error: %s\n' "$*" >&2
    exit "$code"
}
say() { printf 'build_llamacpp: %s\n' "$*" >&2; }

usage() {
    sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'
}

source_arg=""
ref="$PINNED_REF"
backend="auto"
prefix="./llama.cpp-build"
jobs=""
cuda_arch=""
web_ui="auto"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) [[ $# -ge 2 ]] || die 2 "--source needs a directory or an archive"; source_arg="$2"; shift 2 ;;
        --ref) [[ $# -ge 2 ]] || die 2 "--ref needs a git ref"; ref="$2"; shift 2 ;;
        --backend) [[ $# -ge 2 ]] || die 2 "--backend needs one of auto, cuda, metal, cpu"; backend="$2"; shift 2 ;;
        --cuda-arch) [[ $# -ge 2 ]] || die 2 "--cuda-arch needs a list such as 90 or '86;89'"; cuda_arch="$2"; shift 2 ;;
        --prefix) [[ $# -ge 2 ]] || die 2 "--prefix needs a directory"; prefix="$2"; shift 2 ;;
        --jobs) [[ $# -ge 2 ]] || die 2 "--jobs needs a number"; jobs="$2"; shift 2 ;;
        --web-ui) [[ $# -ge 2 ]] || die 2 "--web-ui needs one of auto, npm, prebuilt, off"; web_ui="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die 2 "unknown option '$1' (see --help)" ;;
    esac
done

case "$backend" in
    auto | cuda | metal | cpu) ;;
    *) die 2 "--backend must be one of auto, cuda, metal, cpu (got '$backend')" ;;
esac
if [[ -z "$jobs" ]]; then
    jobs="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
fi
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die 2 "--jobs must be a positive whole number (got '$jobs')"
case "$web_ui" in
    auto | npm | prebuilt | off) ;;
    *) die 2 "--web-ui must be one of auto, npm, prebuilt, off (got '$web_ui')" ;;
esac
if [[ "$web_ui" == "auto" ]]; then
    if command -v npm >/dev/null 2>&1; then
        web_ui="npm"
    elif [[ "${HF_HUB_OFFLINE:-0}" != "1" ]] && timeout 5 bash -c ': >/dev/tcp/huggingface.co/443' 2>/dev/null; then
        web_ui="prebuilt"
    else
        web_ui="off"
    fi
    say "web UI auto -> $web_ui"
fi
if [[ "$web_ui" == "npm" ]] && ! command -v npm >/dev/null 2>&1; then
    die 3 "--web-ui npm needs npm: install Node.js 20 or newer with npm, or pass --web-ui off"
fi
if [[ -n "$cuda_arch" ]]; then
    # CMake's list separator is ';'; a comma is easier to type in a shell.
    cuda_arch="${cuda_arch//,/;}"
    [[ "$cuda_arch" =~ ^[0-9A-Za-z_-]+(;[0-9A-Za-z_-]+)*$ ]] ||
        die 2 "--cuda-arch must be compute capabilities such as 90 or '86;89' (got '$cuda_arch')"
fi

find_nvcc() {
    if command -v nvcc >/dev/null 2>&1; then
        command -v nvcc
    elif [[ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]]; then
        printf '%s\n' "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc"
    fi
}

if [[ "$backend" == "auto" ]]; then
    if [[ "$(uname -s)" == "Darwin" && "$(uname -m)" == "arm64" ]]; then
        backend="metal"
    elif [[ -n "$(find_nvcc)" ]] || [[ -e /proc/driver/nvidia/version ]] || command -v nvidia-smi >/dev/null 2>&1; then
        backend="cuda"
    else
        backend="cpu"
    fi
    say "backend auto -> $backend"
fi
if [[ -n "$cuda_arch" && "$backend" != "cuda" ]]; then
    die 2 "--cuda-arch is for CUDA builds, and this one is $backend: drop it, or pass --backend cuda"
fi

# Tools first: a missing one is one clear line, before anything is written.
command -v cmake >/dev/null 2>&1 || die 3 "cmake not found: install CMake 3.14 or newer (apt-get install cmake, brew install cmake or pip install cmake)"
cxx="${CXX:-}"
if [[ -z "$cxx" ]]; then
    for candidate in c++ g++ clang++; do
        if command -v "$candidate" >/dev/null 2>&1; then
            cxx="$candidate"
            break
        fi
    done
fi
if [[ -z "$cxx" ]] || ! command -v "$cxx" >/dev/null 2>&1; then
    die 3 "no C++ compiler found: install one (apt-get install build-essential, or xcode-select --install on macOS) or set CXX"
fi
nvcc=""
if [[ "$backend" == "cuda" ]]; then
    nvcc="$(find_nvcc)"
    [[ -n "$nvcc" ]] || die 3 "--backend cuda needs nvcc: install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) and put nvcc on PATH"
fi
if [[ "$backend" == "metal" && "$(uname -s)" != "Darwin" ]]; then
    die 2 "--backend metal needs macOS"
fi

hash_file() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}
hash_stdin() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# The tree's identity: an archive's sha256; a git checkout's HEAD plus its
# uncommitted changes; otherwise a listing of the build-relevant files with
# sizes and mtimes (cheap, and it changes whenever a file is edited).
tree_id() {
    local dir="$1"
    if git -C "$dir" rev-parse --is-inside-work-tree >/dev/null 2>&1 && [[ "$(git -C "$dir" rev-parse --show-toplevel)" == "$(cd "$dir" && pwd -P)" ]]; then
        { git -C "$dir" rev-parse HEAD; git -C "$dir" status --porcelain; } | hash_stdin
    else
        local entries=() entry
        for entry in CMakeLists.txt cmake common ggml include src tools vendor; do
            [[ -e "$dir/$entry" ]] && entries+=("$entry")
        done
        (cd "$dir" && find "${entries[@]}" -type f -printf '%p %s %T@\n' | LC_ALL=C sort | hash_stdin)
    fi
}

# Find the llama.cpp tree inside a directory: the directory itself, one level
# down (an extracted release), or vendor/llama.cpp (the llama-cpp-python sdist).
locate_tree() {
    local root="$1" candidate
    for candidate in "$root" "$root"/* "$root"/vendor/llama.cpp "$root"/*/vendor/llama.cpp; do
        if [[ -f "$candidate/CMakeLists.txt" && -f "$candidate/include/llama.h" && -d "$candidate/tools/server" ]]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd -P)"
stamp="$prefix/build-stamp.txt"
work="$prefix/work"

cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DGGML_RPC=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_OPENSSL=OFF
)
# The web UI: built here by npm, or llama.cpp's prebuilt assets from a Hugging Face bucket (which
# needs the Hub at build time). "off" keeps exactly the flags of builds made before the UI was
# offered, so their stamps still match and they stay up to date.
case "$web_ui" in
    npm) cmake_flags+=(-DLLAMA_BUILD_UI=ON -DLLAMA_USE_PREBUILT_UI=OFF) ;;
    prebuilt) cmake_flags+=(-DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=ON) ;;
    off) cmake_flags+=(-DLLAMA_USE_PREBUILT_UI=OFF) ;;
esac
case "$backend" in
    cuda)
        cmake_flags+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc")
        [[ -z "$cuda_arch" ]] || cmake_flags+=("-DCMAKE_CUDA_ARCHITECTURES=$cuda_arch")
        ;;
    metal) cmake_flags+=(-DGGML_METAL=ON) ;;
    cpu) cmake_flags+=(-DGGML_CUDA=OFF -DGGML_METAL=OFF) ;;
esac

compiler="$("$cxx" --version 2>/dev/null | head -n 1)"
if [[ -n "$nvcc" ]]; then
    compiler="$compiler; $("$nvcc" --version 2>/dev/null | tail -n 1)"
fi
if [[ "$web_ui" == "npm" ]]; then
    # A new node can build different UI assets: its version is part of the build's identity.
    compiler="$compiler; node $(node --version 2>/dev/null || echo unknown)"
fi

# Resolve the source's identity without extracting or cloning when possible,
# so that an up-to-date build is a no-op in well under two seconds.
source_kind=""
source_path=""
if [[ -n "$source_arg" ]]; then
    [[ -e "$source_arg" ]] || die 4 "--source '$source_arg' does not exist: pass a llama.cpp directory or an archive holding one"
    source_path="$(cd "$(dirname "$source_arg")" && pwd -P)/$(basename "$source_arg")"
    if [[ -d "$source_path" ]]; then
        source_kind="dir"
        tree="$(locate_tree "$source_path")" || die 4 "--source '$source_arg' holds no llama.cpp tree (looked for CMakeLists.txt, include/llama.h and tools/server, also under vendor/llama.cpp)"
        source_id="dir:$(tree_id "$tree")"
    elif [[ -f "$source_path" ]]; then
        source_kind="archive"
        source_id="archive:$(hash_file "$source_path")"
    else
        die 4 "--source '$source_arg' is neither a directory nor an archive"
    fi
    ref_recorded="(from --source)"
else
    source_kind="git"
    source_id="git:$ref"
    ref_recorded="$ref"
fi

stamp_text="$(printf 'source=%s\nref=%s\nbackend=%s\nflags=%s\ncompiler=%s\n' \
    "$source_id" "$ref_recorded" "$backend" "${cmake_flags[*]}" "$compiler")"

binaries_present() {
    local target
    for target in "${TARGETS[@]}"; do
        [[ -x "$prefix/bin/$target" ]] || return 1
    done
}

if [[ -f "$stamp" ]] && binaries_present && [[ "$(cat "$stamp")" == "$stamp_text" ]]; then
    say "up to date: $prefix/bin ($backend, $source_id)"
    [[ ! -f "$prefix/web-ui.txt" ]] || say "web UI: $(cat "$prefix/web-ui.txt")"
    exit 0
fi

case "$source_kind" in
    dir) ;;
    archive)
        rm -rf "$work/src"
        mkdir -p "$work/src"
        say "extracting $source_path"
        tar -xf "$source_path" -C "$work/src" || die 4 "--source '$source_arg' is not an archive tar can read"
        tree="$(locate_tree "$work/src")" || die 4 "--source '$source_arg' holds no llama.cpp tree (looked for CMakeLists.txt, include/llama.h and tools/server, also under vendor/llama.cpp)"
        ;;
    git)
        command -v git >/dev/null 2>&1 || die 3 "git not found: install git, or pass --source with a llama.cpp tree or archive"
        rm -rf "$work/src"
        mkdir -p "$work/src"
        say "cloning $LLAMA_CPP_REPO at $ref"
        git -C "$work/src" init -q
        git -C "$work/src" remote add origin "$LLAMA_CPP_REPO"
        git -C "$work/src" fetch -q --depth 1 origin "$ref" || die 4 "could not fetch $ref from $LLAMA_CPP_REPO: check the network, or pass --source"
        git -C "$work/src" checkout -q FETCH_HEAD
        tree="$work/src"
        ;;
esac

# ccache speeds a rebuild up but does not change the binaries, so it stays out of the stamp.
if command -v ccache >/dev/null 2>&1; then
    cmake_flags+=(-DGGML_CCACHE=ON)
else
    cmake_flags+=(-DGGML_CCACHE=OFF)
fi

build_dir="$work/build"
say "configuring ($backend) in $build_dir"
# A changed flag set must not reuse a stale CMake cache.
rm -f "$build_dir/CMakeCache.txt"
mkdir -p "$build_dir"
configure_log="$work/configure.log"
if ! cmake -S "$tree" -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" "${cmake_flags[@]}" 2>&1 | tee "$configure_log"; then
    # CMake's own words for the two usual CUDA set-up gaps are easy to miss in the log: name them.
    if [[ "$backend" == "cuda" ]] && grep -q -e 'Unable to find cublas_v2.h' -e 'CUDA::cublas' "$configure_log"; then
        cuda_release="$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1-\2/p')"
        die 3 "the CUDA toolkit of $nvcc has no cuBLAS (cublas_v2.h, libcublas), which llama.cpp needs: install it (apt-get install libcublas-dev-${cuda_release:-<version>}, or the full CUDA toolkit)"
    fi
    if [[ "$backend" == "cuda" ]] && grep -q 'but no GPU was detected' "$configure_log"; then
        die 2 "no NVIDIA GPU is visible here for llama.cpp's default CUDA target 'native': pass --cuda-arch with the GPUs' compute capability (90 for H100/H200, 100 for B200, 120 for RTX 50xx, 89 for RTX 40xx, 86 for RTX 30xx) or --backend cpu"
    fi
    die 5 "cmake configure failed (see the log above)"
fi
say "building ${TARGETS[*]} with $jobs jobs"
if ! cmake --build "$build_dir" --config Release -j "$jobs" --target "${TARGETS[@]}"; then
    die 5 "cmake build failed (see the log above)"
fi

mkdir -p "$prefix/bin"
for target in "${TARGETS[@]}"; do
    built="$build_dir/bin/$target"
    [[ -x "$built" ]] || die 5 "the build did not produce $target"
    # Copy to a temporary name and rename, so a reader never sees half a binary.
    cp "$built" "$prefix/bin/.$target.tmp"
    mv -f "$prefix/bin/.$target.tmp" "$prefix/bin/$target"
done
# llama.cpp's docs call the RPC worker rpc-server; keep that name too.
ln -sf ggml-rpc-server "$prefix/bin/rpc-server"

# What llama-server got for its web UI, read from the header llama.cpp generates: one line, for
# `nemolaunch build` and `serve` to repeat (npm or the Hub can fail without failing the build).
if grep -qs '^#define LLAMA_UI_HAS_ASSETS' "$build_dir/tools/ui/ui.h"; then
    case "$web_ui" in
        npm) web_ui_result="built with npm ($(node --version 2>/dev/null || echo node))" ;;
        *) web_ui_result="prebuilt, from the Hugging Face bucket" ;;
    esac
else
    case "$web_ui" in
        npm) web_ui_result="none: npm could not build it (see $prefix/build.log)" ;;
        prebuilt) web_ui_result="none: the prebuilt assets could not be fetched from the Hugging Face Hub" ;;
        *) web_ui_result="none: neither npm nor the Hugging Face Hub was available to build it" ;;
    esac
fi
printf '%s\n' "$web_ui_result" >"$prefix/web-ui.txt.tmp"
mv -f "$prefix/web-ui.txt.tmp" "$prefix/web-ui.txt"
say "web UI: $web_ui_result"

printf '%s\n' "$stamp_text" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
say "built: $prefix/bin"
