"""Run ``download_quant`` (or ``fetch_listing``) in a subprocess, as the CLI will, for tests.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import, so each download under test
runs in a fresh process whose environment names the fake hub. Usage::

    python tests/download_driver.py download '{"repo_id": ..., "files": [[path, size, sha256]], ...}'
    python tests/download_driver.py list '{"repo_id": ..., "revision": "main"}'

Every event is printed as one JSON line as it happens (flushed, so a test can act on progress),
then one ``{"result": ...}`` line, or ``{"error": ...}`` with the exit code nemolaunch would use.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from nemolaunch.errors import NemolaunchError, describe


def _say(payload: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def _event(event: object) -> None:
    _say({"event": type(event).__name__, **dataclasses.asdict(event)})  # type: ignore[call-overload]


def main(argv: list[str]) -> int:
    from nemolaunch.hub.download import download_quant
    from nemolaunch.hub.listing import fetch_listing

    command, args = argv[0], json.loads(argv[1])
    try:
        if command == "list":
            listing = fetch_listing(**args)
            _say({"result": dataclasses.asdict(listing)})
            return 0
        for key in ("cache_dir", "local_dir"):
            if args.get(key):
                args[key] = Path(args[key])
        result = download_quant(**args, progress=_event)
    except NemolaunchError as exc:
        code, message = describe(exc)
        _say({"error": type(exc).__name__, "message": message, "exit_code": code})
        return code
    _say(
        {
            "result": {
                "commit": result.commit,
                "files": {path: str(local) for path, local in result.files.items()},
                "fetched_bytes": result.fetched_bytes,
                "offline": result.offline,
            }
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
