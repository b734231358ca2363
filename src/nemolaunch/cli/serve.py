"""`nemolaunch serve`: a model behind llama-server's OpenAI-compatible API.

It resolves the model and the binary, checks what is cheap to check, prints the exact command, then
replaces itself with llama-server (``os.execve``) so that it owns the terminal and its signals: Ctrl-C
reaches llama-server directly and no nemolaunch process is left behind. What `run` shares with it is
in ``launch_command``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from nemolaunch.cli.api_key import API_KEY_ENV, check_api_key_file
from nemolaunch.cli.cluster import RpcOption, launch_cluster, read_endpoints, workers_for_launch
from nemolaunch.cli.context_options import CacheTypeOption, CtxOption
from nemolaunch.cli.launch_command import (
    MANAGED_SERVER_OPTIONS,
    BuildOption,
    DryRunOption,
    JsonOption,
    LlamaCppOption,
    MinPOption,
    ModelOption,
    NoDownloadOption,
    TempOption,
    TopPOption,
    check_disk_backed_passthrough,
    check_json,
    check_passthrough,
    check_port_for_launch,
    exec_launch,
    model_and_passthrough,
    model_request,
)
from nemolaunch.cli.llama_binary import find_llama_binary, warn_if_gpus_go_unused
from nemolaunch.cli.log_file import server_log_file
from nemolaunch.cli.output import err_console, note, print_command, print_json, styled, warn
from nemolaunch.cli.plan import (
    AllowDiskOption,
    ForceOption,
    HardwareOption,
    MinSpeedOption,
    PreferOption,
    QuantOption,
    flag,
)
from nemolaunch.cli.settings import llama_cpp_dir, load_settings
from nemolaunch.core.launch import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Sampling,
    ServerLaunch,
    client_base_url,
    is_loopback,
    openai_snippet,
    server_argv,
)
from nemolaunch.errors import BadOption

#: The variable llama-server reads its key from (LLAMA_ARG_API_KEY is ignored by this build).
SERVER_KEY_ENV = "LLAMA_API_KEY"


def serve_command(
    ctx: typer.Context,
    model: ModelOption = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help=f"Port to listen on [default: {DEFAULT_PORT}].")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help=f"Address to bind; 0.0.0.0 for all [default: {DEFAULT_HOST}].")
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Model name clients ask for [default: from the model].")
    ] = None,
    ctx_size: CtxOption = None,
    cache_type: CacheTypeOption = None,
    temp: TempOption = None,
    top_p: TopPOption = None,
    min_p: MinPOption = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help=f"File holding the API key [or env {API_KEY_ENV}]."),
    ] = None,
    parallel: Annotated[
        int | None,
        typer.Option("--parallel", help="Server slots (requests served at once) [default: llama-server's, 4]."),
    ] = None,
    rpc: RpcOption = None,
    sessions: Annotated[
        Path | None,
        typer.Option("--sessions", help="Folder where `nemolaunch session save` keeps conversations (made 0700)."),
    ] = None,
    log_file: Annotated[
        Path | None,
        typer.Option("--log-file", help="Also write llama-server's log to this file (`nemolaunch logs` shows it)."),
    ] = None,
    log_dir: Annotated[
        Path | None,
        typer.Option("--log-dir", help="Keep the log in this folder, as server-PORT-TIME.log [setting: log_dir]."),
    ] = None,
    quant: QuantOption = None,
    prefer: PreferOption = None,
    min_speed: MinSpeedOption = None,
    allow_disk: AllowDiskOption = False,
    force: ForceOption = False,
    hardware: HardwareOption = None,
    no_download: NoDownloadOption = False,
    llama_cpp: LlamaCppOption = None,
    build: BuildOption = False,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Serve a model with llama-server's OpenAI-compatible API (args after -- go to llama-server).

    MODEL may also come first, without --model: `nemolaunch serve REPO:QUANT --port 8001`. Defaults can
    be kept in config.toml or NEMOLAUNCH_* variables (`nemolaunch config show`).
    """
    model, passthrough = model_and_passthrough(model, ctx.args)
    check_passthrough(passthrough, MANAGED_SERVER_OPTIONS)
    check_json(json_output=json_output, dry_run=dry_run)
    endpoints = read_endpoints(rpc)
    settings = load_settings(
        model=model, port=port, host=host, ctx_size=ctx_size, cache_type=cache_type, temp=temp, top_p=top_p,
        min_p=min_p, api_key_file=api_key_file, parallel=parallel, quant=quant, prefer=prefer, llama_cpp=llama_cpp,
        log_dir=log_dir,
        allow_disk=flag(allow_disk),
    )  # fmt: skip
    s = settings.values
    _check_host(s.host)  # before any warning: a host that does not resolve is the one thing to hear
    if alias is not None and not alias.strip():
        raise BadOption(option="--alias", value="''", hint="give a name, or leave --alias out")
    request = model_request(settings, force=force, hardware=hardware, no_download=no_download, dry_run=dry_run,
                             min_speed=min_speed)  # fmt: skip
    early = request.check_local()
    key = ServerKey.read(s.api_key_file)
    check_port_for_launch(host=s.host, port=s.port, dry_run=dry_run)
    binary = find_llama_binary("llama-server", llama_cpp=llama_cpp_dir(settings), build=build, dry_run=dry_run)
    if hardware is None:
        warn_if_gpus_go_unused(binary, passthrough)
    workers = workers_for_launch(rpc, endpoints, server=binary.path, hardware=hardware)
    resolved, context = replace(request, workers=workers).resolve(early)
    if resolved.disk_backed:
        check_disk_backed_passthrough(passthrough)
    if not is_loopback(s.host) and not key.present:
        # After the checks that can refuse: a warning is worth reading only about a server that will start.
        warn(
            f"binding {s.host} without an API key: anyone who can reach this port can use the model. "
            f"Pass --api-key-file FILE or set {API_KEY_ENV}."
        )
    launch = ServerLaunch(
        binary=str(binary.path), model=resolved.path, ctx_size=context, alias=alias or resolved.alias, host=s.host,
        port=s.port, sampling=Sampling(s.temp, s.top_p, s.min_p), api_key_file=key.file, parallel=s.parallel,
        cluster=launch_cluster(workers), cache_type=s.cache_type,
        disk_backed=resolved.disk_backed, sessions=_sessions_folder(sessions, dry_run=dry_run),
        log_file=server_log_file(log_file, settings, port=s.port, dry_run=dry_run), extra_args=passthrough,
    )  # fmt: skip
    argv = server_argv(launch)
    env = key.server_environment()
    _announce_server(launch, argv, env, key, json_output=json_output, dry_run=dry_run, server=binary.path)
    if dry_run:
        return
    if not early:
        check_port_for_launch(host=s.host, port=s.port, dry_run=False)  # again: a download may have taken hours
    exec_launch(
        argv, env, kind="server", host=s.host, port=s.port, alias=launch.alias, model=launch.model,
        quant=resolved.quant, placement=resolved.placement, forecast_bytes=resolved.forecast_bytes,
        log_file=launch.log_file, api_key_file=key.file,
    )  # fmt: skip


