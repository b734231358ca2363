"""Model checks on real GGUF files written with the gguf package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nemolaunch.adapters.gguf_files import inspect_model, split_shards
from nemolaunch.errors import ModelFileMissing, NotGGUF, ShardsMissing, TruncatedGGUF


def test_a_whole_file_reads_its_header(gguf_factory: Callable[..., Path]) -> None:
    path = gguf_factory("m.gguf", context_length=4096, **{"general.name": "Tiny"})
    model = inspect_model(path)
    assert model.path == path
    assert model.architecture == "llama"
    assert model.context_length == 4096
    assert model.general_name == "Tiny"
    assert model.size_bytes == path.stat().st_size


def test_missing_not_gguf_and_truncated(tmp_path: Path, gguf_factory: Callable[..., Path]) -> None:
    with pytest.raises(ModelFileMissing):
        inspect_model(tmp_path / "absent.gguf")
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(NotGGUF) as not_gguf:
        inspect_model(text)
    assert "b'hell'" in str(not_gguf.value)
    whole = gguf_factory("whole.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size - 1000])
    with pytest.raises(TruncatedGGUF) as cut:
        inspect_model(truncated)
    assert "ends before" in str(cut.value)


def test_split_set_resolves_to_first_shard_and_names_missing_ones(
    tmp_path: Path, gguf_factory: Callable[..., Path]
) -> None:
    names = [f"m-{index:05d}-of-00006.gguf" for index in range(1, 7)]
    for name in names:
        gguf_factory(name)
    model = inspect_model(tmp_path / names[3])
    assert model.path == tmp_path / names[0]
    assert [shard.name for shard in model.shards] == names
    (tmp_path / names[2]).unlink()
    with pytest.raises(ShardsMissing) as missing:
        inspect_model(tmp_path / names[0])
    assert missing.value.missing == ["m-00003-of-00006.gguf"]
    assert "m-00003-of-00006.gguf is missing" in str(missing.value)


def test_split_shards_names() -> None:
    assert split_shards(Path("a.gguf")) is None
    assert split_shards(Path("/x/Model-UD-Q2_K_XL-00002-of-00003.gguf")) == (
        Path("/x/Model-UD-Q2_K_XL-00001-of-00003.gguf"),
        Path("/x/Model-UD-Q2_K_XL-00002-of-00003.gguf"),
        Path("/x/Model-UD-Q2_K_XL-00003-of-00003.gguf"),
    )
