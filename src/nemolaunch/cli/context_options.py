"""`--ctx-size N|max` and `--cache-type`: how much context, and in what precision its KV cache is kept.

Read once here for plan, download, serve and run, so each value is checked in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from nemolaunch.core.launch import DEFAULT_CTX_SIZE

CtxOption = Annotated[
    str | None,
    typer.Option(
        "--ctx-size",
        "-c",
        help=f"Context size in tokens, or max: the longest that fits beside the model "
        f"[default: {DEFAULT_CTX_SIZE}, or the model's maximum if smaller].",
    ),
]
CacheTypeOption = Annotated[
    str | None,
    typer.Option(
        "--cache-type",
        help="KV cache precision for keys and values, e.g. q8_0 (about half of f16: longer contexts fit) "
        "[default: f16].",
    ),
]


@dataclass(frozen=True)
class ContextRequest:
    ctx_size: int | None = None  # None: the default (or the longest that fits, with ``longest``)
    longest: bool = False  # --ctx-size max
    cache_type: str = "f16"


def read_context(ctx_size: str | None, cache_type: str | None = "f16") -> ContextRequest:
    """The context options as a launch uses them. The values were checked by the settings model
    (nemolaunch.core.settings), which every command reads them through: here they are only read."""
    if ctx_size is None:
        return ContextRequest(cache_type=cache_type or "f16")
    if ctx_size.strip().lower() == "max":
        return ContextRequest(longest=True, cache_type=cache_type or "f16")
    return ContextRequest(ctx_size=int(ctx_size), cache_type=cache_type or "f16")
