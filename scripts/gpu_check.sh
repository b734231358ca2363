#!/usr/bin/env bash
# Check nemolaunch on an NVIDIA machine, offline, in one command (about 12 minutes on 16 cores).
#
#   bash scripts/gpu_check.sh [--source ARCHIVE|DIR] [--llama-cpp DIR] [--cuda-arch LIST] [--jobs N]
#                             [--out DIR] [--wheels DIR] [--skip-tests] [--skip-download] [--budget SECONDS]
#
# Steps, each under a time limit, each a row of the summary table at the end:
#   gpu       nvidia-smi lists a GPU (else one line and exit 4, before anything is written)
#   venv      .venv of this checkout, reused; else made by scripts/install_venv.sh (from --wheels offline)
#   build     `nemolaunch build --backend cuda --source ...` (a warm build is a no-op), or --llama-cpp DIR
#   doctor    `nemolaunch doctor --json` recorded; the table (with the build's devices) shown
#   plan      `nemolaunch plan --json` for the Ultra (built-in figures: HF_HUB_OFFLINE=1) recorded
#   serve     `nemolaunch serve` on the tiny model with that build: /health, the server's pid in
#             `nvidia-smi --query-compute-apps`, a CUDA device in its log, one chat completion, Ctrl-C
#   tests     the test suite against that build (NEMOLAUNCH_TEST_LLAMA_CPP); --skip-tests skips it
#   forecast  benchmarks/forecast_vs_rss.py --gpu: peak VRAM (NVML) + RSS against the memory forecast
#   download  benchmarks/download_vs_curl.py on this machine's cores: 2 GB in 4 shards from the loopback
#             hub against curl and `hf download` (3 runs), and bytes fetched twice after a kill -9;
#             --skip-download skips it
#
# --source     llama.cpp tree or archive [default: $NEMOLAUNCH_LLAMA_CPP_SOURCE, else the archive
#              scripts/fetch_llamacpp_source.sh cached]; nothing is downloaded here
# --llama-cpp  use this CUDA build's bin folder rather than building one
# --cuda-arch  GPU targets for the build, e.g. 90 (needed where no GPU is visible to the build)
# --out        folder for everything this prints and records [default: gpu-check-DATE in the checkout];
#              at most 8 files: summary.txt (all it printed), build.log, doctor.json, plan.json,
#              serve.log, tests.log, forecast.txt, download.txt
# --wheels     a folder of wheels to install .venv from with `pip --no-index` (a machine without PyPI:
#              on a connected one, `pip download -d DIR pip 'setuptools>=77'` and `pip wheel -w DIR '.[test]'`)
# --budget     seconds for the whole run [default: 720]; a step that would start with too little
#              time left is "not run", never faked
#
# Exit: 0 every step passed (or was skipped on request), 1 a step failed or was not run,
# 2 bad usage, 4 no NVIDIA GPU here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd -P)"

die() {
    printf 'gpu_check: error: %s\n' "$*" >&2
    exit 2
}

