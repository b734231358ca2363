"""`nemolaunch build`: compile llama.cpp for this machine through scripts/build_llamacpp.sh."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path
from typing import Annotated

import typer

from nemolaunch.cli.output import err_console, print_json, real_console
from nemolaunch.errors import BadOption, BuildFailed, BuildToolMissing, Interrupted

#: An offline default for --source (a llama.cpp tree or archive), for CI and air-gapped machines.
SOURCE_ENV = "NEMOLAUNCH_LLAMA_CPP_SOURCE"
BACKENDS = ("auto", "cuda", "metal", "cpu")
#: What CMAKE_CUDA_ARCHITECTURES takes: "90", "86;89", "90a-real", "all-major".
_CUDA_ARCH_LIST = re.compile(r"[0-9A-Za-z_-]+(;[0-9A-Za-z_-]+)*")


def build_command(
    source: Annotated[
        Path | None,
        typer.Option(
            "--source",
            help=f"A llama.cpp tree or an archive holding one [env: {SOURCE_ENV}; default: git clone].",
        ),
    ] = None,
    ref: Annotated[str | None, typer.Option("--ref", help="Git ref to clone (default: the tested pin).")] = None,
    backend: Annotated[
        str, typer.Option("--backend", help="auto (this machine's GPU, else CPU), cuda, metal or cpu.")
    ] = "auto",
    prefix: Annotated[
        Path | None, typer.Option("--prefix", help="Where bin/ lands [default: one folder per build key].")
    ] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", help="Parallel compile jobs.")] = None,
    cuda_arch: Annotated[
        str | None,
        typer.Option(
            "--cuda-arch",
            help="CUDA compute capabilities to build for, e.g. 90 (H100/H200), 100 (B200), 86,89 "
            "[default: the GPUs visible here]; needed where no GPU is visible, such as a container build.",
        ),
    ] = None,
    web_ui: Annotated[
        str,
        typer.Option(
            "--web-ui",
            help="llama-server's web chat: npm (build it, ~2.5 min), prebuilt (fetch it from the Hub), off, "
            "or auto (npm if present, else prebuilt if the Hub answers).",
        ),
    ] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build llama-server, llama-cli, llama-gguf-split and rpc-server from llama.cpp's source."""
    result = run_build_with_progress(
        source=source, ref=ref, backend=backend, prefix=prefix, jobs=jobs, cuda_arch=cuda_arch, quiet=json_output,
        web_ui=web_ui,
    )  # fmt: skip
    if json_output:
        print_json(
            {
                "bin_dir": str(result.bin_dir),
                "log": str(result.log),
                "up_to_date": result.up_to_date,
                "web_ui": result.web_ui,
            }
        )


def build_default() -> Path:
    """Build with every default (used by `serve --build`); returns the bin folder."""
    return run_build_with_progress(source=None, ref=None, backend="auto", prefix=None, jobs=None).bin_dir


