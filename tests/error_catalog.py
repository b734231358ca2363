# ruff: noqa: E501  (the table: one case a few lines, as it reads in docs/errors.md)
"""The catalog of every refusal and fault: the input, the exact message, the exit code.

Each case is run for real by tests/test_error_catalog.py (the command, its setup, its exit code and the
one line it prints), and docs/errors.md is rendered from this table, so the two never drift:

    python tests/error_catalog.py --write     # regenerate docs/errors.md after editing a case

In ``args``, ``env`` and ``message``: ``{tmp}`` is the case's own folder, ``{model}`` a small valid GGUF
there, ``{shim}`` a stand-in llama.cpp bin folder, ``{hub}`` the fake Hub, ``{url}`` a chat server's
base URL, ``{port}`` a port nothing listens on, ``{serve_port}`` another free port for a row whose serve
would otherwise take the default port 8001 (so no row depends on 8001 being free), ``{redirect_url}`` a
server whose every answer is a redirect to another origin (127.0.0.2); ``{*}`` in a message
stands for what differs from run to run (a size, a pid).
``setup`` names what the case needs beyond those files (see the test module's SETUPS); ``check`` names
an extra assertion made there (nothing left running, a secret nowhere in argv).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
E = "nemolaunch: error: "
W = "warning: "
REPO = "acme/Small-GGUF"


@dataclass(frozen=True)
class Case:
    id: str
    verb: str
    input: str  # in words: what a person did
    args: tuple[str, ...]
    code: int
    message: str  # the line on stderr (the whole line)
    setup: str = "files"
    env: dict[str, str] = field(default_factory=dict)
    check: str | None = None
    stdin: str = ""


def c(id: str, verb: str, input: str, args: str | tuple[str, ...], code: int, message: str, **kw: object) -> Case:
    words = tuple(args.split()) if isinstance(args, str) else args
    return Case(id, verb, input, words, code, message, **kw)  # type: ignore[arg-type]


SOURCE_HINT = "(looked for CMakeLists.txt, include/llama.h and tools/server, also under vendor/llama.cpp)"
CASES: list[Case] = [
    # --- build -------------------------------------------------------------------------------------------------
    c("build-backend", "build", "an unknown backend", "build --backend tpu", 2,
      E + "--backend tpu is not valid: use one of auto, cuda, metal, cpu"),
    c("build-jobs", "build", "zero compile jobs", "build --jobs 0", 2, E + "--jobs 0 is not valid: use 1 or more"),
    c("build-web-ui", "build", "an unknown web UI choice", "build --web-ui maybe", 2,
      E + "--web-ui maybe is not valid: use one of auto, npm, prebuilt, off"),
    c("build-source-missing", "build", "a --source that does not exist", "build --source {tmp}/nowhere", 2,
      E + "--source {tmp}/nowhere is not valid: it does not exist; pass a llama.cpp tree or archive"),
    c("build-source-empty", "build", "a --source folder without llama.cpp",
      "build --backend cpu --web-ui off --source {tmp}/empty --prefix {tmp}/p", 2,
      E + "--source '{tmp}/empty' holds no llama.cpp tree " + SOURCE_HINT),
    c("build-web-ui-no-npm", "build", "a web UI built by npm, without npm",
      "build --backend cpu --web-ui npm --source {tree} --prefix {tmp}/p", 4,
      E + "--web-ui npm needs npm: install Node.js 20 or newer with npm, or pass --web-ui off", setup="no-npm"),
    c("build-metal-linux", "build", "a Metal build on Linux", "build --backend metal", 2,
      E + "--backend metal is not valid: Metal builds need macOS; use cpu or cuda here"),
    c("build-cuda-arch-cpu", "build", "GPU targets for a CPU build", "build --backend cpu --cuda-arch 90", 2,
      E + "--cuda-arch 90 is not valid: it is for CUDA builds, not cpu ones"),
    c("build-no-nvcc", "build", "a CUDA build without nvcc", "build --backend cuda --web-ui off --source {tree} --prefix {tmp}/p",
      4, E + "--backend cuda needs nvcc: install the CUDA toolkit (https://developer.nvidia.com/cuda-downloads) "
      "and put nvcc on PATH", setup="no-nvcc"),
    c("build-no-cmake", "build", "no cmake on PATH", "build --backend cpu --web-ui off --source {tree} --prefix {tmp}/p",
      4, E + "cmake not found: install CMake 3.14 or newer (apt-get install cmake, brew install cmake or pip install "
      "cmake)", setup="no-cmake"),
    c("build-fails", "build", "a tree that does not compile (the log's tail is shown above the line)",
      "build --backend cpu --web-ui off --source {broken} --prefix {tmp}/p", 5,
      E + "building llama.cpp failed (exit 5): the full log is {tmp}/p/build.log", setup="broken-tree"),
    c("build-ctrl-c", "build", "Ctrl-C while compiling", "build --backend cpu --web-ui off --source {tree} --prefix {tmp}/p",
      130, E + "Ctrl-C stopped building llama.cpp: no compiler is left running and nothing was installed; "
      "run the same command to build", setup="slow-tree", check="ctrl-c-build"),
    # --- plan --------------------------------------------------------------------------------------------------
    c("plan-ctx-zero", "plan", "a context of 0 tokens", "plan {model} --ctx-size 0", 2,
      E + "--ctx-size 0 is not valid: use a positive number of tokens"),
    c("plan-ctx-too-big", "plan", "a context above the model's trained one", "plan {tiny} --ctx-size 100000", 2,
      E + "--ctx-size 100000 is above the model's maximum of 4096 tokens: use 4096 or less", setup="tiny"),
    c("plan-hardware-missing", "plan", "a --hardware file that does not exist", "plan --hardware {tmp}/none.json", 3,
      E + "--hardware {tmp}/none.json does not exist: pass a JSON file in the hardware facts shape"),
    c("plan-hardware-not-json", "plan", "a --hardware file that is not JSON", "plan --hardware {tmp}/not.json", 2,
      E + "--hardware {tmp}/not.json is not JSON (Expecting value at line 1 column 1): "
      "pass a hardware facts JSON file"),
    c("plan-hardware-shape", "plan", "a --hardware file of the wrong shape", "plan --hardware {tmp}/shape.json", 2,
      E + "--hardware {tmp}/shape.json does not match the hardware facts shape: {*}"),
    c("plan-malformed", "plan", "a model reference that is neither a file nor owner/repo", "plan a/b/c:Q4", 2,
      E + "model 'a/b/c:Q4' is malformed ({*}): write owner/repo or owner/repo:QUANT, "
      "such as unsloth/NVIDIA-Nemotron-3-Ultra-550B-A55B-GGUF:UD-Q4_K_XL"),
    c("plan-prefer", "plan", "an unknown --prefer", "plan {model} --prefer fast", 2,
      E + "--prefer fast is not valid: {*}"),
    c("plan-rpc", "plan", "a worker address whose port is not a number", "plan --rpc 10.0.0.2:port", 2,
      E + "--rpc '10.0.0.2:port' is not a worker address ({*}): write HOST:PORT, such as 10.0.0.2:50052, "
      "and separate several with commas"),
    c("plan-not-gguf", "plan", "a .gguf file that is not GGUF", "plan {tmp}/text.gguf", 2,
      E + "{tmp}/text.gguf is not a GGUF file (it starts with b'hell', not b'GGUF'): pass a .gguf model"),
    c("plan-nothing-fits", "plan", "a machine too small for any Ultra quant (the ways out are listed)",
      "plan --hardware {small_machine}", 6, E + "no recommended quant of {*} fits: {*}", env={"HF_HUB_OFFLINE": "1"}),
    c("plan-offline-uncached", "plan", "offline, a repository that was never cached", f"plan {REPO}", 3,
      E + "HF_HUB_OFFLINE is set, and the HF cache holds no complete quant of " + REPO + " (cached: none): "
      "connect to the Hub to list and download it", env={"HF_HUB_OFFLINE": "1"}),
    c("plan-unknown-quant", "plan", "a quant the repository lacks", f"plan {REPO}:Q2_K --hardware {{machine}}", 3,
      E + REPO + " has no quant Q2_K: pick one of Q8_0", setup="hub"),
    c("plan-header-huge-array", "plan", "a 128-byte GGUF whose token list claims 2^40 items", "plan {tmp}/huge-array.gguf", 8,
      E + "{tmp}/huge-array.gguf has a malformed GGUF header (an array of 1,099,511,627,776 items at byte 114 would end past the file's end at byte 128): it is damaged or not a model; use a GGUF from a source you trust"),
    c("plan-header-long-string", "plan", "a GGUF whose string claims more bytes than the file holds", "plan {tmp}/long-string.gguf", 8,
      E + "{tmp}/long-string.gguf has a malformed GGUF header (a string of 1,099,511,627,776 bytes at byte 101 would end past the file's end at byte 128): it is damaged or not a model; use a GGUF from a source you trust"),
    c("serve-header-duplicate-key", "serve", "a GGUF that gives one key twice", "serve {tmp}/duplicate-key.gguf --llama-cpp {shim} --dry-run", 8,
      E + "{tmp}/duplicate-key.gguf has a malformed GGUF header (the key general.name appears twice): it is damaged or not a model; use a GGUF from a source you trust"),
    c("plan-hub-header-lies", "plan", "a Hub quant whose header claims 2^40 items (refused before any download)",
      "plan acme/Evil-GGUF --hardware {machine}", 8,
      E + "acme/Evil-GGUF/Q8_0/Evil-Q8_0.gguf on the Hub has a malformed GGUF header (an array of 1,099,511,627,776 items at byte 114 would end past the file's end at byte 128): it is damaged or not a model; use a GGUF from a source you trust",
      setup="hub"),
    # --- download ----------------------------------------------------------------------------------------------
    c("download-repo-missing", "download", "a repository the Hub does not have",
      "download acme/Nothing-GGUF:Q8_0 --hardware {machine}", 3,
      E + "repo acme/Nothing-GGUF was not found on {hub}: check the name, or run `hf auth login` if it is private",
      setup="hub"),
    c("download-gated", "download", "a gated repository without a token", "download acme/Gated-GGUF:Q8_0 --hardware {machine}",
      7, E + "acme/Gated-GGUF is gated: accept its terms at {hub}/acme/Gated-GGUF, then run `hf auth login` or set "
      "HF_TOKEN", setup="hub"),
    c("download-corrupt", "download", "the Hub sends bytes whose sha256 is not the listed one, twice",
      f"download {REPO}:Q8_0 --hardware {{machine}}", 8,
      E + "Q8_0/Small-Q8_0.gguf has sha256 {*}, not the {*} the Hub lists: {*}", setup="hub-corrupt"),
    c("download-no-space", "download", "a folder with less free space than the quant plus the 2 GiB margin",
      f"download {REPO}:Q8_0 --hardware {{machine}} --local-dir {{small_disk}}", 4,
      E + "{small_disk} has {*} free, but the download needs {*} more plus a 2.1 GB margin: free {*} there or "
      "choose another folder", setup="hub-small-disk"),
    c("download-disk-fills", "download", "the disk fills up while the shard downloads",
      f"download {REPO}:Q8_0 --hardware {{machine}} --local-dir {{small_disk}}", 4,
      E + "{*} has {*} free, but the download needs {*} more plus a 2.1 GB margin: free {*} there or "
      "choose another folder", setup="hub-disk-fills", check="fill-disk"),
    c("download-ctrl-c", "download", "Ctrl-C while a shard downloads", f"download {REPO}:Q8_0 --hardware {{machine}}",
      130, E + "download stopped with {*} of {*} on disk: run the same command again to resume", setup="hub-slow",
      check="ctrl-c-download"),
    c("download-hf-token", "download", "HF_TOKEN set: used, and never printed or put in argv",
      f"download {REPO}:Q8_0 --hardware {{machine}}", 0, "", setup="hub", env={"HF_TOKEN": "hf_catalogsecret"},
      check="token-hidden"),
    # --- serve -------------------------------------------------------------------------------------------------
    c("serve-model-missing", "serve", "a model file that does not exist", "serve {tmp}/none.gguf --llama-cpp {shim}", 3,
      E + "model file {tmp}/none.gguf does not exist: pass the path of a .gguf file"),
    c("serve-not-gguf", "serve", "a file that is not GGUF", "serve {tmp}/text.gguf --llama-cpp {shim}", 2,
      E + "{tmp}/text.gguf is not a GGUF file (it starts with b'hell', not b'GGUF'): pass a .gguf model"),
    c("serve-truncated", "serve", "a GGUF cut short", "serve {tmp}/cut.gguf --llama-cpp {shim}", 8,
      E + "{tmp}/cut.gguf is a damaged or incomplete GGUF ({*}): download it again"),
    c("serve-shard-missing", "serve", "a split model with a shard missing",
      "serve {tmp}/m-00001-of-00002.gguf --llama-cpp {shim}", 8,
      E + "{tmp}/m-00001-of-00002.gguf is part of a 2-file split model, but m-00002-of-00002.gguf is missing: "
      "download every shard into the same folder"),
    c("serve-port-range", "serve", "a port out of range", "serve {model} --port 99999 --llama-cpp {shim}", 2,
      E + "--port 99999 is out of range: use a port from 1 to 65535"),
    c("serve-port-in-use", "serve", "a port another program holds", "serve {model} --port {busy_port} --llama-cpp {shim}",
      4, E + "port {busy_port} on 127.0.0.1 is already in use: stop what holds it or pass another --port",
      setup="busy-port"),
    c("serve-host", "serve", "a --host that does not resolve", "serve {model} --host no-such-host.invalid --llama-cpp {shim}",
      2, E + "--host no-such-host.invalid does not resolve to an address of any machine ({*}): pass an address of "
      "this machine such as 127.0.0.1 or 0.0.0.0, or a name that resolves"),
    c("serve-key-file-missing", "serve", "an API key file that does not exist",
      "serve {model} --api-key-file {tmp}/nokey --llama-cpp {shim}", 3,
      E + "--api-key-file {tmp}/nokey does not exist: create it with the key on one line"),
    c("serve-key-file-empty", "serve", "an empty API key file", "serve {model} --api-key-file {tmp}/empty-key --llama-cpp {shim}",
      2, E + "--api-key-file {tmp}/empty-key is empty: put the key on its first line"),
    c("serve-key-file-crlf", "serve", "a key file with a Windows line end (CR) after the key",
      "serve {model} --api-key-file {tmp}/crlf-key --llama-cpp {shim} --dry-run", 2,
      E + "--api-key-file {tmp}/crlf-key line 1 has a CR (Windows line end) or spaces around the key, which "
      "llama-server keeps as part of it: remove them (sed -i 's/^[[:space:]]*//; s/[[:space:]]*$//' {tmp}/crlf-key)"),
    c("serve-key-file-readable", "serve", "a key file readable by others (a warning; the dry run goes on)",
      "serve {model} --api-key-file {tmp}/open-key --llama-cpp {shim} --dry-run", 0,
      W + "{tmp}/open-key is readable by other users: chmod 600 {tmp}/open-key"),
    c("serve-key-in-argv", "serve", "an API key after -- (it would show in ps)",
      ("serve", "{model}", "--llama-cpp", "{shim}", "--", "--api-key", "sk-x"), 2,
      E + "--api-key (hidden) is not valid: use --api-key-file FILE or NEMOLAUNCH_API_KEY, not argv"),
    c("serve-managed-option", "serve", "an option nemolaunch sets, after --",
      ("serve", "{model}", "--llama-cpp", "{shim}", "--", "--port", "9"), 2,
      E + "--port after -- is not valid: use nemolaunch's own --port (it checks the value and shows the URL)"),
    c("serve-json-no-dry-run", "serve", "--json without --dry-run", "serve {model} --llama-cpp {shim} --json", 2,
      E + "--json without --dry-run is not valid: add --dry-run to print the launch as JSON"),
    c("serve-temp", "serve", "a negative temperature", "serve {model} --temp -1 --llama-cpp {shim}", 2,
      E + "--temp -1.0 is not valid: use 0 or more (NVIDIA recommends 1.0)"),
    c("serve-llama-cpp-dir", "serve", "a --llama-cpp folder without llama-server", "serve {model} --port {serve_port} --llama-cpp {tmp}/empty",
      3, E + "--llama-cpp names {tmp}/empty, which holds no executable llama-server: point it at llama.cpp's bin folder"),
    c("serve-no-llama-cpp", "serve", "no llama.cpp anywhere", "serve {model} --port {serve_port}", 3,
      E + "llama-server not found (looked in {tmp}/data/nemolaunch/llama.cpp, PATH): run `nemolaunch build`, "
      "or pass --llama-cpp DIR / set NEMOLAUNCH_LLAMA_CPP to a folder holding it", setup="no-llama-cpp"),
    c("serve-env-key-hidden", "serve", "NEMOLAUNCH_API_KEY set: never in the dry run's command or the server's argv",
      "serve {model} --llama-cpp {shim} --dry-run", 0, "", env={"NEMOLAUNCH_API_KEY": "sk-catalog-secret"},
      check="key-hidden"),
    c("serve-ctrl-c-loading", "serve", "Ctrl-C while llama-server loads the model (before its own handler is set)",
      "serve {tiny} --port {port} --llama-cpp {real}", 130, "", setup="real-server", check="ctrl-c-loading"),
    # --- run ---------------------------------------------------------------------------------------------------
    c("run-n-predict", "run", "a token count of 0", "run {model} -n 0 --llama-cpp {shim}", 2,
      E + "--n-predict 0 is not valid: use a positive count, or -1 for no limit"),
    c("run-managed-option", "run", "-p after -- (use --prompt)", ("run", "{model}", "--llama-cpp", "{shim}", "--", "-p", "hi"),
      2, E + "-p after -- is not valid: use nemolaunch's own --prompt (it checks the value and shows the URL)"),
    c("run-model-missing", "run", "a model file that does not exist", "run {tmp}/none.gguf --llama-cpp {shim}", 3,
      E + "model file {tmp}/none.gguf does not exist: pass the path of a .gguf file"),
    c("run-two-models", "run", "two models", "run {model} {model} --llama-cpp {shim}", 2,
      E + "argument {model} is not valid: name one model (MODEL or --model); put llama.cpp's own options after --"),
    # --- chat --------------------------------------------------------------------------------------------------
    c("chat-not-up", "chat", "no server at the URL", "chat --url http://127.0.0.1:{port}/v1 -p hi", 4,
      E + "no server answers at http://127.0.0.1:{port}/v1 (connection refused): start one with `nemolaunch serve`, "
      "or pass --url with its address"),
    c("chat-bad-url", "chat", "a URL that is not http(s)", "chat --url 127.0.0.1:8001 -p hi", 2,
      E + "--url 127.0.0.1:8001 is not valid: write the server's base URL, such as http://127.0.0.1:8001/v1"),
    c("chat-empty-prompt", "chat", "an empty prompt on stdin", "chat", 2,
      E + "stdin (empty) is not valid: give a question, or leave it out to chat", stdin="  \n"),
    c("chat-no-key", "chat", "a server that wants a key, and none given", "chat --url {url} -p hi", 2,
      E + "the server at {url} wants an API key: pass --api-key-file FILE or set NEMOLAUNCH_API_KEY", setup="stub-key"),
    c("chat-wrong-key", "chat", "the wrong key", "chat --url {url} -p hi", 2,
      E + "the server at {url} refused the API key: pass the key it was started with (--api-key-file FILE or "
      "NEMOLAUNCH_API_KEY)", setup="stub-key", env={"NEMOLAUNCH_API_KEY": "sk-wrong"}),
    c("chat-key-file-missing", "chat", "a key file that does not exist", "chat --api-key-file {tmp}/nokey -p hi", 3,
      E + "--api-key-file {tmp}/nokey does not exist: create it with the key on one line"),
    c("chat-key-file-spaces", "chat", "a key file with spaces around the key", "chat --api-key-file {tmp}/spaced-key -p hi",
      2, E + "--api-key-file {tmp}/spaced-key line 2 has a CR (Windows line end) or spaces around the key, which "
      "llama-server keeps as part of it: remove them (sed -i 's/^[[:space:]]*//; s/[[:space:]]*$//' {tmp}/spaced-key)"),
    c("chat-wrong-model", "chat", "a model the server does not serve", "chat --url {url} --model nope -p hi", 3,
      E + "the server at {url} serves no model 'nope' (it serves stub-model): pass one of those with --model, "
      "or leave --model out", setup="stub"),
    c("chat-ctrl-c", "chat", "Ctrl-C during a one-shot answer", "chat --url {url} -p count", 130,
      E + "Ctrl-C stopped the answer: the server stopped generating it", setup="stub-endless", check="ctrl-c-chat"),
    # --- context, cache type, speed (serve and run share them) --------------------------------------------------
    c("serve-ctx-word", "serve", "a --ctx-size that is neither a number nor max", "serve {model} --ctx-size lots --llama-cpp {shim}", 2,
      E + "--ctx-size lots is not valid: give a number of tokens, or max for the longest that fits"),
    c("serve-cache-type", "serve", "an unknown KV cache type", "serve {model} --cache-type q3 --llama-cpp {shim}", 2,
      E + "--cache-type q3 is not valid: use one of f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl"),
    c("serve-cache-type-after-dashes", "serve", "the KV cache type after -- (it is in the memory forecast)",
      "serve {model} --llama-cpp {shim} --dry-run -- -ctk q4_0", 2,
      E + "-ctk after -- is not valid: use nemolaunch's own --cache-type (it checks the value and shows the URL)"),
    c("serve-min-speed-local", "serve", "--min-speed for a local file (it chooses among a Hub model's quants)",
      "serve {model} --min-speed 5 --llama-cpp {shim}", 2,
      E + "--min-speed 5.0 is not valid: it picks a quant of a Hub model, not of a local file (`nemolaunch plan FILE` shows its speed)"),
    c("plan-speed-both", "plan", "--prefer speed and --min-speed together", "plan {model} --prefer speed --min-speed 5", 2,
      E + "--prefer speed with --min-speed is not valid: --min-speed already chooses by speed; use one"),
    c("serve-sessions-file", "serve", "--sessions naming a file", "serve {model} --sessions {model} --llama-cpp {shim} --dry-run", 2,
      E + "--sessions {model} is not valid: it is a file; name a folder"),
    # --- several machines ----------------------------------------------------------------------------------------
    c("serve-rpc-dead", "serve", "an RPC worker where nothing listens", "serve {model} --port {serve_port} --rpc 127.0.0.1:{port} --llama-cpp {shim}", 4,
      E + "RPC worker 127.0.0.1:{port} is unreachable (connection refused): start `nemolaunch rpc-worker --host <its address>` there, or leave it out of --rpc"),
    c("serve-rpc-ipv6", "serve", "an IPv6 worker address (llama.cpp's RPC splits at the first ':')",
      "serve {model} --rpc [::1]:50052 --llama-cpp {shim}", 2,
      E + "--rpc '[::1]:50052' is not a worker address (llama.cpp's RPC cannot take an IPv6 address; use an IPv4 address or a host name): write HOST:PORT, such as 10.0.0.2:50052, and separate several with commas"),
    c("serve-cluster-file", "serve", "a cluster file as --hardware, without live workers",
      "serve {model} --hardware {cluster} --llama-cpp {shim} --dry-run", 2,
      E + "--hardware {cluster} describes a cluster (10.0.0.2:50052), but a launch runs on live workers: pass them with --rpc HOST:PORT,... (plan and download read cluster files)"),
    c("plan-cluster-file-mistake", "plan", "a cluster file with a worker address lacking its port",
      "plan --hardware {tmp}/bad-cluster.json", 2,
      E + "--hardware {tmp}/bad-cluster.json does not match the hardware facts shape: workers[0].endpoint: Value error, the port after ':' is missing"),
    # --- config (config.toml and NEMOLAUNCH_*) -------------------------------------------------------------
    c("config-not-toml", "config", "a config.toml that is not TOML", "config show", 2,
      E + "{tmp}/broken.toml is not TOML ({*}): fix it, or remove the file (`nemolaunch config path` names it)",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/broken.toml"}),
    c("config-unknown-key", "config", "a key config.toml does not know (a typo is named, not ignored)", "plan", 2,
      E + "{tmp}/typo.toml: colour: unknown key (known: {*}); fix it there, or remove the key",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/typo.toml"}),
    c("config-bad-value", "config", "a value config.toml gives that is not valid", "serve {model} --llama-cpp {shim}", 2,
      E + "{tmp}/bad-port.toml: port: 70000 is not valid: use a port from 1 to 65535; fix it there, or remove the key",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/bad-port.toml"}),
    c("config-bad-env", "config", "a NEMOLAUNCH_* variable that is not valid", "serve {model} --llama-cpp {shim}", 2,
      E + "NEMOLAUNCH_TEMP hot is not valid: input should be a valid number; use 0 or more (NVIDIA recommends 1.0)", env={"NEMOLAUNCH_TEMP": "hot"}),
    # --- sessions --------------------------------------------------------------------------------------------
    c("session-name", "session", "a session name that is not a plain file name",
      "session save ../escape --messages {tmp}/history.json", 2,
      E + "session name '../escape' is not valid: use letters, digits, '.', '_' and '-' (up to 64, starting with a letter or digit)"),
    c("session-no-server", "session", "saving with no server at --url",
      "session save talk --messages {tmp}/history.json --url http://127.0.0.1:{port}/v1", 4,
      E + "no server answers at http://127.0.0.1:{port}/v1 ({*}): start one with `nemolaunch serve`, or pass --url with its address"),
    c("session-unknown", "session", "loading a session never saved", "session load never-saved", 3,
      E + "no session never-saved in {tmp}/data/nemolaunch/sessions: `nemolaunch session list` shows the saved ones",
      env={"XDG_DATA_HOME": "{tmp}/data"}),
    c("session-messages", "session", "a conversation file that is not JSON", "session save talk --messages {tmp}/text.gguf", 2,
      E + "--messages {tmp}/text.gguf is not valid: it is not JSON (Expecting value)"),
    # --- rpc-worker --------------------------------------------------------------------------------------------
    c("rpc-port", "rpc-worker", "a port out of range", "rpc-worker --port 0 --llama-cpp {shim}", 2,
      E + "--port 0 is out of range: use a port from 1 to 65535"),
    c("rpc-port-in-use", "rpc-worker", "a port another program holds", "rpc-worker --port {busy_port} --llama-cpp {shim}",
      4, E + "port {busy_port} on 127.0.0.1 is already in use: stop what holds it or pass another --port",
      setup="busy-port"),
    c("rpc-no-binary", "rpc-worker", "a llama.cpp folder without rpc-server",
      "rpc-worker --port {port} --llama-cpp {tmp}/empty", 3,
      E + "--llama-cpp names {tmp}/empty, which holds no executable rpc-server: point it at llama.cpp's bin folder"),
    # --- ps, stop, logs ----------------------------------------------------------------------------------------
    c("serve-log-file-folder", "serve", "a --log-file that is a folder", "serve {model} --port {serve_port} --log-file {tmp} --llama-cpp {shim}", 2,
      E + "--log-file {tmp} is not valid: it is a folder; name a file (or use --log-dir)"),
    c("serve-log-dir-file", "serve", "a log_dir (here NEMOLAUNCH_LOG_DIR) that is a file", "serve {model} --port {serve_port} --llama-cpp {shim}", 2,
      E + "NEMOLAUNCH_LOG_DIR {model} is not valid: it is a file; name a folder", env={"NEMOLAUNCH_LOG_DIR": "{model}"}),
    c("stop-unknown", "stop", "a port, alias or pid no launch has", "stop no-such-server", 3,
      E + "nothing nemolaunch launched matches 'no-such-server' (running: none): name a port, an alias or a pid that "
      "`nemolaunch ps` lists"),
    c("stop-not-launch", "stop", "the pid of a process nemolaunch did not launch", "stop {other_pid}", 2,
      E + "pid {other_pid} (sleep) was not started by nemolaunch serve, run or rpc-worker, so it is left alone: stop it "
      "yourself if you mean to", setup="launches", check="other-alive"),
    c("stop-ambiguous", "stop", "an alias two launches share", "stop twin", 2,
      E + "'twin' names several launches (llama-server pid {*} on 127.0.0.1:{*} (twin), llama-server pid {*} on "
      "127.0.0.1:{*} (twin)): name one by its port or pid", setup="launches"),
    c("stop-all-and-one", "stop", "a launch and --all", "stop twin --all", 2,
      E + "--all with twin is not valid: name one launch, or pass --all alone", setup="launches"),
    c("stop-grace", "stop", "a negative grace period", "stop --all --grace -1", 2,
      E + "--grace -1.0 is not valid: use 0 or more seconds"),
    c("logs-none", "logs", "no server running", "logs", 3,
      E + "no server nemolaunch launched is running to show the log of: start one with `nemolaunch serve`"),
    c("logs-which", "logs", "several servers, none named", "logs", 2,
      E + "name which launch to show the log of: a port, an alias or a pid (running: {*})", setup="launches"),
    c("logs-no-file", "logs", "a server started without --log-file or log_dir", "logs {launch_port}", 3,
      E + "llama-server pid {*} on 127.0.0.1:{launch_port} (twin) keeps no log file: start it with "
      "`nemolaunch serve --log-file PATH` (or set log_dir)", setup="launches"),
    c("rpc-preload-no-space", "rpc-worker", "--preload where the tensor cache's disk is too small",
      "rpc-worker --port {port} --llama-cpp {shim} --preload {model}", 4,
      E + "{small_disk}/rpc has {*} free, but --preload writes 0 B of tensors there plus a 1.1 GB margin: free space "
      "there, point LLAMA_CACHE at a bigger disk, or leave out --preload",
      setup="small-disk", env={"LLAMA_CACHE": "{small_disk}"}),
    c("rpc-preload-no-cache", "rpc-worker", "--preload with the cache refused",
      "rpc-worker --port {port} --llama-cpp {shim} --preload {model} --no-cache", 2,
      E + "--preload with --no-cache is not valid: --preload fills the cache: keep it on"),
    c("rpc-preload-no-quant", "rpc-worker", "--preload of a Hub model without its quant",
      f"rpc-worker --port {{port}} --llama-cpp {{shim}} --preload {REPO}", 2,
      E + f"--preload {REPO} is not valid: name the quant the head runs, e.g. REPO:UD-Q4_K_XL (see its plan)"),
    c("serve-disk-backed-mlock", "serve", "--mlock after -- on a launch with experts paged from disk",
      "serve --hardware {machine} --allow-disk --dry-run --port {port} --llama-cpp {shim} -- --mlock", 2,
      E + "--mlock after -- with experts paged from disk is not valid: a model larger than memory runs only mapped "
      "from its file: leave it out (or drop --allow-disk)", env={"HF_HUB_OFFLINE": "1"}),
    # --- hostile listings and answers, small truths (issue 22, items 6 and 7) ---------------------------------
    c("plan-listing-dotdot", "plan", "a Hub listing naming a file with '..' (refused before any request of it)",
      "plan acme/Dots-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Dots-GGUF lists a file named 'Q8_0/../../Dots-Q8_0.gguf', which is not a safe relative path (it has an empty, '.' or '..' segment): nothing was fetched; check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("download-listing-dotdot", "download", "the same listing, to download", "download acme/Dots-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Dots-GGUF lists a file named 'Q8_0/../../Dots-Q8_0.gguf', which is not a safe relative path (it has an empty, '.' or '..' segment): nothing was fetched; check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("download-listing-absolute", "download", "a Hub listing naming an absolute path", "download acme/Abs-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Abs-GGUF lists a file named '/Q8_0/Abs-Q8_0.gguf', which is not a safe relative path (it is absolute): nothing was fetched; check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("download-listing-long-name", "download", "a Hub listing naming a file of 310 bytes (no file system takes it)",
      "download acme/Long-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Long-GGUF lists a file named 'Q8_0/{*}-Q8_0.gguf', which is not a safe relative path (a segment is 310 bytes long, over the 255 a file name may have): nothing was fetched; check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("plan-listing-empty-file", "plan", "a Hub listing giving a model file 0 bytes", "plan acme/Empty-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Empty-GGUF lists Q8_0/Empty-Q8_0.gguf as 0 bytes, which no model file is: the listing is broken, so nothing was fetched; tell the repo's owner, or check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("download-listing-empty-file", "download", "the same listing, to download", "download acme/Empty-GGUF:Q8_0 --hardware {machine}", 7,
      E + "acme/Empty-GGUF lists Q8_0/Empty-Q8_0.gguf as 0 bytes, which no model file is: the listing is broken, so nothing was fetched; tell the repo's owner, or check that HF_ENDPOINT names the Hub or a mirror you trust",
      setup="hub-hostile", check="nothing-fetched"),
    c("download-size-disagrees", "download", "the CDN serves another size than the listing gives (for good: not retried)",
      "download acme/Size-GGUF:Q8_0 --hardware {machine}", 7,
      E + "Q8_0/Size-Q8_0.gguf is listed as {*} bytes, but the server's Content-Length says {*}: the Hub's listing and its file disagree, so no download of it can be whole (its partial file was deleted); tell the repo's owner, or check HF_ENDPOINT and any proxy",
      setup="hub-hostile", check="no-partial-file"),
    c("download-content-length-wrong", "download", "a resumed range whose Content-Length disagrees with its Content-Range",
      "download acme/Length-GGUF:Q8_0 --hardware {machine}", 7,
      E + "the server sending Q8_0/Length-Q8_0.gguf said Content-Length: {*}, but its Content-Range (bytes 100000-{*}) names {*} bytes: it (or a proxy between) is broken, and asking again gets the same answer; check HF_ENDPOINT and any proxy, then run again",
      setup="hub-hostile"),
    c("download-endpoint-credentials", "download", "HF_ENDPOINT with user:password@, and nothing listening (masked in the line)",
      f"download {REPO}:Q8_0 --hardware {{machine}}", 7,
      E + "the Hugging Face Hub at http://***@127.0.0.1:{port} is unreachable (127.0.0.1:{port} refused the connection): check the network or proxy",
      env={"HF_ENDPOINT": "http://user:pass-catalog-secret@127.0.0.1:{port}", "HF_HOME": "{tmp}/hf"}),
    c("chat-url-credentials", "chat", "a --url with user:password@ where no server answers (masked in the line)",
      "chat --url http://user:pass-catalog-secret@127.0.0.1:{port}/v1 -p hi", 4,
      E + "no server answers at http://***@127.0.0.1:{port}/v1 (connection refused): start one with `nemolaunch serve`, or pass --url with its address"),
    c("config-not-utf8", "config", "a config.toml that is not UTF-8 text", "config show", 2,
      E + "{tmp}/latin1.toml is not TOML (byte 0xe9 at offset 5 is not UTF-8 text): fix it, or remove the file (`nemolaunch config path` names it)",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/latin1.toml"}),
    c("config-port-true", "config", "port = true in config.toml (no longer taken as --port 1)", "serve {model} --llama-cpp {shim} --dry-run", 2,
      E + "{tmp}/port-true.toml: port: true is not valid: true or false is not a number; use a port from 1 to 65535; fix it there, or remove the key",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/port-true.toml"}),
    c("config-ctx-negative", "config", "ctx_size = -5 in config.toml", "serve {model} --llama-cpp {shim} --dry-run", 2,
      E + "{tmp}/ctx-negative.toml: ctx_size: -5 is not valid: use a positive number of tokens; fix it there, or remove the key",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/ctx-negative.toml"}),
    c("plan-stale-header-folders", "plan", "header folders in TMPDIR left by killed runs: removed; a running run's kept",
      "plan acme/Evil-GGUF --hardware {machine}", 8,
      E + "acme/Evil-GGUF/Q8_0/Evil-Q8_0.gguf on the Hub has a malformed GGUF header ({*}): it is damaged or not a model; use a GGUF from a source you trust",
      setup="hub-stale-headers", env={"TMPDIR": "{tmp}/scratch"}, check="stale-headers"),
    # --- special files named as small files: each its own line, never "does not exist" (issue 22, item 5) -------
    c("config-dev-zero", "config", "NEMOLAUNCH_CONFIG naming a device (/dev/zero would fill memory)", "config show", 2,
      E + "the config file /dev/zero is a device, not a file: save the settings file to a regular file and name that",
      env={"NEMOLAUNCH_CONFIG": "/dev/zero"}),
    c("config-fifo", "config", "NEMOLAUNCH_CONFIG naming a FIFO (an open would wait for a writer)", "config show", 2,
      E + "the config file {tmp}/fifo is a pipe (FIFO), not a file: save the settings file to a regular file and name that",
      env={"NEMOLAUNCH_CONFIG": "{tmp}/fifo"}),
    c("serve-key-file-dev-zero", "serve", "--api-key-file /dev/zero",
      "serve {model} --llama-cpp {shim} --dry-run --port {port} --api-key-file /dev/zero", 2,
      E + "--api-key-file /dev/zero is a device, not a file: save the key file to a regular file and name that"),
    c("serve-key-file-fifo", "serve", "--api-key-file naming a FIFO",
      "serve {model} --llama-cpp {shim} --dry-run --port {port} --api-key-file {tmp}/fifo", 2,
      E + "--api-key-file {tmp}/fifo is a pipe (FIFO), not a file: save the key file to a regular file and name that"),
    c("session-messages-dev-zero", "session", "--messages /dev/zero",
      "session save talk --messages /dev/zero --url http://127.0.0.1:{port}/v1", 2,
      E + "--messages /dev/zero is a device, not a file: save the messages file to a regular file and name that"),
    c("plan-hardware-loop", "plan", "a --hardware file that is a loop of symbolic links",
      "plan --hardware {tmp}/loop.json", 2,
      E + "--hardware {tmp}/loop.json is a loop of symbolic links: point the link at the hardware facts file"),
    c("plan-hardware-too-big", "plan", "a --hardware file over 1 MiB (no hardware file is)",
      "plan --hardware {tmp}/big.json", 2,
      E + "--hardware {tmp}/big.json is over 1048576 bytes: a hardware facts file is small: name the right file"),
    # --- no key follows a redirect to another origin (issue 22, item 2) --------------------------------------
    c("session-save-redirect", "session", "a --url whose server redirects to another origin (the key would follow)",
      "session save talk --messages {tmp}/history.json --url {redirect_url}", 4,
      E + "the server at {redirect_url} redirected to http://127.0.0.2:{*}/apply-template, another origin: the API key is not sent there, so nothing was asked of it; pass --url with the server's own address",
      setup="redirect-pair", env={"NEMOLAUNCH_API_KEY": "sk-catalog-redirect-secret"}, check="key-kept"),
    # --- deadlines, not only read timeouts (issue 22, item 4) ------------------------------------------------
    c("plan-header-trickles", "plan", "a CDN that sends the model's header 1 byte/s (no read timeout ever trips)",
      "plan acme/Trickle-GGUF --hardware {machine}", 7,
      E + "the Hugging Face Hub at {hub} sent {*} bytes of the header of acme/Trickle-GGUF/Q8_0/Trickle-Q8_0.gguf in 3 s and had not finished: it (or a proxy between) is too slow; check the network or proxy, or wait longer with NEMOLAUNCH_HUB_DEADLINE=SECONDS",
      setup="hub-hostile", env={"NEMOLAUNCH_HUB_DEADLINE": "3", "TMPDIR": "{tmp}/scratch"}, check="deadline"),
    c("download-listing-trickles", "download", "a Hub that sends the repo's listing 1 byte/s",
      "download acme/SlowList-GGUF:Q8_0 --hardware {machine}", 7,
      E + "the Hugging Face Hub at {hub} sent {*} bytes of the listing of acme/SlowList-GGUF in 3 s and had not finished: it (or a proxy between) is too slow; check the network or proxy, or wait longer with NEMOLAUNCH_HUB_DEADLINE=SECONDS",
      setup="hub-hostile", env={"NEMOLAUNCH_HUB_DEADLINE": "3", "TMPDIR": "{tmp}/scratch"}, check="deadline"),
    c("plan-hub-deadline-zero", "plan", "NEMOLAUNCH_HUB_DEADLINE that is no number of seconds",
      f"plan {REPO} --hardware {{machine}}", 2,
      E + "NEMOLAUNCH_HUB_DEADLINE 0 is not valid: give a number of seconds above 0",
      env={"NEMOLAUNCH_HUB_DEADLINE": "0"}),
]  # fmt: skip


def render() -> str:
    lines = [
        "# Errors",
        "",
        "Every refusal and fault of nemolaunch: what a person did, the one line it prints (on stderr) and the exit",
        "code. Each row is run for real by `tests/test_error_catalog.py`; this page is generated from",
        "`tests/error_catalog.py` (`python tests/error_catalog.py --write`), and a test fails when the two differ.",
        "`{*}` in a message stands for what differs from run to run. In commands, `{tmp}` is a folder of the",
        "test's, `{model}` a small GGUF, `{tiny}` the tiny Nemotron model, `{shim}` a stand-in llama.cpp folder,",
        "`{real}` a real llama.cpp build, `{tree}`/`{broken}` small CMake trees shaped like llama.cpp, `{machine}` a",
        "recorded 64 GB laptop, `{small_disk}` a small tmpfs, `{busy_port}` a port the test holds, `{url}` a chat",
        "server of the test's. An empty message means the row checks something else (named in its input): exit 130",
        "there is the signal's (the shell's 128 + 2), and the test also checks that nothing is left running.",
        "",
        "| command | input | exit | message |",
        "| --- | --- | ---: | --- |",
    ]
    for case in CASES:
        command = " ".join(case.args).replace("|", "\\|")
        env = " ".join(f"{key}=…" for key in case.env)
        shown = f"`{(env + ' ') if env else ''}nemolaunch {command}`"
        message = ("`" + case.message.replace("|", "\\|") + "`") if case.message else "—"
        lines.append(f"| {case.verb} | {case.input}: {shown} | {case.code} | {message} |")
    lines.append("")
    lines.append(f"{len(CASES)} rows.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(render())
        print(f"wrote {DOC} ({len(CASES)} rows)")
    else:
        sys.stdout.write(render())