source_arg="${NEMOLAUNCH_LLAMA_CPP_SOURCE:-}"
llama_cpp=""
cuda_arch=""
jobs=""
out=""
wheels=""
skip_tests=0
skip_download=0
budget=720
while [[ $# -gt 0 ]]; do
    case "$1" in
        --source) [[ $# -ge 2 ]] || die "--source needs a llama.cpp tree or archive"; source_arg="$2"; shift 2 ;;
        --llama-cpp) [[ $# -ge 2 ]] || die "--llama-cpp needs a folder holding llama-server"; llama_cpp="$2"; shift 2 ;;
        --cuda-arch) [[ $# -ge 2 ]] || die "--cuda-arch needs a list such as 90 or 86,89"; cuda_arch="$2"; shift 2 ;;
        --jobs) [[ $# -ge 2 ]] || die "--jobs needs a number"; jobs="$2"; shift 2 ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a folder"; out="$2"; shift 2 ;;
        --wheels) [[ $# -ge 2 ]] || die "--wheels needs a folder of wheels"; wheels="$2"; shift 2 ;;
        --budget) [[ $# -ge 2 ]] || die "--budget needs seconds"; budget="$2"; shift 2 ;;
        --skip-tests) skip_tests=1; shift ;;
        --skip-download) skip_download=1; shift ;;
        -h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ -z "$jobs" || "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive whole number (got '$jobs')"
[[ "$budget" =~ ^[1-9][0-9]*$ ]] || die "--budget must be a positive number of seconds (got '$budget')"
[[ -z "$wheels" || -d "$wheels" ]] || die "--wheels '$wheels' is not a folder"
[[ -z "$llama_cpp" || -x "$llama_cpp/llama-server" ]] || die "--llama-cpp '$llama_cpp' holds no llama-server"

# --- gpu: refuse at once, in one line and writing nothing, where there is no NVIDIA GPU ---------------
no_gpu() {
    printf 'gpu_check: no NVIDIA GPU here (%s): run it on a machine with an NVIDIA GPU and driver\n' "$1" >&2
    exit 4
}
command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi not found"
gpu_list="$(timeout 60 nvidia-smi -L 2>&1)" || no_gpu "nvidia-smi -L failed: $(head -n 1 <<<"$gpu_list")"
grep -q '^GPU [0-9]' <<<"$gpu_list" || no_gpu "nvidia-smi -L lists no GPU: $(head -n 1 <<<"${gpu_list:-nothing}")"

started=$(date +%s)
deadline=$((started + budget))
[[ -n "$out" ]] || out="$repo/gpu-check-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out="$(cd "$out" && pwd -P)"
# Everything printed from here on is also in summary.txt.
exec > >(tee -a "$out/summary.txt") 2>&1

work="$(mktemp -d)"
server_pid=""
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    # The server this script started, if a step left it running (it is this script's own child).
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

steps=()
declare -A status seconds figure
record() { # record STEP STATUS SECONDS FIGURE
    steps+=("$1")
    status[$1]="$2"
    seconds[$1]="$3"
    figure[$1]="$4"
    printf '==> %s: %s (%ss) %s\n' "$1" "$2" "$3" "$4"
}
say() { printf '\n==> %s\n' "$*"; }
# The seconds a step may take: its own cap, or what is left of the budget if that is less.
limit_for() {
    local cap="$1" left=$((deadline - $(date +%s)))
    ((left < cap)) && cap=$left
    ((cap > 0)) || cap=1
    printf '%s\n' "$cap"
}
# too_late SECONDS: true when less than that is left of the budget (the step is then "not run").
too_late() { (($(date +%s) + $1 > deadline)); }
# run_limited LIMIT CMD...: the command under a time limit; Ctrl-C first, so it can clean up after itself.
run_limited() {
    local limit="$1"
    shift
    timeout --signal=INT --kill-after=30 "$limit" "$@"
}
rc_words() { # what an exit status means, for the table
    case "$1" in
        124 | 137) printf 'timed out' ;;
        *) printf 'exit %s' "$1" ;;
    esac
}
py() { .venv/bin/python "$@"; }

gpu_figure="$(timeout 60 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null |
    awk -F', ' 'NR == 1 {name = $1; memory = $2; driver = $3} END {printf "%d x %s (%s), driver %s", NR, name, memory, driver}')" ||
    gpu_figure="$(grep -c '^GPU [0-9]' <<<"$gpu_list") GPU(s)"
say "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) in $repo; results in $out"
printf '%s\n' "$gpu_list"
record gpu ok 0 "$gpu_figure"

# --- venv ------------------------------------------------------------------------------------------------
say "venv"
t0=$(date +%s)
venv_ok=0
if [[ -n "$wheels" ]]; then
    # Every pip from here on (install_venv.sh, the packaging test's wheel build) takes the wheels, offline.
    PIP_FIND_LINKS="$(cd "$wheels" && pwd -P)"
    export PIP_NO_INDEX=1 PIP_FIND_LINKS
fi
# A .venv carried from elsewhere may hold another checkout's nemolaunch (an editable install points
# at the folder it was made in): the nemolaunch imported must be this checkout's.
this_checkout='import pathlib, sys, nemolaunch, pytest; sys.exit(not pathlib.Path(nemolaunch.__file__).resolve().is_relative_to(pathlib.Path.cwd() / "src"))'
if [[ -x .venv/bin/python ]] && .venv/bin/python -c "$this_checkout" 2>/dev/null; then
    venv_ok=1
    record venv ok $(($(date +%s) - t0)) "reused .venv"
elif [[ -x .venv/bin/python ]] && PYTHONPATH="$repo/src" .venv/bin/python -c "$this_checkout" 2>/dev/null; then
    # Its packages are whole; only its nemolaunch is elsewhere. Offline, that is enough: take src/ first.
    export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
    venv_ok=1
    record venv ok $(($(date +%s) - t0)) "reused .venv's packages, nemolaunch from src/ (PYTHONPATH)"
else
    limit="$(limit_for 300)"
    set +e
    run_limited "$limit" bash scripts/install_venv.sh test
    rc=$?
    set -e
    if [[ $rc -eq 0 ]] && .venv/bin/python -c "$this_checkout" 2>/dev/null; then
        venv_ok=1
        record venv ok $(($(date +%s) - t0)) "installed${wheels:+ from $wheels}"
    else
        record venv FAIL $(($(date +%s) - t0)) "$(rc_words "$rc"): no usable .venv (offline? pass --wheels DIR)"
    fi
fi

# --- build -----------------------------------------------------------------------------------------------
say "build"
t0=$(date +%s)
bin_dir=""
if [[ -z "$source_arg" ]]; then
    source_arg="$(bash scripts/fetch_llamacpp_source.sh --cached || true)"
fi
if [[ -n "$llama_cpp" ]]; then
    bin_dir="$(cd "$llama_cpp" && pwd -P)"
    printf 'using the build given: %s\n' "$bin_dir" | tee "$out/build.log"
    record build ok 0 "given: $bin_dir"
elif [[ $venv_ok -eq 0 ]]; then
    record build "not run" 0 "no venv"
elif too_late 120; then
    record build "not run" 0 "time budget spent"
elif [[ -z "$source_arg" ]]; then
    record build FAIL 0 "no llama.cpp source: pass --source ARCHIVE|DIR (scripts/fetch_llamacpp_source.sh on a connected machine)"
else
    build_args=(build --backend cuda --source "$source_arg" --json)
    [[ -z "$cuda_arch" ]] || build_args+=(--cuda-arch "$cuda_arch")
    [[ -z "$jobs" ]] || build_args+=(--jobs "$jobs")
    printf 'nemolaunch %s  (quiet until done: the CUDA build takes about 5.5 minutes on 16 cores)\n' "${build_args[*]}" |
        tee "$out/build.log"
    set +e
    build_json="$(run_limited "$(limit_for 540)" .venv/bin/nemolaunch "${build_args[@]}" 2> >(tee -a "$out/build.log" >&2))"
    rc=$?
    set -e
    printf '%s\n' "$build_json" >>"$out/build.log"
    if [[ $rc -eq 0 ]]; then
        bin_dir="$(py -c 'import json, sys; print(json.load(sys.stdin)["bin_dir"])' <<<"$build_json")"
        state="$(py -c 'import json, sys; print("up to date" if json.load(sys.stdin)["up_to_date"] else "built")' <<<"$build_json")"
        # llama.cpp's own build log after nemolaunch's words: its start (what CMake found: CUDA, the GPU
        # targets) and its end, not the thousands of compile lines between.
        build_log="$(dirname "$bin_dir")/build.log"
        if [[ -f "$build_log" ]]; then
            { printf '\n--- %s: the first 60 and the last 60 lines ---\n' "$build_log"; head -n 60 "$build_log"; printf '...\n'; tail -n 60 "$build_log"; } >>"$out/build.log"
        fi
        record build ok $(($(date +%s) - t0)) "$state: $bin_dir"
    else
        reason="$(grep 'error:' "$out/build.log" | tail -n 1 | cut -c1-200 || true)"
        record build FAIL $(($(date +%s) - t0)) "$(rc_words "$rc")${reason:+: $reason}"
    fi
fi

# --- doctor ----------------------------------------------------------------------------------------------
say "doctor"
t0=$(date +%s)
if [[ $venv_ok -eq 0 ]]; then
    record doctor "not run" 0 "no venv"
elif too_late 20; then
    record doctor "not run" 0 "time budget spent"
else
    set +e
    run_limited "$(limit_for 120)" .venv/bin/nemolaunch doctor --json >"$out/doctor.json"
    rc=$?
    doctor_args=(doctor)
    [[ -z "$bin_dir" ]] || doctor_args+=(--llama-cpp "$bin_dir")
    COLUMNS=160 run_limited "$(limit_for 120)" .venv/bin/nemolaunch "${doctor_args[@]}"
    set -e
    if [[ $rc -eq 0 ]]; then
        gpus="$(py - "$out/doctor.json" <<'EOF'
import json, sys

gpus = json.load(open(sys.argv[1]))["gpus"]
print("; ".join(f"{g['name']}: {g['free_bytes'] / 1e9:.1f} GB free of {g['total_bytes'] / 1e9:.1f}" for g in gpus))
EOF
)"
        # nemolaunch must see the GPU nvidia-smi lists: otherwise every plan is for the CPU.
        if [[ -z "$gpus" ]]; then
            record doctor FAIL $(($(date +%s) - t0)) "nvidia-smi lists a GPU, nemolaunch's probe (NVML) none"
        else
            record doctor ok $(($(date +%s) - t0)) "$gpus"
        fi
    else
        record doctor FAIL $(($(date +%s) - t0)) "$(rc_words "$rc")"
    fi
fi

# --- plan ------------------------------------------------------------------------------------------------
say "plan"
t0=$(date +%s)
if [[ $venv_ok -eq 0 ]]; then
    record plan "not run" 0 "no venv"
elif too_late 20; then
    record plan "not run" 0 "time budget spent"
else
    set +e
    # Offline: the Ultra's built-in figures. Exit 6 (nothing fits) is an answer too, in the JSON.
    if [[ -n "$bin_dir" ]]; then
        HF_HUB_OFFLINE=1 NEMOLAUNCH_LLAMA_CPP="$bin_dir" run_limited "$(limit_for 120)" .venv/bin/nemolaunch plan --json >"$out/plan.json"
    else
        HF_HUB_OFFLINE=1 run_limited "$(limit_for 120)" .venv/bin/nemolaunch plan --json >"$out/plan.json"
    fi
    rc=$?
    set -e
    if [[ $rc -eq 0 || $rc -eq 6 ]]; then
        record plan ok $(($(date +%s) - t0)) "$(py - "$out/plan.json" <<'EOF' 2>&1 | head -n 1
import json, sys

plan = json.load(open(sys.argv[1]))
gb = {key: (plan.get(key) or 0) / 1e9 for key in ("forecast_bytes", "budget_bytes")}
if plan["fits"]:
    print(f"{plan['quant']}, {plan['placement']}: {gb['forecast_bytes']:.0f} GB of {gb['budget_bytes']:.0f} GB")
else:
    print(f"nothing fits the {gb['budget_bytes']:.0f} GB budget")
EOF
)"
    else
        record plan FAIL $(($(date +%s) - t0)) "$(rc_words "$rc")"
    fi
fi

# --- serve: the tiny model, on the GPU ------------------------------------------------------------------
# Waits until /health answers 200 (or the server exits); prints the seconds it took.
wait_for_health() { # PORT PID LIMIT
    py - "$@" <<'EOF'
import os, sys, time, urllib.request
port, pid, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
started = time.monotonic()
while time.monotonic() - started < limit:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("the server exited before /health answered")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
            if reply.status == 200:
                print(f"{time.monotonic() - started:.1f}")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"/health did not answer within {limit:.0f}s")
EOF
}
chat_once() { # PORT: one chat completion through the OpenAI client; prints the tokens it generated
    py - "$1" <<'EOF'
import sys
from openai import OpenAI

client = OpenAI(base_url=f"http://127.0.0.1:{sys.argv[1]}/v1", api_key="not-needed")
model = client.models.list().data[0].id
reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16)
assert reply.usage is not None and reply.usage.completion_tokens > 0, reply
print(reply.usage.completion_tokens)
EOF
}
# Ctrl-C, a second one after 15 s as a person would, and a kill only after that (which is a failure).
stop_server() { # PID: prints how it stopped
    local pid="$1" waited
    kill -INT "$pid" 2>/dev/null || true
    for waited in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || { printf 'stopped by Ctrl-C'; return 0; }
        [[ $waited -ne 75 ]] || kill -INT "$pid" 2>/dev/null || true
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    printf 'ignored Ctrl-C twice: killed'
    return 1
}
gpu_used_mib() { # the GPUs' used memory, MiB, all together
    timeout 60 nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | awk '{used += $1} END {print used + 0}'
}
serve_step() {
    local limit model port health tokens apps used before during stop problem serve_args problems=()
    limit="$(limit_for 240)"
    model="$work/tiny-nemotron.gguf"
    py -m nemolaunch tiny-model "$model" >/dev/null
    port="$(py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    before="$(gpu_used_mib)"
    # nemolaunch execs llama-server: the pid started here is the server's. At log verbosity 4 llama-server
    # names its devices and the buffers it put on each (at the default 3 it says neither).
    serve_args=(serve "$model" --port "$port" --llama-cpp "$bin_dir" -- -lv 4)
    printf 'nemolaunch %s\n' "${serve_args[*]}"
    .venv/bin/nemolaunch "${serve_args[@]}" >"$out/serve.log" 2>&1 </dev/null &
    server_pid=$!
    if ! health="$(wait_for_health "$port" "$server_pid" "$limit" 2>&1)"; then
        stop_server "$server_pid" >/dev/null || true
        tail -n 20 "$out/serve.log"
        serve_figure="$(tail -n 1 <<<"$health")"
        return 1
    fi
    printf '/health answered after %ss; the server is %s\n' "$health" "$(readlink "/proc/$server_pid/exe" || echo "pid $server_pid")"
    # Proof 1: the process holds GPU memory, as the driver lists it. In a container with its own pid
    # namespace the driver lists host pids: then the GPUs' used memory rising while it serves stands in.
    apps="$(timeout 60 nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>&1 || true)"
    during="$(gpu_used_mib)"
    printf 'nvidia-smi --query-compute-apps (server pid %s):\n%s\n' "$server_pid" "${apps:-(none listed)}"
    printf 'GPU memory used: %s MiB before the server, %s MiB while it serves\n' "$before" "$during"
    used="$(awk -F', ' -v pid="$server_pid" '$1 == pid {print $2}' <<<"$apps")"
    if [[ -n "$used" ]]; then
        used="pid listed, $used"
    elif ((during - before >= 64)); then
        used="pid not listed (container?), GPU memory +$((during - before)) MiB"
    else
        problems+=("pid $server_pid not among nvidia-smi's compute apps and GPU memory did not rise")
    fi
    # Proof 2: llama-server's log names the CUDA device that holds the model's weights. ("offloaded N/N
    # layers to GPU" is no proof: a CPU build prints it too.)
    grep -E 'CUDA[0-9]' "$out/serve.log" | head -n 8 || true
    if ! grep -qE 'CUDA[0-9]+ model buffer size|using device CUDA[0-9]' "$out/serve.log"; then
        problems+=("the server's log names no CUDA device holding the model")
    fi
    # Proof 3: it answers, through the OpenAI client.
    if tokens="$(chat_once "$port" 2>&1)"; then
        printf 'chat completion: %s tokens\n' "$tokens"
    else
        problems+=("no chat completion: $(tail -n 1 <<<"$tokens")")
    fi
    # Proof 4: Ctrl-C leaves nothing running.
    stop="$(stop_server "$server_pid")" || problems+=("$stop")
    wait "$server_pid" 2>/dev/null || true
    printf '%s\n' "$stop"
    server_pid=""
    if [[ ${#problems[@]} -gt 0 ]]; then
        serve_figure=""
        for problem in "${problems[@]}"; do serve_figure+="${serve_figure:+; }$problem"; done
        return 1
    fi
    serve_figure="on the GPU ($used), CUDA in its log, answered ($tokens tokens), $stop"
}
say "serve"
t0=$(date +%s)
serve_figure=""
if [[ $venv_ok -eq 0 ]]; then
    record serve "not run" 0 "no venv"
elif [[ -z "$bin_dir" ]]; then
    record serve "not run" 0 "no llama.cpp build"
elif too_late 60; then
    record serve "not run" 0 "time budget spent"
elif serve_step; then
    record serve ok $(($(date +%s) - t0)) "$serve_figure"
else
    record serve FAIL $(($(date +%s) - t0)) "$serve_figure"
fi

# --- tests -----------------------------------------------------------------------------------------------
say "tests"
t0=$(date +%s)
if [[ $skip_tests -eq 1 ]]; then
    record tests skipped 0 "--skip-tests"
elif [[ $venv_ok -eq 0 ]]; then
    record tests "not run" 0 "no venv"
elif [[ -z "$bin_dir" ]]; then
    record tests "not run" 0 "no llama.cpp build"
elif too_late 120; then
    record tests "not run" 0 "time budget spent"
else
    # The build under test is this CUDA build; its source lets the no-op rebuild test run too.
    test_env=(NEMOLAUNCH_TEST_LLAMA_CPP="$bin_dir")
    [[ -z "$source_arg" || -n "$llama_cpp" ]] || test_env+=(NEMOLAUNCH_TEST_LLAMA_CPP_SOURCE="$source_arg")
    set +e
    env "${test_env[@]}" timeout --signal=INT --kill-after=30 "$(limit_for 420)" .venv/bin/python -m pytest -q -p no:cacheprovider 2>&1 |
        tee "$out/tests.log"
    rc=${PIPESTATUS[0]}
    set -e
    last="$(grep -E '[0-9]+ (passed|failed|error)' "$out/tests.log" | tail -n 1 | tr -d '=' | sed 's/^ *//' || true)"
    if [[ $rc -eq 0 ]]; then
        record tests ok $(($(date +%s) - t0)) "$last"
    else
        record tests FAIL $(($(date +%s) - t0)) "$(rc_words "$rc"): ${last:-see tests.log}"
    fi
fi

# --- forecast --------------------------------------------------------------------------------------------
say "forecast"
t0=$(date +%s)
if [[ $venv_ok -eq 0 ]]; then
    record forecast "not run" 0 "no venv"
elif [[ -z "$bin_dir" ]]; then
    record forecast "not run" 0 "no llama.cpp build"
elif too_late 60; then
    record forecast "not run" 0 "time budget spent"
else
    set +e
    run_limited "$(limit_for 240)" .venv/bin/python benchmarks/forecast_vs_rss.py --llama-cpp "$bin_dir" --gpu 2>&1 |
        tee "$out/forecast.txt"
    rc=${PIPESTATUS[0]}
    set -e
    worst="$(grep '^worst deviation' "$out/forecast.txt" | tail -n 1 || true)"
    if [[ $rc -eq 0 ]]; then
        record forecast ok $(($(date +%s) - t0)) "${worst:-?}; the forecast covers peak VRAM + RSS"
    else
        record forecast FAIL $(($(date +%s) - t0)) "$(rc_words "$rc"): $(tail -n 1 "$out/forecast.txt" | cut -c1-160)"
    fi
fi

# --- download --------------------------------------------------------------------------------------------
say "download"
t0=$(date +%s)
if [[ $skip_download -eq 1 ]]; then
    record download skipped 0 "--skip-download"
elif [[ $venv_ok -eq 0 ]]; then
    record download "not run" 0 "no venv"
elif too_late 120; then
    record download "not run" 0 "time budget spent"
else
    bench_results="$(mktemp -d)" # its own result files stay out of --out (at most 8 files there)
    set +e
    run_limited "$(limit_for 300)" .venv/bin/python benchmarks/download_vs_curl.py --size-mb 2000 --shards 4 \
        --repeats 3 --skip capped --kill-repeats 1 --results-dir "$bench_results" 2>&1 | tee "$out/download.txt"
    rc=${PIPESTATUS[0]}
    set -e
    rm -rf "$bench_results"
    # The plain hub's nemolaunch row (x curl one at a time, x hf download) and the kill's median (%).
    speed="$(awk -F'|' '$2 ~ /^ nemolaunch download / {gsub(/ /, ""); print $6 "x curl, " $7 "x hf"; exit}' \
        "$out/download.txt" || true)"
    twice="$(awk -F'|' '$2 ~ /^ median / {gsub(/ /, ""); print $5 " % fetched twice"; exit}' "$out/download.txt" || true)"
    if [[ $rc -eq 0 ]]; then
        record download ok $(($(date +%s) - t0)) "${speed:-?}; ${twice:-?}"
    else
        record download FAIL $(($(date +%s) - t0)) "$(rc_words "$rc"): $(tail -n 1 "$out/download.txt" | cut -c1-160)"
    fi
fi

# --- summary ---------------------------------------------------------------------------------------------
failed=0
say "summary ($(($(date +%s) - started))s of a ${budget}s budget)"
printf '%-9s %-8s %7s  %s\n' step status seconds "key figure"
for step in "${steps[@]}"; do
    printf '%-9s %-8s %7s  %s\n' "$step" "${status[$step]}" "${seconds[$step]}" "${figure[$step]}"
    [[ "${status[$step]}" == ok || "${status[$step]}" == skipped ]] || failed=1
done
printf '\nrecorded in %s:' "$out"
for file in "$out"/*; do printf ' %s' "${file##*/}"; done
printf '\n'

exit "$failed"
