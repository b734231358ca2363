"""`nemolaunch run`: chat with a model in the terminal through llama-cli.

It resolves the model and the binary as `serve` does, prints the exact command, then replaces itself
with llama-cli (``os.execve``), so that llama-cli owns the terminal and its signals.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Annotated

import typer

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
    exec_launch,
    model_and_passthrough,
    model_request,
)
from nemolaunch.cli.llama_binary import find_llama_binary, warn_if_gpus_go_unused
from nemolaunch.cli.output import print_command, print_json
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
from nemolaunch.core.launch import DEFAULT_PARALLEL, CliLaunch, Sampling, cli_argv
from nemolaunch.errors import BadOption

#: What `serve` manages, less what llama-cli has no use for, and the options `run` itself takes.
_MANAGED_CLI_OPTIONS = {
    key: value for key, value in MANAGED_SERVER_OPTIONS.items() if value not in ("--port", "--host", "--alias")
} | {"-p": "--prompt", "--prompt": "--prompt", "-n": "--n-predict", "--n-predict": "--n-predict"}


def run_command(
    ctx: typer.Context,
    model: ModelOption = None,
    ctx_size: CtxOption = None,
    cache_type: CacheTypeOption = None,
    temp: TempOption = None,
    top_p: TopPOption = None,
    min_p: MinPOption = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Answer this one prompt and exit (no chat).")] = None,
    n_predict: Annotated[int | None, typer.Option("--n-predict", "-n", help="Stop after this many tokens.")] = None,
    rpc: RpcOption = None,
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
    """Chat with a model in the terminal through llama-cli (args after -- go to llama-cli)."""
    model, passthrough = model_and_passthrough(model, ctx.args)
    check_passthrough(passthrough, _MANAGED_CLI_OPTIONS)
    check_json(json_output=json_output, dry_run=dry_run)
    endpoints = read_endpoints(rpc)
    settings = load_settings(
        model=model, ctx_size=ctx_size, cache_type=cache_type, temp=temp, top_p=top_p, min_p=min_p, quant=quant,
        prefer=prefer, llama_cpp=llama_cpp, allow_disk=flag(allow_disk),
    )  # fmt: skip
    s = settings.values
    request = model_request(settings, force=force, hardware=hardware, no_download=no_download, dry_run=dry_run,
                             min_speed=min_speed)  # fmt: skip
    request = replace(request, parallel=DEFAULT_PARALLEL)
    early = request.check_local()
    if n_predict is not None and (n_predict == 0 or n_predict < -1):
        raise BadOption(option="--n-predict", value=n_predict, hint="use a positive count, or -1 for no limit")
    binary = find_llama_binary("llama-cli", llama_cpp=llama_cpp_dir(settings), build=build, dry_run=dry_run)
    if hardware is None:
        warn_if_gpus_go_unused(binary, passthrough)
    workers = workers_for_launch(rpc, endpoints, server=binary.path, hardware=hardware)
    resolved, context = replace(request, workers=workers).resolve(early)
    if resolved.disk_backed:
        check_disk_backed_passthrough(passthrough)
    launch = CliLaunch(
        binary=str(binary.path), model=resolved.path, ctx_size=context, sampling=Sampling(s.temp, s.top_p, s.min_p),
        prompt=prompt, n_predict=n_predict, cluster=launch_cluster(workers), cache_type=s.cache_type,
        disk_backed=resolved.disk_backed,
        extra_args=passthrough,
    )  # fmt: skip
    argv = cli_argv(launch)
    if json_output:
        print_json({"command": argv, "dry_run": dry_run})
    else:
        print_command(argv, to_stderr=not dry_run)
    if dry_run:
        return
    exec_launch(
        argv, dict(os.environ), kind="cli", model=launch.model, quant=resolved.quant, placement=resolved.placement,
        forecast_bytes=resolved.forecast_bytes,
    )  # fmt: skip
