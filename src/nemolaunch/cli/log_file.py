"""Where `serve` keeps llama-server's log: `--log-file PATH`, or a file of its own in `--log-dir` / log_dir.

llama-server writes its log to the file as well as to the terminal (common/log.cpp prints each entry to
both), so a server under tmux or nohup keeps it and the pane still shows it. llama.cpp opens the file
silently or not at all, so whether it can be written is checked here, before the exec.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from nemolaunch.errors import BadOption

if TYPE_CHECKING:
    from nemolaunch.core.settings import ResolvedSettings


def server_log_file(log_file: Path | None, settings: ResolvedSettings, *, port: int, dry_run: bool) -> Path | None:
    if log_file is not None:
        return _checked_file(log_file.expanduser().absolute(), option="--log-file", dry_run=dry_run)
    folder_setting = settings.values.log_dir
    if folder_setting is None:
        return None
    option = settings.where("log_dir")
    folder = Path(folder_setting).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise BadOption(option=option, value=str(folder), hint="it is a file; name a folder")
    # One file per launch: a restart must not overwrite the log of the server that went before it.
    path = folder / f"server-{port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if not dry_run:
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)  # a log may quote prompts
        except OSError as exc:
            raise BadOption(option=option, value=str(folder), hint=f"it cannot be made ({exc.strerror})") from exc
    return _checked_file(path, option=option, dry_run=dry_run)


def _checked_file(path: Path, *, option: str, dry_run: bool) -> Path:
    if path.is_dir():
        raise BadOption(option=option, value=str(path), hint="it is a folder; name a file (or use --log-dir)")
    if not path.parent.is_dir():
        raise BadOption(option=option, value=str(path), hint=f"the folder {path.parent} does not exist")
    if not dry_run:
        try:
            with path.open("a"):
                pass  # made (or kept) now; llama-server truncates and writes it
        except OSError as exc:
            raise BadOption(option=option, value=str(path), hint=f"it cannot be written ({exc.strerror})") from exc
    return path
