"""The llama-server and llama-cli command lines, as pure functions.

Nothing here touches the file system or the environment: the CLI resolves the
binary, the model and the key file, then asks these functions for the argv.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from nemolaunch import ULTRA_ALIAS, ULTRA_REPO
from nemolaunch.core.split_names import parse_split_name

DEFAULT_PORT = 8001
#: Where llama.cpp's rpc-server listens unless told otherwise.
DEFAULT_RPC_PORT = 50052
DEFAULT_HOST = "127.0.0.1"
#: A working context, not the model's maximum: llama-server's own default (0)
#: means the training context, 1M tokens for the Ultra, far past most budgets.
DEFAULT_CTX_SIZE = 32768
#: llama.cpp's KV cache types (--cache-type-k/-v), as the forecast prices them.
CACHE_TYPES = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")
#: The slots llama-server opens by default; the forecast counts one Mamba state per slot.
DEFAULT_PARALLEL = 4


@dataclass(frozen=True)
class Sampling:
    """NVIDIA's recommended sampling for Nemotron 3 (min_p from the reference llama-cli command)."""

    temperature: float = 1.0
    top_p: float = 0.95
    min_p: float = 0.01

    def argv(self) -> list[str]:
        return [
            "--temp", _number(self.temperature),
            "--top-p", _number(self.top_p),
            "--min-p", _number(self.min_p),
        ]  # fmt: skip


@dataclass(frozen=True)
class ServerLaunch:
    """Everything llama-server needs, resolved. The API key itself never appears here."""

    binary: str
    model: Path
    ctx_size: int
    alias: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    sampling: Sampling = field(default_factory=Sampling)
    api_key_file: Path | None = None
    parallel: int | None = None  # None: llama-server's own choice (DEFAULT_PARALLEL slots)
    cluster: Cluster | None = None
    cache_type: str = "f16"  # KV cache precision, keys and values alike
    sessions: Path | None = None  # where llama-server saves and restores slots
    log_file: Path | None = None  # llama-server writes its log there as well as to the terminal
    disk_backed: bool = False  # experts paged from disk: the weights must stay pages of the mapped file
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cluster:
    """llama.cpp RPC workers the model spreads over, as ``--rpc`` names them."""

    endpoints: tuple[str, ...]
    # --fit's free-memory target per RPC device (MiB), where its default would fill a worker's RAM.
    fit_target_mib: tuple[int, ...] = ()

    def argv(self) -> list[str]:
        argv = ["--rpc", ",".join(self.endpoints)]
        if self.fit_target_mib:
            argv += ["--fit-target", ",".join(str(target) for target in self.fit_target_mib)]
        return argv


@dataclass(frozen=True)
class CliLaunch:
    """A llama-cli chat: interactive, or one turn when ``prompt`` is given."""

    binary: str
    model: Path
    ctx_size: int
    sampling: Sampling = field(default_factory=Sampling)
    prompt: str | None = None
    n_predict: int | None = None
    cluster: Cluster | None = None
    cache_type: str = "f16"
    disk_backed: bool = False
    extra_args: tuple[str, ...] = ()


def server_argv(launch: ServerLaunch) -> list[str]:
    argv = [
        launch.binary,
        "--model", str(launch.model),
        "--ctx-size", str(launch.ctx_size),
        *launch.sampling.argv(),
        "--port", str(launch.port),
        "--host", launch.host,
        "--alias", launch.alias,
    ]  # fmt: skip
    if launch.api_key_file is not None:
        # llama-server reads the key from the file, so it never shows in `ps`.
        argv += ["--api-key-file", str(launch.api_key_file)]
    if launch.parallel is not None:
        argv += ["--parallel", str(launch.parallel)]
    if launch.cluster is not None:
        argv += launch.cluster.argv()
    argv += _cache_type_argv(launch.cache_type)
    if launch.sessions is not None:
        argv += ["--slot-save-path", str(launch.sessions)]
    if launch.log_file is not None:
        argv += ["--log-file", str(launch.log_file)]
    # /metrics: what `nemolaunch ps` reads the server's generation speed from (read-only counters).
    argv.append("--metrics")
    argv += _disk_backed_argv(launch.disk_backed)
    argv += list(launch.extra_args)
    return argv


