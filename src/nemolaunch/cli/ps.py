"""`nemolaunch ps`: the servers, chats and RPC workers nemolaunch launched that still run.

Each row joins the launch record (kind, pid, address, alias, quant) with what the operating system says
(uptime, resident memory, GPU memory from NVML) and, for a server, what the server says itself (/health,
busy slots, generation speed). Stale records (the process is gone, or its pid is another program's now)
are pruned on the way.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nemolaunch.cli.output import console, note, print_json

if TYPE_CHECKING:
    from nemolaunch.adapters.launch_records import Launch
    from nemolaunch.adapters.server_status import ServerStatus


def ps_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the launches as one JSON object.")] = False,
) -> None:
    """List the servers and workers nemolaunch launched: address, model, memory, health, busy slots, speed."""
    from nemolaunch.adapters.launch_records import live_launches, records_folder

    launches = live_launches()
    rows = launch_rows(launches, now=time.time())
    if json_output:
        print_json({"records": str(records_folder()), "launches": rows})
        return
    if not rows:
        note("nothing nemolaunch launched is running (`nemolaunch serve`, `run` and `rpc-worker` are listed here)")
        return
    _print_table(rows)


def launch_rows(launches: list[Launch], *, now: float) -> list[dict[str, object]]:
    from nemolaunch.adapters.process_memory import gpu_bytes_by_pid, resident_bytes

    gpu = gpu_bytes_by_pid(launch.record.pid for launch in launches)
    with ThreadPoolExecutor(max_workers=max(len(launches), 1)) as pool:
        # Every server is asked at once: one that hangs costs its timeout once, not once per row.
        statuses = list(pool.map(_status, launches))
    rows = []
    for launch, status in zip(launches, statuses, strict=True):
        record = launch.record
        rows.append({
            "kind": record.kind, "pid": record.pid, "address": record.address, "host": record.host,
            "port": record.port, "alias": record.alias, "model": record.model, "quant": record.quant,
            "placement": record.placement, "forecast_bytes": record.forecast_bytes,
            "uptime_s": round(now - record.process_started, 1), "rss_bytes": resident_bytes(record.pid),
            "gpu_bytes": {str(index): used for index, used in sorted(gpu.get(record.pid, {}).items())},
            "state": launch.state, "log_file": record.log_file, "command": record.argv,
            "server": asdict(status) if status is not None else None,
        })  # fmt: skip
    return rows


def _status(launch: Launch) -> ServerStatus | None:
    from nemolaunch.adapters.server_status import ServerStatus, server_status
    from nemolaunch.core.launch import client_base_url

    record = launch.record
    if record.kind != "server" or record.port is None or record.host is None:
        return None
    if launch.state == "starting":
        return ServerStatus(health="starting")
    base = client_base_url(record.host, record.port).removesuffix("/v1")
    return server_status(base, key=_server_key(record.api_key_file))


def _server_key(key_file: str | None) -> str | None:
    """The key /slots and /metrics want: the server's own key file, else NEMOLAUNCH_API_KEY. Never shown."""
    from nemolaunch.cli.api_key import API_KEY_ENV, keys_as_llama_server_reads_them
    from nemolaunch.errors import NemolaunchError

    if key_file is not None:
        try:
            # The first key exactly as the server read it from this file, not a stripped guess at it.
            keys = keys_as_llama_server_reads_them(Path(key_file))
        except NemolaunchError:  # the small-file reader's refusal: ps never fails on a key file
            return None
        # A key with a CR or spaces (serve refuses such a file now) cannot travel in a header at all.
        return keys[0][1] if keys and keys[0][1] == keys[0][1].strip() else None
    return os.environ.get(API_KEY_ENV) or None


def _print_table(rows: list[dict[str, object]]) -> None:
    from rich.table import Table

    from nemolaunch.core.download_plan import human_bytes
    from nemolaunch.core.launch_record import human_duration

    table = Table(box=None, pad_edge=False)
    for column in ("KIND", "PID", "ADDRESS", "ALIAS", "QUANT", "UPTIME", "RSS", "GPU", "HEALTH", "SLOTS", "TOK/S"):
        table.add_column(column, no_wrap=column not in ("ALIAS", "HEALTH"))
    for row in rows:
        server = row["server"]
        assert server is None or isinstance(server, dict)
        gpu = row["gpu_bytes"]
        assert isinstance(gpu, dict)
        busy, total = (server or {}).get("slots_busy"), (server or {}).get("slots_total")
        speed = (server or {}).get("tokens_per_s")
        rss = row["rss_bytes"]
        # A chat (`run`) serves no alias: its model's file name says what it runs.
        alias = row["alias"] or (Path(str(row["model"])).name if row["model"] and row["kind"] == "cli" else "-")
        table.add_row(
            str(row["kind"]), str(row["pid"]), str(row["address"] or "-"), str(alias),
            str(row["quant"] or "-"), human_duration(float(row["uptime_s"])),  # type: ignore[arg-type]
            human_bytes(rss) if isinstance(rss, int) else "-",
            " ".join(f"{index}:{human_bytes(used)}" for index, used in gpu.items()) or "-",
            str(server["health"]) if server else "-",
            f"{busy}/{total}" if total is not None else "-",
            f"{speed:.1f}" if isinstance(speed, float) else "-",
        )  # fmt: skip
    console.print(table)
