"""The names llama.cpp's gguf-split gives the parts of a split model: ``Model-00002-of-00006.gguf``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True)
class SplitName:
    folder: str
    stem: str
    index: int  # 1-based
    count: int

    def name_of(self, index: int) -> str:
        return f"{self.stem}-{index:05d}-of-{self.count:05d}.gguf"


def parse_split_name(path: str) -> SplitName | None:
    """``UD-IQ3_XXS/Model-UD-IQ3_XXS-00002-of-00006.gguf`` -> folder, stem, 2, 6; None if not split."""
    folder, _, name = path.rpartition("/")
    match = _SPLIT_NAME.match(name)
    if match is None:
        return None
    return SplitName(folder=folder, stem=match["stem"], index=int(match["index"]), count=int(match["count"]))