#: Weight repacking copies the CPU's weights into the process's own memory, where they can no longer be
#: dropped and read again from the file: a model larger than memory would run out of it instead.
DISK_BACKED_ARGS = ("--no-repack",)


def _disk_backed_argv(disk_backed: bool) -> list[str]:
    return list(DISK_BACKED_ARGS) if disk_backed else []


def _cache_type_argv(cache_type: str) -> list[str]:
    # f16 is llama.cpp's own default: said only when it is not.
    return [] if cache_type == "f16" else ["--cache-type-k", cache_type, "--cache-type-v", cache_type]


def cli_argv(launch: CliLaunch) -> list[str]:
    argv = [
        launch.binary,
        "--model", str(launch.model),
        "--ctx-size", str(launch.ctx_size),
        *launch.sampling.argv(),
    ]  # fmt: skip
    if launch.prompt is not None:
        # This llama-cli is chat-only (-no-cnv is rejected): -p with -st answers
        # one turn and exits, which is what a script or a smoke test wants.
        argv += ["--prompt", launch.prompt, "--single-turn"]
    if launch.n_predict is not None:
        argv += ["--n-predict", str(launch.n_predict)]
    if launch.cluster is not None:
        argv += launch.cluster.argv()
    argv += _cache_type_argv(launch.cache_type)
    argv += _disk_backed_argv(launch.disk_backed)
    argv += list(launch.extra_args)
    return argv


@dataclass(frozen=True)
class WorkerLaunch:
    """llama.cpp's rpc-server on a worker machine."""

    binary: str
    host: str
    port: int
    threads: int  # for its CPU device: rpc-server's own default is half the logical cores
    devices: tuple[str, ...] = ()  # rpc-server's --device; empty: its GPUs, else its CPU
    cache: bool = True  # rpc-server -c: weights received are kept on disk, so a reload sends hashes only


def worker_argv(launch: WorkerLaunch) -> list[str]:
    argv = [launch.binary, "--host", launch.host, "--port", str(launch.port), "--threads", str(launch.threads)]
    if launch.devices:
        argv += ["--device", ",".join(launch.devices)]
    if launch.cache:
        argv.append("--cache")
    return argv


def default_alias(model: Path, *, general_name: str | None = None) -> str:
    """The name the OpenAI API serves the model under.

    The Ultra gets its Hugging Face name, so client code written for one
    machine works on another; any other model gets its file's stem, without
    the ``-00001-of-00006`` split suffix.
    """
    split = parse_split_name(model.name)
    stem = split.stem if split is not None else model.name.removesuffix(".gguf")
    haystack = f"{stem} {general_name or ''}".lower()
    if "nemotron-3-ultra" in haystack or "nemotron 3 ultra" in haystack:
        return ULTRA_ALIAS
    return stem


def alias_for_repo(repo: str) -> str:
    """The served name for a Hub repository: the Ultra's model name, else the repo id."""
    return ULTRA_ALIAS if repo.lower() == ULTRA_REPO.lower() else repo


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: assume it is reachable


def client_base_url(host: str, port: int) -> str:
    # A wildcard bind is reached through loopback from this machine.
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/v1"


def openai_snippet(
    *, base_url: str, model: str, needs_key: bool, key_file: Path | None = None, key_env: str = "NEMOLAUNCH_API_KEY"
) -> str:
    """Python a person can paste to talk to the server; it names where the key is, never the key."""
    if key_file is not None:
        key = f"open({str(key_file)!r}).readline().strip()"
    elif needs_key:
        key = f'os.environ["{key_env}"]'
    else:
        key = '"not-needed"'
    lines = [
        "from openai import OpenAI",
        *(["import os"] if needs_key and key_file is None else []),
        f'client = OpenAI(base_url="{base_url}", api_key={key})',
        "reply = client.chat.completions.create(",
        f'    model="{model}", messages=[{{"role": "user", "content": "Hello!"}}]',
        ")",
        "print(reply.choices[0].message.content)",
    ]
    return "\n".join(lines)


def _number(value: float) -> str:
    # repr keeps "1.0" and "0.95" exactly as a person would write them.
    return repr(float(value))
