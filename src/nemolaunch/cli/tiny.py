"""`nemolaunch tiny-model`: write the embedded tiny Nemotron-architecture GGUF (for demos and smoke tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nemolaunch.cli.output import err_console


def tiny_model_command(
    path: Annotated[Path, typer.Argument(help="Where to write the .gguf file.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed for the weights.")] = 0,
) -> None:
    """Write a tiny random-weight nemotron_h_moe GGUF (Mamba2, attention and latent-MoE layers)."""
    from nemolaunch.errors import BadOption
    from nemolaunch.tiny_model import write_tiny_model

    if seed < 0:
        raise BadOption(option="--seed", value=seed, hint="use 0 or a larger whole number")
    if path.is_dir():
        raise BadOption(option="PATH", value=str(path), hint="it is a folder; give a file name ending in .gguf")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        # The file is replaced by a rename: a link, a pipe or a device there would be replaced, not written to.
        raise BadOption(
            option="PATH", value=str(path), hint="it exists and is not a regular file; give a new file name"
        )
    if not path.parent.exists():
        raise BadOption(option="PATH", value=str(path), hint=f"its folder {path.parent} does not exist")
    written = write_tiny_model(path, seed=seed)
    err_console.print(f"wrote {written} ({written.stat().st_size} bytes)")
