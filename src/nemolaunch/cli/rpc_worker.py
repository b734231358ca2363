"""`nemolaunch rpc-worker`: lend this machine's memory to a head over llama.cpp's own RPC backend.

It checks what is cheap to check (the address, the port, the devices), prints what it runs and the
``--rpc`` words the head needs, then becomes llama.cpp's ``rpc-server`` (exec), so Ctrl-C and tmux
signals reach it directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.output import err_console, print_command, print_json, styled, warn
from nemolaunch.core.launch import DEFAULT_RPC_PORT

if TYPE_CHECKING:
    from nemolaunch.adapters.llamacpp import Found

#: What this llama.cpp builds the RPC worker as, and the name nemolaunch's build links to it.
WORKER_BINARIES = ("rpc-server", "ggml-rpc-server")


def rpc_worker_command(
    host: Annotated[
        str, typer.Option("--host", "-H", help="Address to listen on: this machine's LAN address, or 0.0.0.0.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = DEFAULT_RPC_PORT,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache/--no-cache",
            help="rpc-server's tensor cache (-c): weights over 10 MiB received once are kept on disk, so the "
            "head's next load sends their hashes, not their bytes.",
        ),
    ] = True,
    preload: Annotated[
        str | None,
        typer.Option(
            "--preload",
            help="Seed the tensor cache from this machine's own copy of the model (REPO:QUANT, downloaded here, or "
            "a local .gguf) before serving, so even the head's first load sends hashes, not weights.",
        ),
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", "-t", help="Threads for the CPU device [default: physical cores].")
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", "-d", help="Devices to lend, e.g. CUDA0,CPU [default: the GPUs, else the CPU]."),
    ] = None,
    llama_cpp: Annotated[
        Path | None,
        typer.Option("--llama-cpp", help="Folder holding llama.cpp's binaries [env: NEMOLAUNCH_LLAMA_CPP]."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the command and exit.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="With --dry-run: print the launch as JSON.")] = False,
) -> None:
    """Serve this machine's GPUs (or CPU and RAM) to a head running `nemolaunch serve --rpc`."""
    from nemolaunch.adapters.ports import lan_addresses
    from nemolaunch.adapters.rpc_cache import cache_folder, llama_cache_env
    from nemolaunch.cli.launch_command import check_port_for_launch, exec_launch
    from nemolaunch.core.launch import WorkerLaunch, is_loopback, worker_argv
    from nemolaunch.errors import BadOption

    if json_output and not dry_run:
        raise BadOption(option="--json", value="without --dry-run", hint="add --dry-run to print the launch as JSON")
    if threads is not None and threads < 1:
        raise BadOption(option="--threads", value=threads, hint="use 1 or more threads")
    devices = tuple(name.strip() for name in device.split(",")) if device is not None else ()
    if device is not None and not all(devices):
        raise BadOption(option="--device", value=repr(device), hint="name devices such as CUDA0,CPU, comma-separated")
    if preload is not None and not cache:
        raise BadOption(option="--preload", value="with --no-cache", hint="--preload fills the cache: keep it on")
    check_port_for_launch(host=host, port=port, dry_run=dry_run)
    binary = _find_worker_binary(llama_cpp, chose_devices=bool(devices))
    _check_devices(binary, devices)
    launch = WorkerLaunch(
        binary=str(binary.path),
        host=host,
        port=port,
        threads=threads or _physical_cores(),
        devices=devices,
        cache=cache,
    )
    argv = worker_argv(launch)
    heads = [host] if host not in ("0.0.0.0", "::") else lan_addresses() or ["<this machine's address>"]
    rpc_words = [f"--rpc {address}:{port}" for address in heads]
    if json_output:
        print_json(
            {
                "command": argv,
                "head_rpc": [f"{address}:{port}" for address in heads],
                "cache_folder": str(cache_folder()) if cache else None,
                "dry_run": dry_run,
            }
        )
    else:
        print_command(argv, to_stderr=not dry_run)
        where = "on this machine" if is_loopback(host) else "on the head"
        err_console.print(styled(f"RPC worker {where}: ", ("nemolaunch serve " + " or ".join(rpc_words), "bold")))
    if not is_loopback(host):
        warn(
            f"listening on {host}: llama.cpp's RPC has no authentication and no encryption, so anyone who can reach "
            f"port {port} can run code on this machine's devices and read what it computes. Use it only on a "
            "trusted network."
        )
    env = dict(os.environ)
    if cache:
        folder = cache_folder(env)
        # Named explicitly, so the folder shown is the folder rpc-server uses.
        env.update(llama_cache_env(folder))
        if preload is not None:
            from nemolaunch.cli.rpc_preload import preload as seed

            seed(preload, folder=folder, dry_run=dry_run)
        if not json_output:
            _show_cache(folder)
    if dry_run:
        return
    exec_launch(argv, env, kind="rpc-worker", host=host, port=port)


def _find_worker_binary(llama_cpp: Path | None, *, chose_devices: bool) -> Found:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.cli.llama_binary import warn_if_gpus_go_unused
    from nemolaunch.errors import LlamaCppDirInvalid, LlamaCppNotFound

    first: LlamaCppNotFound | LlamaCppDirInvalid | None = None
    for name in WORKER_BINARIES:
        try:
            found = find_binary(name, explicit_dir=llama_cpp)
            break
        except (LlamaCppNotFound, LlamaCppDirInvalid) as exc:
            first = first or exc
    else:
        assert first is not None
        raise first
    server = _sibling_server(found)
    if server is not None and not chose_devices:
        # rpc-server cannot list its devices; the llama-server built beside it can. Devices named with
        # --device are a choice, the CPU alone included: then there is nothing to warn about.
        warn_if_gpus_go_unused(server)
    return found


def _sibling_server(found: Found) -> Found | None:
    from nemolaunch.adapters.llamacpp import Found

    server = found.path.parent / "llama-server"
    return Found(server, found.origin, found.backend) if server.is_file() else None


def _check_devices(found: Found, devices: tuple[str, ...]) -> None:
    """Names rpc-server would refuse only after loading its backends; the build's llama-server lists them."""
    if not devices:
        return
    from nemolaunch.adapters.llamacpp import list_devices
    from nemolaunch.errors import BadOption

    server = _sibling_server(found)
    listed = list_devices(server.path) if server is not None else None
    if listed is None:
        return  # nothing to check against: rpc-server itself will say
    known = (*listed, "CPU")
    for name in devices:
        if name not in known:
            raise BadOption(option="--device", value=name, hint=f"this llama.cpp has {', '.join(known)}")


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _show_cache(folder: Path) -> None:
    from nemolaunch.adapters.rpc_cache import read_contents
    from nemolaunch.core.download_plan import human_bytes

    contents = read_contents(folder)
    held = f"{contents.tensors} tensors, {human_bytes(contents.total_bytes)}" if contents.tensors else "empty"
    err_console.print(
        f"tensor cache: {folder} ({held}; llama.cpp never prunes it; --no-cache to refuse it)", markup=False
    )
