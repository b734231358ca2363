"""One error hierarchy for everything nemolaunch refuses or fails at.

Each exception carries the data that explains it; ``ERROR_TABLE`` (the one
place that words them) maps each class to an exit code and a one-line message
template that names what is wrong and what to do. The CLI catches
``NemolaunchError`` once, prints ``describe(exc)`` and exits with its code;
tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Exit codes, shared by every command.
EXIT_USAGE = 2  # the request itself is wrong: a flag, a file the user named
EXIT_NOT_FOUND = 3  # something the request needs does not exist
EXIT_ENVIRONMENT = 4  # this machine lacks a tool or resource
EXIT_BUILD = 5  # building llama.cpp failed
EXIT_DOES_NOT_FIT = 6  # no quant fits the memory budget
EXIT_HUB = 7  # the Hugging Face Hub refused or failed
EXIT_INTEGRITY = 8  # a file is corrupt or incomplete


class NemolaunchError(Exception):
    """Base of every error nemolaunch reports to a person."""

    def __init__(self, **data: object) -> None:
        super().__init__(*data.values())
        self.data = data

    def __getattr__(self, name: str) -> object:
        # Only reached for attributes not set normally: the carried data.
        data = self.__dict__.get("data", {})
        if name in data:
            return data[name]
        raise AttributeError(name)

    def __str__(self) -> str:
        return describe(self)[1]


# --- models and files -------------------------------------------------------
class ModelFileMissing(NemolaunchError):
    """path"""


class NotGGUF(NemolaunchError):
    """path, magic"""


class TruncatedGGUF(NemolaunchError):
    """path, reason"""


class MalformedGGUF(TruncatedGGUF):
    """path, reason: a header that claims more than its file holds, or repeats a key"""


class ShardsMissing(NemolaunchError):
    """path, missing (list of file names), total"""


class SmallFileRefused(NemolaunchError):
    """option (the flag or variable that named it), what, path, problem, fix: a small file that is not one"""


class ApiKeyFileMissing(NemolaunchError):
    """path"""


class ApiKeyFileEmpty(NemolaunchError):
    """path"""


class ApiKeyFileSpaces(NemolaunchError):
    """path, line (1-based): a key line with a CR or spaces around it, which llama-server keeps in the key"""


# --- network ports ------------------------------------------------------------
class PortOutOfRange(NemolaunchError):
    """port, option (the flag that gave it)"""


class PortInUse(NemolaunchError):
    """host, port"""


class HostDoesNotResolve(NemolaunchError):
    """host, reason (the resolver's words)"""


class BadOption(NemolaunchError):
    """option, value, hint"""


# --- llama.cpp binaries and builds ---------------------------------------------
class LlamaCppNotFound(NemolaunchError):
    """binary, searched (list of places)"""


class LlamaCppDirInvalid(NemolaunchError):
    """path, source (the flag or variable that named it), binary"""


# The build script is the one place that knows what a build needs, so these
# carry its own one-line reason.
class BuildToolMissing(NemolaunchError):
    """reason"""


class BuildSourceInvalid(NemolaunchError):
    """reason"""


class BuildUsage(NemolaunchError):
    """reason"""


class BuildFailed(NemolaunchError):
    """log (path), exit_code"""


# --- hardware and planning -------------------------------------------------------
class HardwareFileMissing(NemolaunchError):
    """path"""


class HardwareFileNotJson(NemolaunchError):
    """path, detail (where the JSON parser stopped)"""


class HardwareFileInvalid(NemolaunchError):
    """path, field (dotted path of the first bad field), problem"""


class MalformedModelReference(NemolaunchError):
    """reference, reason"""


class UnknownQuant(NemolaunchError):
    """repo, quant, available (list of quant names)"""


class QuantIncomplete(NemolaunchError):
    """repo, quant, missing (list of shard numbers), total"""


class NoGGUFInRepo(NemolaunchError):
    """repo, source (where the file list came from: hub, cache)"""


class NoCompleteQuant(NemolaunchError):
    """repo, incomplete (list of quant names whose shard sets are incomplete)"""


class ContextSizeNotPositive(NemolaunchError):
    """ctx_size"""


class ContextSizeTooLarge(NemolaunchError):
    """ctx_size, maximum (the model's trained context)"""


# --- hub and downloads -----------------------------------------------------------
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT), as shells report it


class UnsafeRepoId(NemolaunchError):
    """repo_id"""


class UnsafeRepoPath(NemolaunchError):
    """repo_id, path, reason"""


