"""What `serve` and `run` share: their common options, MODEL told apart from llama.cpp's own arguments
(and those checked against what nemolaunch sets itself), the model request, and the exec that hands the
terminal to llama.cpp.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.api_key import API_KEY_ENV
from nemolaunch.cli.context_options import read_context
from nemolaunch.cli.launch_model import ModelRequest
from nemolaunch.cli.output import console, warn
from nemolaunch.cli.plan import check_preference
from nemolaunch.core.launch import DEFAULT_PARALLEL
from nemolaunch.errors import BadOption, LaunchFailed

if TYPE_CHECKING:
    from nemolaunch.core.launch_record import LaunchKind
    from nemolaunch.core.settings import ResolvedSettings

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="A local .gguf file (any shard of a split model), or REPO[:QUANT] on the Hub "
        "[default: the Nemotron 3 Ultra, planned for this machine].",
    ),
]
NoDownloadOption = Annotated[
    bool, typer.Option("--no-download", help="Refuse, rather than download, a planned quant that is not local.")
]
TempOption = Annotated[float | None, typer.Option("--temp", help="Sampling temperature [default: NVIDIA's 1.0].")]
TopPOption = Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling [default: NVIDIA's 0.95].")]
MinPOption = Annotated[float | None, typer.Option("--min-p", help="Min-p sampling [default: 0.01, as llama-cli's].")]
LlamaCppOption = Annotated[
    Path | None,
    typer.Option("--llama-cpp", help="Folder holding llama.cpp's binaries [env: NEMOLAUNCH_LLAMA_CPP]."),
]
BuildOption = Annotated[
    bool, typer.Option("--build", help="Build llama.cpp first if no build is found (see `nemolaunch build`).")
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the command and exit.")]
JsonOption = Annotated[bool, typer.Option("--json", help="With --dry-run: print the launch as JSON.")]

#: Options nemolaunch sets itself; after `--` they would silently override what it checked and announced.
MANAGED_SERVER_OPTIONS = {
    "-m": "--model", "--model": "--model", "-c": "--ctx-size", "--ctx-size": "--ctx-size", "--port": "--port",
    "--host": "--host", "-a": "--alias", "--alias": "--alias", "--temp": "--temp", "--top-p": "--top-p",
    "--min-p": "--min-p", "--api-key-file": "--api-key-file", "-np": "--parallel", "--parallel": "--parallel",
    # Options that swap in another model would bypass every check made on this one.
    "-hf": "--model REPO:QUANT", "-hfr": "--model REPO:QUANT", "--hf-repo": "--model REPO:QUANT",
    "-hff": "--model REPO:QUANT", "--hf-file": "--model REPO:QUANT", "-mu": "--model", "--model-url": "--model",
    # Workers are checked before launch and counted in the plan: unchecked ones would bypass both.
    "--rpc": "--rpc",
    "--slot-save-path": "--sessions",
    "--log-file": "--log-file",
    # The KV cache's precision is in the memory forecast.
    "-ctk": "--cache-type", "--cache-type-k": "--cache-type", "-ctv": "--cache-type", "--cache-type-v": "--cache-type",
}  # fmt: skip


def model_request(
    settings: ResolvedSettings, *, force: bool, hardware: Path | None, no_download: bool, dry_run: bool,
    min_speed: float | None,
) -> ModelRequest:  # fmt: skip
    s = settings.values
    return ModelRequest(
        model=s.model, quant=s.quant, force=force, hardware=hardware, context=read_context(s.ctx_size, s.cache_type),
        no_download=no_download, dry_run=dry_run, parallel=s.parallel or DEFAULT_PARALLEL,
        prefer=check_preference(s.prefer, min_speed), min_speed=min_speed, allow_disk=s.allow_disk,
        hub_deadline_s=s.hub_deadline,
    )  # fmt: skip


#: What a disk-backed launch cannot take after `--`: each keeps the whole model in the process's memory
#: (locked, read in whole, or repacked), which is what a model larger than memory cannot have. Older
#: builds spell it --mlock / --no-mmap; this one --load-mode (-lm) MODE.
DISK_BACKED_REFUSED = {"--mlock": None, "--no-mmap": None, "--repack": None, "-lm": "mmap", "--load-mode": "mmap"}
DISK_BACKED_LOAD_MODES = ("auto", "mmap")


def check_disk_backed_passthrough(passthrough: tuple[str, ...]) -> None:
    """A launch with experts paged from disk keeps the weights as pages of the mapped file."""
    for index, word in enumerate(passthrough):
        option, _, value = word.partition("=")
        if option not in DISK_BACKED_REFUSED:
            continue
        if DISK_BACKED_REFUSED[option] is not None:
            mode = value or (passthrough[index + 1] if index + 1 < len(passthrough) else "")
            if mode in DISK_BACKED_LOAD_MODES:
                continue
            option = f"{option} {mode}".strip()
        raise BadOption(
            option=option,
            value="after -- with experts paged from disk",
            hint="a model larger than memory runs only mapped from its file: leave it out (or drop --allow-disk)",
        )


def check_json(*, json_output: bool, dry_run: bool) -> None:
    if json_output and not dry_run:
        # llama.cpp writes to the same stdout after exec: the JSON would not stay one object.
        raise BadOption(option="--json", value="without --dry-run", hint="add --dry-run to print the launch as JSON")


def check_passthrough(passthrough: tuple[str, ...], managed: dict[str, str]) -> None:
    for word in passthrough:
        option = word.split("=", 1)[0]
        if option == "--api-key":
            # On the command line a key is visible to every user of the machine (`ps`).
            raise BadOption(
                option="--api-key", value="(hidden)", hint=f"use --api-key-file FILE or {API_KEY_ENV}, not argv"
            )
        if option in managed:
            raise BadOption(
                option=option,
                value="after --",
                hint=f"use nemolaunch's own {managed[option]} (it checks the value and shows the URL)",
            )


def model_and_passthrough(
    model: str | None, extra: list[str], argv: list[str] | None = None
) -> tuple[str | None, tuple[str, ...]]:
    """Split what Typer left over into a leading MODEL and the arguments after ``--``.

    Typer hands both over as one list, so the words after ``--`` on the command
    line tell them apart: only those go to llama.cpp untouched.
    """
    argv = sys.argv if argv is None else argv
    after = argv[argv.index("--") + 1 :] if "--" in argv else []
    leading = extra[: len(extra) - len(after)] if after else list(extra)
    passthrough = tuple(extra[len(leading) :])
    if not leading:
        return model, passthrough
    unknown = next((word for word in leading if word.startswith("-")), None)
    if unknown is not None:
        raise BadOption(
            option="option",
            value=unknown,
            hint="nemolaunch has no such option (see --help); llama.cpp's own options go after --",
        )
    if model is not None or len(leading) > 1:
        unexpected = leading[0] if model is not None else leading[1]
        raise BadOption(
            option="argument",
            value=unexpected,
            hint="name one model (MODEL or --model); put llama.cpp's own options after --",
        )
    return leading[0], passthrough


def check_port_for_launch(*, host: str, port: int, dry_run: bool) -> None:
    from nemolaunch.adapters.ports import check_port
    from nemolaunch.errors import PortInUse

    try:
        check_port(host=host, port=port)
    except PortInUse as exc:
        if not dry_run:
            raise
        warn(str(exc))  # a dry run only shows the command; it may be meant for later


def exec_launch(argv: list[str], env: dict[str, str], *, kind: LaunchKind, **record: object) -> None:
    """Leave a launch record (what `nemolaunch ps` finds the process by), then become ``argv``.

    ``record`` holds the record's other fields (port, alias, model, ...). The exec keeps this process's
    pid and start time, which is how the record names the server that follows.
    """
    recorded = _record_launch(argv, kind=kind, fields=record)
    sys.stdout.flush()
    sys.stderr.flush()
    console.file.flush()
    inherited = _signals_as_a_shell_gives_them()
    try:
        # execve, not execvpe: the binary is the absolute path that was found and checked, never a PATH lookup.
        os.execve(argv[0], argv, env)
    except OSError as exc:
        for number, handler in inherited.items():
            signal.signal(number, handler)
        if recorded:
            from nemolaunch.adapters.launch_records import remove_record

            remove_record(os.getpid())  # nothing runs under it: it must not be listed
        raise LaunchFailed(binary=argv[0], reason=exc.strerror or str(exc)) from exc


def _signals_as_a_shell_gives_them() -> dict[int, object]:
    """Put SIGINT and SIGPIPE back to their defaults for the exec; return what they were.

    An exec keeps an ignored signal ignored. Python ignores SIGPIPE itself, and a background shell or a
    nohup'd script hands SIGINT down ignored: llama-server then could not be stopped by Ctrl-C (or
    ``kill -INT``) while it loads, before it sets its own handler, and llama-cli writing into a pipe
    whose reader is gone (``| tee`` after Ctrl-C) would get EPIPE forever instead of stopping.
    subprocess restores SIGPIPE for its children for the same reason; an exec has to do it by hand.
    """
    previous: dict[int, object] = {}
    for number in (signal.SIGINT, signal.SIGPIPE):
        previous[number] = signal.signal(number, signal.SIG_DFL)
    return previous


def _record_launch(argv: list[str], *, kind: LaunchKind, fields: dict[str, object]) -> bool:
    from nemolaunch.adapters.launch_records import records_folder, this_process_started, write_record
    from nemolaunch.core.launch_record import LaunchRecord

    values = {key: str(value) if isinstance(value, Path) else value for key, value in fields.items()}
    record = LaunchRecord(kind=kind, pid=os.getpid(), process_started=this_process_started(), argv=argv, **values)
    try:
        write_record(record)
    except OSError as exc:
        # The record is a convenience: a read-only state folder must not keep the server from starting.
        warn(f"could not record this launch in {records_folder()} ({exc.strerror or exc}): `nemolaunch ps` "
             "will not list it")  # fmt: skip
        return False
    return True
