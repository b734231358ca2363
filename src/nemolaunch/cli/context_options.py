"""`--ctx-size N|max` and `--cache-type`: how much context, and in what precision its KV cache is kept.

Read once here for plan, download, serve and run, so each value is checked in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from nemolaunch.core.launch import CACHE_TYPES, DEFAULT_CTX_SIZE

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
    """The context options, checked: a positive number of tokens or ``max``, and a known cache type."""
    from nemolaunch.errors import BadOption, ContextSizeNotPositive

    cache_type = cache_type or "f16"
    if cache_type not in CACHE_TYPES:
        raise BadOption(option="--cache-type", value=cache_type, hint=f"use one of {', '.join(CACHE_TYPES)}")
    if ctx_size is None:
        return ContextRequest(cache_type=cache_type)
    word = ctx_size.strip().lower()
    if word == "max":
        return ContextRequest(longest=True, cache_type=cache_type)
    try:
        tokens = int(word)
    except ValueError:
        raise BadOption(
            option="--ctx-size", value=ctx_size, hint="give a number of tokens, or max for the longest that fits"
        ) from None
    if tokens <= 0:
        raise ContextSizeNotPositive(ctx_size=tokens)
    return ContextRequest(ctx_size=tokens, cache_type=cache_type)