class HubListingInvalid(NemolaunchError):
    """repo_id, path, problem (how the listing describes the file: "as 0 bytes, which no model file is")"""


class HubRepoNotFound(NemolaunchError):
    """repo_id, endpoint"""


class HubRevisionNotFound(NemolaunchError):
    """repo_id, revision"""


class HubFileNotFound(NemolaunchError):
    """repo_id, revision, path, available (list of names near it)"""


class HubListingChanged(NemolaunchError):
    """repo_id, path, expected, listed"""


class GatedRepoNeedsToken(NemolaunchError):
    """repo_id, url"""


class GatedRepoNoAccess(NemolaunchError):
    """repo_id, url"""


class HubRequestFailed(NemolaunchError):
    """repo_id, status, reason"""


class HubUnreachable(NemolaunchError):
    """endpoint, reason"""


class HubTooSlow(NemolaunchError):
    """endpoint, what (the answer waited for), seconds (the deadline), received (how much came)"""


class NotEnoughDisk(NemolaunchError):
    """target, needed, free, missing, margin (human sizes); needed_bytes, free_bytes"""


class DownloadFailed(NemolaunchError):
    """path, attempts, reason"""


class ServedSizeMismatch(NemolaunchError):
    """path, listed, served (byte counts), header (the one that gave the served size)"""


class ServedAnswerInvalid(NemolaunchError):
    """path, header, value (what it said), conflict (why that cannot be)"""


class DownloadInterrupted(NemolaunchError):
    """on_disk, total (human sizes)"""


class FilesMissingOffline(NemolaunchError):
    """repo_id, reason, missing (list of repo paths), target"""


class ChecksumMismatch(NemolaunchError):
    """path, expected, actual, detail (what happened to the file and what to do)"""


class SplitSetIncomplete(NemolaunchError):
    """where, name, total, missing (list of file names)"""


class SplitCountMismatch(NemolaunchError):
    """path, in_name, in_header"""


# --- launching a planned model -------------------------------------------------
class NothingFits(NemolaunchError):
    """model, shortfall (human size), smallest (quant name), budget (human size), hint (what to do)"""


class ModelNotDownloaded(NemolaunchError):
    """reference (repo:quant)"""


class TargetNotWritable(NemolaunchError):
    """path, reason"""


class LaunchFailed(NemolaunchError):
    """binary, reason"""


class QuantDoesNotFit(NemolaunchError):
    """reference (repo:quant), shortfall, budget, hint"""


class NotCachedOffline(NemolaunchError):
    """repo, quant (or "any quant"), reason, cached (list of cached quant names)"""


# --- several machines (llama.cpp RPC) -------------------------------------------------
class BadRpcEndpoint(NemolaunchError):
    """endpoint, reason"""


class RpcWorkerUnreachable(NemolaunchError):
    """endpoint, reason"""


class RpcWorkerFailed(NemolaunchError):
    """endpoint, reason (llama.cpp's own words, one line)"""


class RpcCacheNoSpace(NemolaunchError):
    """folder, needed, free, margin (human sizes); needed_bytes, free_bytes"""


class ClusterNeedsLiveWorkers(NemolaunchError):
    """path, workers (list of endpoints in the file)"""


# --- talking to a running server (nemolaunch chat) ---------------------------------------------
class ServerUnreachable(NemolaunchError):
    """url, reason"""


class KeyWouldLeaveOrigin(NemolaunchError):
    """url (the server asked), target (the other origin its redirect pointed at)"""


class ApiKeyNeeded(NemolaunchError):
    """url"""


class ApiKeyRejected(NemolaunchError):
    """url"""


class ModelNotServed(NemolaunchError):
    """url, model, served (list of model ids)"""


class ChatRequestFailed(NemolaunchError):
    """url, status, reason (the server's own words, one line)"""


class Interrupted(NemolaunchError):
    """what (the step Ctrl-C stopped), after (what is left and what to do)"""


# --- sessions ---------------------------------------------------------------------------
class SessionsNotEnabled(NemolaunchError):
    """url"""


class SessionFailed(NemolaunchError):
    """url, status, reason (the server's words)"""


class SessionNotFound(NemolaunchError):
    """name, folder"""


# --- settings (config.toml and NEMOLAUNCH_*) ----------------------------------------------
class SettingsFileInvalid(NemolaunchError):
    """path, key, problem"""


class SettingsFileNotToml(NemolaunchError):
    """path, detail"""