def run_build_with_progress(
    *,
    source: Path | None,
    ref: str | None,
    backend: str,
    prefix: Path | None,
    jobs: int | None,
    cuda_arch: str | None = None,
    quiet: bool = False,
    web_ui: str = "auto",
):  # -> BuildResult
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from nemolaunch.adapters.builder import WEB_UI_MODES, BuildRequest, build_prefix, log_tail, run_build, web_ui_mode
    from nemolaunch.adapters.llamacpp import builds_root, machine_backends

    if backend not in BACKENDS:
        raise BadOption(option="--backend", value=backend, hint=f"use one of {', '.join(BACKENDS)}")
    if web_ui not in WEB_UI_MODES:
        raise BadOption(option="--web-ui", value=web_ui, hint=f"use one of {', '.join(WEB_UI_MODES)}")
    if jobs is not None and jobs < 1:
        raise BadOption(option="--jobs", value=jobs, hint="use 1 or more")
    if backend == "metal" and platform.system() != "Darwin":
        raise BadOption(option="--backend", value=backend, hint="Metal builds need macOS; use cpu or cuda here")
    if source is not None and ref is not None:
        raise BadOption(option="--ref", value=ref, hint="it picks a git commit to clone; with --source, leave it out")
    if source is None and os.environ.get(SOURCE_ENV):
        source = Path(os.environ[SOURCE_ENV])
    if source is not None:
        source = source.expanduser()
        if not source.exists():
            raise BadOption(
                option="--source", value=str(source), hint="it does not exist; pass a llama.cpp tree or archive"
            )
    if cuda_arch is not None:
        cuda_arch = cuda_arch.replace(",", ";")
        if not _CUDA_ARCH_LIST.fullmatch(cuda_arch):
            raise BadOption(option="--cuda-arch", value=cuda_arch, hint="use compute capabilities such as 90 or 86,89")
        if backend == "auto":
            backend = "cuda"  # naming a GPU target is asking for a CUDA build, GPU visible here or not
    chosen_for_gpu = False
    if backend == "auto":
        # nemolaunch knows the machine: build for the GPU it can use, not merely for an nvcc on PATH.
        backend = machine_backends()[0]
        chosen_for_gpu = backend != "cpu"
    if cuda_arch is not None and backend != "cuda":
        raise BadOption(option="--cuda-arch", value=cuda_arch, hint=f"it is for CUDA builds, not {backend} ones")
    web_ui = web_ui_mode(web_ui)
    if prefix is None:
        prefix = build_prefix(
            builds_root(), backend=backend, source=source, ref=ref, cuda_arch=cuda_arch, web_ui=web_ui
        )
    request = BuildRequest(
        backend=backend, source=source, ref=ref, jobs=jobs, prefix=prefix.expanduser(), cuda_arch=cuda_arch,
        web_ui=web_ui,
    )  # fmt: skip
    if not quiet:
        err_console.print(f"Building llama.cpp ({backend}) into {request.prefix}")
    progress = Progress(
        TextColumn("llama.cpp", style="bold"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[step]}", markup=False),  # compiler lines may hold "["
        console=real_console(err_console),
        transient=True,
        disable=quiet,
    )
    with progress:
        task = progress.add_task("build", total=100, step="")

        log_named = False

        def on_progress(percent: int, line: str) -> None:
            nonlocal log_named
            if not log_named and not quiet:
                # Named once compiling starts: a build refused before that leaves no folder, and no log.
                progress.console.print(f"Full log: {request.prefix / 'build.log'}")
                log_named = True
            step = line.split("]", 1)[-1].strip()
            progress.update(task, completed=percent, step=step[-60:])

        try:
            result = run_build(request, on_progress=on_progress)
        except BuildFailed as exc:
            progress.stop()
            for line in log_tail(Path(str(exc.log))):
                err_console.print(line, markup=False)
            raise
        except KeyboardInterrupt:
            progress.stop()
            # The script's whole process group is gone by now (builder._stop_group): say so, in one line.
            raise Interrupted(
                what="building llama.cpp",
                after="no compiler is left running and nothing was installed; run the same command to build",
            ) from None
        except BuildToolMissing as exc:
            if not chosen_for_gpu:
                raise
            # The person asked for no backend: say why it is this one, and how to do without the toolkit.
            raise BuildToolMissing(
                reason=f"{exc.reason} (the GPU here made `--backend auto` choose {backend}; "
                "`--backend cpu` builds without it)"
            ) from None
    if not quiet:
        state = "already up to date" if result.up_to_date else "built"
        err_console.print(f"llama.cpp {state}: {result.bin_dir}")
        # Said once, here: a build without the web chat is complete, but a person opening the URL should know.
        err_console.print(f"web UI: {result.web_ui or 'unknown'}" + _NO_UI_HINT * _lacks_web_ui(result.web_ui))
    return result


_NO_UI_HINT = " (chat in the terminal with `nemolaunch chat`)"


def _lacks_web_ui(web_ui: str | None) -> bool:
    return web_ui is not None and web_ui.startswith("none")
