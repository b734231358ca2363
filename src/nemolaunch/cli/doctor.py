"""`nemolaunch doctor`: what this machine has for running llama.cpp, in one look."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from nemolaunch import __version__
from nemolaunch.cli.output import console, print_json


def doctor_command(
    llama_cpp: Annotated[
        Path | None,
        typer.Option("--llama-cpp", help="Folder holding llama.cpp's binaries [env: NEMOLAUNCH_LLAMA_CPP]."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show nemolaunch's version, the llama.cpp build it would use, build tools, memory and cores."""
    import psutil
    from rich.table import Table

    from nemolaunch.adapters.llamacpp import binary_version, find_binary
    from nemolaunch.errors import NemolaunchError

    report: dict[str, object] = {"nemolaunch": __version__}
    try:
        found = find_binary("llama-server", explicit_dir=llama_cpp)
        version = binary_version(found.path)
        report["llama_cpp"] = {
            "path": str(found.path),
            "origin": found.origin,
            "backend": found.backend,
            "version": version.number,
            "commit": version.commit,
            "built_with": version.built_with,
        }
    except NemolaunchError as exc:
        report["llama_cpp"] = {"error": str(exc)}
    report["tools"] = {tool: shutil.which(tool) for tool in ("cmake", "c++", "nvcc", "git", "ccache")}
    memory = psutil.virtual_memory()
    report["memory"] = {"total_bytes": memory.total, "available_bytes": memory.available}
    report["cpu"] = {"physical_cores": psutil.cpu_count(logical=False), "logical_cores": psutil.cpu_count()}
    if json_output:
        print_json(report)
        return
    table = Table(title=f"nemolaunch {__version__}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("found")
    llama = report["llama_cpp"]
    assert isinstance(llama, dict)
    if "error" in llama:
        table.add_row("llama.cpp", f"[red]{llama['error']}[/]")
    else:
        table.add_row(
            "llama.cpp",
            f"{llama['path']} (from {llama['origin']}; version {llama['version']} ({llama['commit']}); "
            f"backend {llama['backend'] or 'unknown'})",
        )
    tools = report["tools"]
    assert isinstance(tools, dict)
    for tool, where in tools.items():
        table.add_row(tool, where or "[yellow]not found[/]")
    table.add_row("memory", f"{memory.total / 2**30:.1f} GiB total, {memory.available / 2**30:.1f} GiB available")
    table.add_row("cores", f"{report['cpu']['physical_cores']} physical, {report['cpu']['logical_cores']} logical")  # type: ignore[index]
    console.print(table)
