"""Every error class has one line and an exit code in the one table."""

from __future__ import annotations

import inspect

import pytest

from nemolaunch import errors
from nemolaunch.errors import ERROR_TABLE, NemolaunchError, PortInUse, ShardsMissing, describe


def _error_classes() -> list[type[NemolaunchError]]:
    return [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, NemolaunchError) and obj is not NemolaunchError
    ]


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_is_in_the_table_with_a_nonzero_exit(cls: type[NemolaunchError]) -> None:
    assert cls in ERROR_TABLE
    assert ERROR_TABLE[cls].exit_code not in (0, 1)


def test_describe_formats_data_and_lists() -> None:
    code, line = describe(ShardsMissing(path="/m/a-00001-of-00006.gguf", missing=["a-00003-of-00006.gguf"], total=6))
    assert code == errors.EXIT_INTEGRITY
    assert "a-00003-of-00006.gguf is missing" in line and "6-file" in line
    assert "\n" not in line
    exc = PortInUse(host="127.0.0.1", port=8001)
    assert exc.port == 8001
    assert str(exc) == describe(exc)[1]


def test_every_construction_supplies_the_fields_its_message_needs() -> None:
    """Read the source: each `SomeError(...)` passes every field its template names (else describe() would fail)."""
    import ast
    import string
    from pathlib import Path

    import nemolaunch

    classes = {cls.__name__: cls for cls in _error_classes()}
    checked = 0
    for path in Path(nemolaunch.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in classes):
                continue
            if any(keyword.arg is None for keyword in node.keywords):
                continue  # **data: cannot be checked statically
            given = {keyword.arg for keyword in node.keywords}
            template = ERROR_TABLE[classes[node.func.id]].template
            needed = {name.removesuffix("_list") for _, name, _, _ in string.Formatter().parse(template) if name}
            assert needed <= given, f"{path.name}:{node.lineno} {node.func.id} lacks {sorted(needed - given)}"
            checked += 1
    assert checked > 50  # the walk really found the raises
