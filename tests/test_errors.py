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