# --- what is running (ps, stop, logs) ----------------------------------------------------------
class NoSuchLaunch(NemolaunchError):
    """target (the word given), running (list of launches in a few words)"""


class NotALaunch(NemolaunchError):
    """pid, program"""


class AmbiguousLaunch(NemolaunchError):
    """target, matches (list of launches in a few words)"""


class LaunchNotNamed(NemolaunchError):
    """verb, running (list of launches in a few words)"""


class NoLogFile(NemolaunchError):
    """launch (in a few words)"""


class NothingLaunched(NemolaunchError):
    """verb (what was asked: "show the log of")"""


@dataclass(frozen=True)
class ErrorSpec:
    exit_code: int
    template: str


# The one table: class -> exit code and message. Templates use the exception's
# data by name; keep each to one line that says what is wrong and what to do.
ERROR_TABLE: dict[type[NemolaunchError], ErrorSpec] = {
    SmallFileRefused: ErrorSpec(EXIT_USAGE, "{option} {path} {problem}: {fix}"),
    ModelFileMissing: ErrorSpec(EXIT_NOT_FOUND, "model file {path} does not exist: pass the path of a .gguf file"),
    NotGGUF: ErrorSpec(
        EXIT_USAGE,
        "{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'): pass a .gguf model",
    ),
    TruncatedGGUF: ErrorSpec(EXIT_INTEGRITY, "{path} is a damaged or incomplete GGUF ({reason}): download it again"),
    MalformedGGUF: ErrorSpec(
        EXIT_INTEGRITY,
        "{path} has a malformed GGUF header ({reason}): it is damaged or not a model; "
        "use a GGUF from a source you trust",
    ),
    ShardsMissing: ErrorSpec(
        EXIT_INTEGRITY,
        "{path} is part of a {total}-file split model, but {missing_list} is missing: "
        "download every shard into the same folder",
    ),
    ApiKeyFileMissing: ErrorSpec(
        EXIT_NOT_FOUND, "--api-key-file {path} does not exist: create it with the key on one line"
    ),
    ApiKeyFileEmpty: ErrorSpec(EXIT_USAGE, "--api-key-file {path} is empty: put the key on its first line"),
    ApiKeyFileSpaces: ErrorSpec(
        EXIT_USAGE,
        "--api-key-file {path} line {line} has a CR (Windows line end) or spaces around the key, which llama-server "
        "keeps as part of it: remove them (sed -i 's/^[[:space:]]*//; s/[[:space:]]*$//' {path})",
    ),
    PortOutOfRange: ErrorSpec(EXIT_USAGE, "{option} {port} is out of range: use a port from 1 to 65535"),
    PortInUse: ErrorSpec(
        EXIT_ENVIRONMENT,
        "port {port} on {host} is already in use: stop what holds it or pass another --port",
    ),
    HostDoesNotResolve: ErrorSpec(
        EXIT_USAGE,
        "--host {host} does not resolve to an address of any machine ({reason}): "
        "pass an address of this machine such as 127.0.0.1 or 0.0.0.0, or a name that resolves",
    ),
    BadOption: ErrorSpec(EXIT_USAGE, "{option} {value!s} is not valid: {hint}"),
    LlamaCppNotFound: ErrorSpec(
        EXIT_NOT_FOUND,
        "{binary} not found (looked in {searched_list}): run `nemolaunch build`, "
        "or pass --llama-cpp DIR / set NEMOLAUNCH_LLAMA_CPP to a folder holding it",
    ),
    LlamaCppDirInvalid: ErrorSpec(
        EXIT_NOT_FOUND,
        "{source} names {path}, which holds no executable {binary}: point it at llama.cpp's bin folder",
    ),
    BuildToolMissing: ErrorSpec(EXIT_ENVIRONMENT, "{reason}"),
    BuildSourceInvalid: ErrorSpec(EXIT_USAGE, "{reason}"),
    BuildUsage: ErrorSpec(EXIT_USAGE, "{reason}"),
    BuildFailed: ErrorSpec(EXIT_BUILD, "building llama.cpp failed (exit {exit_code}): the full log is {log}"),
    # --- hardware and planning ---
    HardwareFileMissing: ErrorSpec(
        EXIT_NOT_FOUND,
        "--hardware {path} does not exist: pass a JSON file in the hardware facts shape",
    ),
    HardwareFileNotJson: ErrorSpec(
        EXIT_USAGE, "--hardware {path} is not JSON ({detail}): pass a hardware facts JSON file"
    ),
    HardwareFileInvalid: ErrorSpec(
        EXIT_USAGE,
        "--hardware {path} does not match the hardware facts shape: {field}: {problem}",
    ),
    MalformedModelReference: ErrorSpec(
        EXIT_USAGE,
        "model {reference!r} is malformed ({reason}): write owner/repo or owner/repo:QUANT, "
        "such as unsloth/NVIDIA-Nemotron-3-Ultra-550B-A55B-GGUF:UD-Q4_K_XL",
    ),
    UnknownQuant: ErrorSpec(EXIT_NOT_FOUND, "{repo} has no quant {quant}: pick one of {available_list}"),
    QuantIncomplete: ErrorSpec(
        EXIT_NOT_FOUND,
        "{repo}:{quant} is incomplete (shards {missing_list} of {total} are missing): pick another quant",
    ),
    NoGGUFInRepo: ErrorSpec(
        EXIT_NOT_FOUND, "{repo} holds no GGUF model files (per the {source} listing): name a GGUF repository"
    ),
    NoCompleteQuant: ErrorSpec(
        EXIT_NOT_FOUND,
        "{repo} has no complete quant (incomplete: {incomplete_list}): finish the download or name another repo",
    ),
    ContextSizeNotPositive: ErrorSpec(
        EXIT_USAGE, "--ctx-size {ctx_size} is not valid: use a positive number of tokens"
    ),
    ContextSizeTooLarge: ErrorSpec(
        EXIT_USAGE,
        "--ctx-size {ctx_size} is above the model's maximum of {maximum} tokens: use {maximum} or less",
    ),
    # --- hub and downloads ---
    UnsafeRepoId: ErrorSpec(EXIT_USAGE, "{repo_id!r} is not a Hub repo id: use the form owner/name"),
    UnsafeRepoPath: ErrorSpec(
        EXIT_HUB,
        "{repo_id} lists a file named {path!r}, which is not a safe relative path ({reason}): nothing was fetched; "
        "check that HF_ENDPOINT names the Hub or a mirror you trust",
    ),
    HubListingInvalid: ErrorSpec(
        EXIT_HUB,
        "{repo_id} lists {path} {problem}: the listing is broken, so nothing was fetched; "
        "tell the repo's owner, or check that HF_ENDPOINT names the Hub or a mirror you trust",
    ),
    HubRepoNotFound: ErrorSpec(
        EXIT_NOT_FOUND,
        "repo {repo_id} was not found on {endpoint}: check the name, or run `hf auth login` if it is private",
    ),
    HubRevisionNotFound: ErrorSpec(
        EXIT_NOT_FOUND, "{repo_id} has no revision {revision!r}: pass a branch, tag or commit that exists"
    ),
    HubFileNotFound: ErrorSpec(EXIT_NOT_FOUND, "{repo_id}@{revision} has no file {path}; it has: {available_list}"),
    HubListingChanged: ErrorSpec(
        EXIT_HUB,
        "{repo_id} changed since it was listed ({path}: expected {expected}, the Hub now lists {listed}): "
        "run the command again",
    ),
    GatedRepoNeedsToken: ErrorSpec(
        EXIT_HUB, "{repo_id} is gated: accept its terms at {url}, then run `hf auth login` or set HF_TOKEN"
    ),
    GatedRepoNoAccess: ErrorSpec(
        EXIT_HUB,
        "your Hugging Face token has no access to gated {repo_id}: accept its terms at {url} "
        "with that account, or log in with one that did",
    ),
    HubRequestFailed: ErrorSpec(EXIT_HUB, "the Hub answered {status} for {repo_id} ({reason}): try again later"),
    HubUnreachable: ErrorSpec(
        EXIT_HUB, "the Hugging Face Hub at {endpoint} is unreachable ({reason}): check the network or proxy"
    ),
    HubTooSlow: ErrorSpec(
        EXIT_HUB,
        "the Hugging Face Hub at {endpoint} sent {received} of {what} in {seconds} s and had not finished: it "
        "(or a proxy between) is too slow; check the network or proxy, or wait longer with "
        "NEMOLAUNCH_HUB_DEADLINE=SECONDS",
    ),
    NotEnoughDisk: ErrorSpec(
        EXIT_ENVIRONMENT,
        "{target} has {free} free, but the download needs {needed} more plus a {margin} margin: "
        "free {missing} there or choose another folder",
    ),
    DownloadFailed: ErrorSpec(
        EXIT_HUB,
        "downloading {path} failed after {attempts} attempts ({reason}): "
        "run the command again to resume from the bytes on disk",
    ),
    ServedSizeMismatch: ErrorSpec(
        EXIT_HUB,
        "{path} is listed as {listed} bytes, but the server's {header} says {served}: the Hub's listing and its "
        "file disagree, so no download of it can be whole (its partial file was deleted); tell the repo's owner, "
        "or check HF_ENDPOINT and any proxy",
    ),
    ServedAnswerInvalid: ErrorSpec(
        EXIT_HUB,
        "the server sending {path} said {header}: {value}, but {conflict}: it (or a proxy between) is broken, "
        "and asking again gets the same answer; check HF_ENDPOINT and any proxy, then run again",
    ),
    DownloadInterrupted: ErrorSpec(
        EXIT_INTERRUPTED, "download stopped with {on_disk} of {total} on disk: run the same command again to resume"
    ),
    FilesMissingOffline: ErrorSpec(
        EXIT_NOT_FOUND,
        "offline ({reason}) and {target} lacks {missing_list} of {repo_id}: "
        "connect to the Hub and run the command again",
    ),
    ChecksumMismatch: ErrorSpec(
        EXIT_INTEGRITY, "{path} has sha256 {actual}, not the {expected} the Hub lists: {detail}"
    ),
    SplitSetIncomplete: ErrorSpec(
        EXIT_INTEGRITY, "{name} is split into {total} files, but {where} lacks {missing_list}: every part is needed"
    ),
    SplitCountMismatch: ErrorSpec(
        EXIT_INTEGRITY,
        "{path} is named as one of {in_name} parts, but its GGUF header says split.count = {in_header}: "
        "the file is damaged or from another upload; delete it and download again",
    ),
    NothingFits: ErrorSpec(
        EXIT_DOES_NOT_FIT,
        "no recommended quant of {model} fits: {smallest} is {shortfall} over this machine's {budget}; {hint}",
    ),
    TargetNotWritable: ErrorSpec(
        EXIT_ENVIRONMENT,
        "{path} cannot be written ({reason}): check the folder's permissions, or download elsewhere with --local-dir",
    ),
    LaunchFailed: ErrorSpec(
        EXIT_ENVIRONMENT, "could not start {binary} ({reason}): rebuild it with `nemolaunch build`"
    ),
    QuantDoesNotFit: ErrorSpec(
        EXIT_DOES_NOT_FIT, "{reference} does not fit: it is {shortfall} over this machine's {budget}; {hint}"
    ),
    NotCachedOffline: ErrorSpec(
        EXIT_NOT_FOUND,
        "{reason}, and the HF cache holds no complete {quant} of {repo} (cached: {cached_list}): "
        "connect to the Hub to list and download it",
    ),
    BadRpcEndpoint: ErrorSpec(
        EXIT_USAGE,
        "--rpc {endpoint!r} is not a worker address ({reason}): write HOST:PORT, such as 10.0.0.2:50052, "
        "and separate several with commas",
    ),
    RpcWorkerUnreachable: ErrorSpec(
        EXIT_ENVIRONMENT,
        "RPC worker {endpoint} is unreachable ({reason}): start `nemolaunch rpc-worker --host <its address>` "
        "there, or leave it out of --rpc",
    ),
    RpcCacheNoSpace: ErrorSpec(
        EXIT_ENVIRONMENT,
        "{folder} has {free} free, but --preload writes {needed} of tensors there plus a {margin} margin: free "
        "space there, point LLAMA_CACHE at a bigger disk, or leave out --preload",
    ),
    RpcWorkerFailed: ErrorSpec(
        EXIT_ENVIRONMENT,
        "RPC worker {endpoint} did not answer llama.cpp ({reason}): restart `nemolaunch rpc-worker` there "
        "with the same llama.cpp build as this machine",
    ),
    ClusterNeedsLiveWorkers: ErrorSpec(
        EXIT_USAGE,
        "--hardware {path} describes a cluster ({workers_list}), but a launch runs on live workers: "
        "pass them with --rpc HOST:PORT,... (plan and download read cluster files)",
    ),
    ServerUnreachable: ErrorSpec(
        EXIT_ENVIRONMENT,
        "no server answers at {url} ({reason}): start one with `nemolaunch serve`, or pass --url with its address",
    ),
    KeyWouldLeaveOrigin: ErrorSpec(
        EXIT_ENVIRONMENT,
        "the server at {url} redirected to {target}, another origin: the API key is not sent there, so nothing "
        "was asked of it; pass --url with the server's own address",
    ),
    ApiKeyNeeded: ErrorSpec(
        EXIT_USAGE,
        "the server at {url} wants an API key: pass --api-key-file FILE or set NEMOLAUNCH_API_KEY",
    ),
    ApiKeyRejected: ErrorSpec(
        EXIT_USAGE,
        "the server at {url} refused the API key: pass the key it was started with "
        "(--api-key-file FILE or NEMOLAUNCH_API_KEY)",
    ),
    ModelNotServed: ErrorSpec(
        EXIT_NOT_FOUND,
        "the server at {url} serves no model {model!r} (it serves {served_list}): pass one of those "
        "with --model, or leave --model out",
    ),
    ChatRequestFailed: ErrorSpec(EXIT_ENVIRONMENT, "the server at {url} answered {status}: {reason}"),
    Interrupted: ErrorSpec(EXIT_INTERRUPTED, "Ctrl-C stopped {what}: {after}"),
    SessionsNotEnabled: ErrorSpec(
        EXIT_ENVIRONMENT,
        "the server at {url} keeps no sessions: restart it with `nemolaunch serve --sessions DIR`",
    ),
    SessionFailed: ErrorSpec(
        EXIT_ENVIRONMENT, "the server at {url} answered {status} ({reason}): check its log, then try again"
    ),
    SessionNotFound: ErrorSpec(
        EXIT_NOT_FOUND, "no session {name} in {folder}: `nemolaunch session list` shows the saved ones"
    ),
    SettingsFileInvalid: ErrorSpec(EXIT_USAGE, "{path}: {key}: {problem}; fix it there, or remove the key"),
    SettingsFileNotToml: ErrorSpec(
        EXIT_USAGE, "{path} is not TOML ({detail}): fix it, or remove the file (`nemolaunch config path` names it)"
    ),
    NoSuchLaunch: ErrorSpec(
        EXIT_NOT_FOUND,
        "nothing nemolaunch launched matches {target!r} (running: {running_list}): "
        "name a port, an alias or a pid that `nemolaunch ps` lists",
    ),
    NotALaunch: ErrorSpec(
        EXIT_USAGE,
        "pid {pid} ({program}) was not started by nemolaunch serve, run or rpc-worker, so it is left alone: "
        "stop it yourself if you mean to",
    ),
    AmbiguousLaunch: ErrorSpec(
        EXIT_USAGE, "{target!r} names several launches ({matches_list}): name one by its port or pid"
    ),
    LaunchNotNamed: ErrorSpec(
        EXIT_USAGE, "name which launch to {verb}: a port, an alias or a pid (running: {running_list})"
    ),
    NoLogFile: ErrorSpec(
        EXIT_NOT_FOUND,
        "{launch} keeps no log file: start it with `nemolaunch serve --log-file PATH` (or set log_dir)",
    ),
    NothingLaunched: ErrorSpec(
        EXIT_NOT_FOUND, "no server nemolaunch launched is running to {verb}: start one with `nemolaunch serve`"
    ),
    ModelNotDownloaded: ErrorSpec(
        EXIT_NOT_FOUND,
        "{reference} is not downloaded yet: run `nemolaunch download {reference}` first",
    ),
}


def first_line(exc: BaseException) -> str:
    """An exception's first line, for a one-line message (its name when it says nothing)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# A URL's user:password@ (scheme://, then anything but /, ?, # or space up to the last @ before them:
# a password may hold an @ of its own).
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def without_credentials(text: str) -> str:
    """``text`` with the user:password@ of every URL in it shown as ***@ (HF_ENDPOINT or --url may carry one)."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def _format_list(items: object) -> str:
    if isinstance(items, (list, tuple)):
        return ", ".join(str(item) for item in items) or "none"
    return str(items)


def describe(exc: NemolaunchError) -> tuple[int, str]:
    """The exit code and the one-line message for ``exc``."""
    for cls in type(exc).__mro__:
        spec = ERROR_TABLE.get(cls)  # type: ignore[arg-type]
        if spec is not None:
            break
    else:
        raise KeyError(f"{type(exc).__name__} has no entry in ERROR_TABLE")
    fields = dict(exc.data)
    for key, value in exc.data.items():
        fields[f"{key}_list"] = _format_list(value)
    # Masked once the line is whole: a URL may come in any field (an endpoint, a url, a reason quoting one).
    return spec.exit_code, without_credentials(spec.template.format(**fields))
