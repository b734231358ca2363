"""Saving a conversation's place in a running llama-server, and finding it again after a restart.

llama-server can save a slot's state to its ``--slot-save-path`` and restore it. For a hybrid model
that is not enough by itself: the Mamba layers' state cannot be rewound, and the state after a reply
ends a few tokens past where the next prompt, re-rendered by the chat template, parts from it — so a
restored reply-end state is reused for nothing (measured: 0 of 1,299 tokens). What is saved here is
instead the state at the exact point every next prompt shares: the conversation so far, rendered by
the server's own template up to the opening of the next user turn. That point is found without
knowing the template: render the conversation twice, followed by two different user messages, and
keep what the two renderings share. The slot is filled to exactly there (a completion of 0 tokens),
then saved; after a restart, restoring it lets the next turn reuse all of it.

The messages themselves are kept beside nemolaunch's data (``sessions/NAME.json``), so a client can
pick the conversation up where it left it.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from nemolaunch.adapters.same_origin import RedirectLeavesOrigin, same_origin_opener
from nemolaunch.errors import (
    BadOption,
    KeyWouldLeaveOrigin,
    ServerUnreachable,
    SessionFailed,
    SessionNotFound,
    SessionsNotEnabled,
)

#: A session's name is a plain file name: llama-server joins it to its --slot-save-path.
SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_session_name(name: str) -> str:
    if not SESSION_NAME.fullmatch(name) or ".." in name:
        raise BadOption(
            option="session name",
            value=repr(name),
            hint="use letters, digits, '.', '_' and '-' (up to 64, starting with a letter or digit)",
        )
    return name


def sessions_folder() -> Path:
    from platformdirs import user_data_path

    return user_data_path("nemolaunch") / "sessions"


#: A redirect never takes the key to another origin (urllib's default handler would copy it).
_OPENER = same_origin_opener()


def _server_root(base_url: str) -> str:
    # The OpenAI base URL ends in /v1; llama-server's own endpoints live beside it.
    return base_url.rstrip("/").removesuffix("/v1")


def _post(base_url: str, path: str, body: dict[str, Any], api_key: str | None, *, timeout: float = 600) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(
        _server_root(base_url) + path, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        try:
            message = json.loads(detail)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = detail.strip() or exc.reason
        if exc.code == 501 and "slot" in str(message).lower():
            # llama-server without --slot-save-path: "This server does not support slots action."
            raise SessionsNotEnabled(url=base_url) from exc
        raise SessionFailed(url=base_url, status=exc.code, reason=str(message)[:200]) from exc
    except RedirectLeavesOrigin as exc:
        raise KeyWouldLeaveOrigin(url=base_url, target=exc.target) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerUnreachable(url=base_url, reason=str(reason)) from exc


def shared_prefix(base_url: str, messages: list[dict[str, Any]], api_key: str | None) -> str:
    """The rendering of ``messages`` that every next user turn begins with."""
    renderings = [
        _post(base_url, "/apply-template", {"messages": [*messages, {"role": "user", "content": probe}]}, api_key)[
            "prompt"
        ]
        for probe in ("\x01first", "\x02second")
    ]
    first, second = renderings
    length = 0
    while length < min(len(first), len(second)) and first[length] == second[length]:
        length += 1
    return first[:length]


def save_session(
    base_url: str, name: str, messages: list[dict[str, Any]], *, slot: int = 0, api_key: str | None = None
) -> dict[str, Any]:
    """Fill ``slot`` to where the next turn will begin, save it as ``name``, and keep the messages."""
    check_session_name(name)
    prefix = shared_prefix(base_url, messages, api_key)
    _post(base_url, "/completion", {"prompt": prefix, "n_predict": 0, "id_slot": slot, "cache_prompt": True}, api_key)
    saved = _post(base_url, f"/slots/{slot}?action=save", {"filename": name}, api_key)
    folder = sessions_folder()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / f"{name}.json"
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # Written whole, then renamed: a crash never leaves half a conversation under the name.
    temporary.write_text(json.dumps({"messages": messages}, ensure_ascii=False, indent=1))
    os.replace(temporary, target)
    return {"name": name, "slot": slot, "tokens": saved.get("n_saved"), "bytes": saved.get("n_written")}


def load_session(base_url: str, name: str, *, slot: int = 0, api_key: str | None = None) -> dict[str, Any]:
    """Restore ``name`` into ``slot`` and return the conversation saved with it."""
    check_session_name(name)
    kept = sessions_folder() / f"{name}.json"
    if not kept.is_file():
        raise SessionNotFound(name=name, folder=str(sessions_folder()))
    messages = json.loads(kept.read_text())["messages"]
    restored = _post(base_url, f"/slots/{slot}?action=restore", {"filename": name}, api_key)
    return {"name": name, "slot": slot, "tokens": restored.get("n_restored"), "messages": messages}


def list_sessions() -> list[str]:
    folder = sessions_folder()
    return sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []
