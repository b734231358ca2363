"""GGUF headers that lie: written whole by the ``gguf`` package, then one count, length or key changed in
place through gguf's own reader (its fields are views of the mapped file, opened read-write), so no GGUF
is parsed or laid out by hand here."""

from __future__ import annotations

from pathlib import Path

TOKENS = "tokenizer.ggml.tokens"
#: The count the issue's 133-byte file claims: 2^40 one-byte items.
HUGE = 2**40


def _write(path: Path, fill) -> Path:  # type: ignore[no-untyped-def]
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch="llama")
    # GGUFWriter adds general.architecture; the hostile files are about the keys after it.
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _patch(path: Path, key: str, part: int, value: object) -> Path:
    from gguf import GGUFReader

    reader = GGUFReader(path, "r+")
    reader.fields[key].parts[part][...] = value
    reader.data.flush()
    del reader
    return path


def huge_array(path: Path, *, count: int = HUGE) -> Path:
    """A header whose token list claims ``count`` uint8 items (it holds one)."""
    from gguf import GGUFValueType

    _write(path, lambda w: w.add_key_value(TOKENS, [0], GGUFValueType.ARRAY, sub_type=GGUFValueType.UINT8))
    return _patch(path, TOKENS, 4, count)  # parts: key length, key, type, item type, item count, items


def long_string(path: Path, *, length: int = HUGE) -> Path:
    """A header whose general.name claims to be ``length`` bytes long (it is four)."""
    _write(path, lambda w: w.add_string("general.name", "tiny"))
    return _patch(path, "general.name", 3, length)  # parts: key length, key, type, string length, string


def duplicate_key(path: Path) -> Path:
    """A header that gives general.name twice (the second written as general.nbme, then renamed)."""

    def fill(writer) -> None:  # type: ignore[no-untyped-def]
        writer.add_string("general.name", "first")
        writer.add_string("general.nbme", "second")

    _write(path, fill)
    return _patch(path, "general.nbme", 1, list(b"general.name"))