@dataclass(frozen=True)
class ServerKey:
    """The API key the server will ask for: a file (passed as a file), or NEMOLAUNCH_API_KEY's value."""

    file: Path | None
    env_key: str | None

    @classmethod
    def read(cls, file_setting: str | None) -> ServerKey:
        key_file = check_api_key_file(Path(file_setting) if file_setting else None)
        env_key = os.environ.get(API_KEY_ENV)
        if key_file is None and env_key is not None and not env_key.strip():
            raise BadOption(option=API_KEY_ENV, value="(empty)", hint="set it to the key, or unset it")
        return cls(key_file, env_key if key_file is None else None)

    @property
    def present(self) -> bool:
        return self.file is not None or bool(self.env_key) or bool(os.environ.get(SERVER_KEY_ENV))

    def server_environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.env_key:
            # The key travels in the environment, never in argv where `ps` shows it.
            env[SERVER_KEY_ENV] = self.env_key
        return env


def _announce_server(
    launch: ServerLaunch, argv: list[str], env: dict[str, str], key: ServerKey, *, json_output: bool, dry_run: bool,
    server: Path,
) -> None:  # fmt: skip
    """The command (stdout for a dry run, else stderr), and how a client reaches the server."""
    base_url = client_base_url(launch.host, launch.port)
    if json_output:
        # Names only for the environment: the values are secrets.
        names = [SERVER_KEY_ENV] if SERVER_KEY_ENV in env else []
        print_json({"command": argv, "base_url": base_url, "model": launch.alias, "env": names, "dry_run": dry_run})
        return
    print_command(argv, to_stderr=not dry_run)
    err_console.print(styled(f"OpenAI-compatible API at {base_url} serving model ", (launch.alias, "bold"), ":"))
    err_console.print(
        openai_snippet(
            base_url=base_url, model=launch.alias, needs_key=key.present, key_file=key.file,
            key_env=API_KEY_ENV if key.env_key else SERVER_KEY_ENV,
        ),
        markup=False,
    )  # fmt: skip
    _announce_web_ui(server, base_url)


def _announce_web_ui(server: Path, base_url: str) -> None:
    """Where the web chat is, or, for a build without one, that the terminal chat is the way to talk."""
    from nemolaunch.adapters.builder import web_ui_of

    web_ui = web_ui_of(server.parent)
    if web_ui is None:
        return  # a llama-server of someone's: what it serves at / is not known here
    if web_ui.startswith("none"):
        note(f"No web chat at {base_url.removesuffix('/v1')}/ ({web_ui}): chat in the terminal with "
             f"`nemolaunch chat --url {base_url}`.")  # fmt: skip
    else:
        err_console.print(styled("Web chat at ", (base_url.removesuffix("/v1") + "/", "bold"), f" ({web_ui})."))


def _check_host(host: str) -> None:
    from nemolaunch.adapters.ports import check_host

    check_host(host)


def _sessions_folder(folder: Path | None, *, dry_run: bool) -> Path | None:
    """The folder llama-server saves slots in: made (0700: conversations are private) unless a dry run."""
    if folder is None:
        return None
    folder = folder.expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise BadOption(option="--sessions", value=str(folder), hint="it is a file; name a folder")
    if not dry_run:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise BadOption(option="--sessions", value=str(folder), hint=f"it cannot be made ({exc.strerror})") from exc
        if folder.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            warn(f"{folder} is open to other users, and sessions hold whole conversations: chmod 700 {folder}")
    return folder
