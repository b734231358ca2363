"""A cluster's load over real, shaped links: cold, from the worker cache, after --preload; against the plan.

A head and two workers, each in a network namespace of its own, each worker's link limited with
``tc tbf`` (tests/shaped_network.py; needs root). The model is the ~2 GB Ultra-shaped one from
``nemolaunch.scaled_model``. For each link speed:

- cold: workers with empty caches (``nemolaunch rpc-worker``: the cache is on by default);
- cache warm: the head restarted against the same workers, whose caches the cold load filled;
- after --preload: fresh workers started with ``--preload MODEL``, seeded from their own copy.

Load is the time from ``nemolaunch serve --rpc ...`` starting to llama-server listening, and the
bytes each link carried meanwhile; generation is llama-server's own ``timings`` of one completion.
The forecast is the plan's (``nemolaunch plan MODEL --rpc ... --json`` in the head's namespace):
each worker's share of the weights at the link's speed, and the cached load. Ratios are taken
within the same run. The machine may be shared: say so beside the numbers.

    sudo .venv/bin/python benchmarks/rpc_link.py [--gbit 1,10] [--runs 1] [--tokens 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from bench_servers import free_port, nemolaunch, publish

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from shaped_network import ShapedNetwork, shaped_network, why_not_here

THREADS = "1"  # per process: the head and two workers share this machine's cores


def start_workers(
    network: ShapedNetwork, llama_cpp: Path, caches: list[Path], *extra: str
) -> tuple[list[subprocess.Popen[bytes]], list[str], float]:
    """One `nemolaunch rpc-worker` per link, each with its own cache; the time until all listen."""
    started, endpoints = [], []
    began = time.monotonic()
    for number, cache in enumerate(caches):
        cache.mkdir(parents=True, exist_ok=True)
        address, port = network.links[number].worker_address, free_port()
        argv = nemolaunch("rpc-worker", "--host", address, "--port", str(port), "--llama-cpp", str(llama_cpp),
                          "--threads", THREADS, *extra)  # fmt: skip
        with (cache / "worker.log").open("wb") as log:
            started.append(subprocess.Popen(network.in_worker(number, argv), env=_env(LLAMA_CACHE=str(cache)),
                                            stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        endpoints.append(f"{address}:{port}")
    for process, endpoint in zip(started, endpoints, strict=True):
        host, port = endpoint.split(":")
        probe = [sys.executable, "-c", f"import socket; socket.create_connection(('{host}', {port}), 1)"]
        while subprocess.run(network.in_head(probe), capture_output=True, check=False).returncode != 0:
            if process.poll() is not None:
                raise RuntimeError(f"rpc-worker exited with {process.returncode}")
            time.sleep(0.2)
    return started, endpoints, time.monotonic() - began


def load_and_generate(
    network: ShapedNetwork, llama_cpp: Path, model: Path, endpoints: list[str], tokens: int, log: Path
) -> dict[str, object]:
    """`nemolaunch serve --rpc` in the head's namespace: load seconds, bytes per link, generation tok/s."""
    port = free_port()
    before = [network.bytes_sent(number) for number in range(len(endpoints))]
    began = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen(
            network.in_head(nemolaunch("serve", str(model), "--port", str(port), "--llama-cpp", str(llama_cpp),
                                       "--rpc", ",".join(endpoints), "--", "--threads", THREADS)),
            env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        while b"listening on http" not in log.read_bytes():
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with {server.returncode}: see {log}")
            time.sleep(0.05)
        load_s = time.monotonic() - began
        sent = [network.bytes_sent(number) - before[number] for number in range(len(endpoints))]
        timings = _chat_inside(network, port, tokens)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"load_s": load_s, "sent_bytes": sent, "gen_tps": timings["predicted_per_second"],
            **load_phases(log.read_text(errors="replace"), load_s)}  # fmt: skip


#: llama-server's log lines start with the time since it started: minutes.seconds.milliseconds.microseconds.
_STAMPED = re.compile(r"^(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) . (.*)$")


def load_phases(log: str, load_s: float) -> dict[str, float]:
    """Where a load went, from llama-server's own timestamps: nemolaunch's part before the exec (checking
    the workers, planning), llama-server reading the file's header, the weights (every tensor set on the
    workers: the head's hashing, the link, the workers' caches), then contexts, graph reservation and warm-up."""
    stamped = []
    for line in log.splitlines():
        found = _STAMPED.match(line)
        if found:
            minutes, seconds, millis, micros, text = found.groups()
            stamped.append((int(minutes) * 60 + int(seconds) + int(millis) / 1e3 + int(micros) / 1e6, text))
    at = {"start": 0.0}
    for number, (when, text) in enumerate(stamped):
        if "load_model: loading model" in text and "weights_from" not in at:
            at["weights_from"] = when
            # The loader prints nothing while it sets tensors: its next line is the end of the weights.
            at["weights_to"] = stamped[number + 1][0] if number + 1 < len(stamped) else when
        if "listening on http" in text:
            at["listening"] = when
            break
    if not {"weights_from", "listening"} <= at.keys():
        return {}
    return {
        "before_exec_s": max(load_s - at["listening"], 0.0),
        "header_s": at["weights_from"],
        "weights_s": at["weights_to"] - at["weights_from"],
        "after_weights_s": at["listening"] - at["weights_to"],
    }


def head_hashing_s(model: Path) -> tuple[float, int]:
    """FNV-1a over every tensor over 10 MiB, as the head computes it at each load (one core, same run)."""
    from nemolaunch.adapters.rpc_preload import big_tensors, fnv1a_64

    tensors = big_tensors((model,))
    with model.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        view = memoryview(mapping)
        began = time.perf_counter()
        for tensor in tensors:
            fnv1a_64(view[tensor.offset : tensor.offset + tensor.size])
        took = time.perf_counter() - began
        view.release()
    return took, sum(tensor.size for tensor in tensors)


def _chat_inside(network: ShapedNetwork, port: int, tokens: int) -> dict[str, float]:
    # The server listens in the head's namespace: the request is made from there.
    body = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": tokens,
            "ignore_eos": True}  # fmt: skip
    script = (
        "import json, sys, urllib.request\n"
        f"request = urllib.request.Request('http://127.0.0.1:{port}/v1/chat/completions', "
        f"data=json.dumps({body!r}).encode(), headers={{'Content-Type': 'application/json'}})\n"
        "print(json.dumps(json.load(urllib.request.urlopen(request, timeout=600))['timings']))\n"
    )
    done = subprocess.run(network.in_head([sys.executable, "-c", script]), capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def plan_forecast(network: ShapedNetwork, llama_cpp: Path, model: Path, endpoints: list[str]) -> dict[str, object]:
    done = subprocess.run(
        network.in_head(nemolaunch("plan", str(model), "--rpc", ",".join(endpoints), "--json")),
        env=_env(NEMOLAUNCH_LLAMA_CPP=str(llama_cpp)), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout)


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NEMOLAUNCH_", "LLAMA_"))}
    env["NEMOLAUNCH_CONFIG"] = "/nonexistent/nemolaunch-bench-config.toml"
    return {**env, **extra}


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def fresh_folders(folders: Iterable[Path]) -> list[Path]:
    """Worker caches emptied first: a cold load (and a first seeding) must find nothing a past run left."""
    emptied = []
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
        emptied.append(folder)
    return emptied


def one_speed(gbit: float, llama_cpp: Path, model: Path, work: Path, tokens: int) -> list[dict[str, object]]:
    """Cold, cache warm and after --preload over two links of ``gbit`` Gb/s."""
    from nemolaunch.core.load_forecast import forecast_load

    rows: list[dict[str, object]] = []
    rate = gbit * 1e9 / 8
    with shaped_network(2, rate_bits_per_s=gbit * 1e9) as network:
        tag = f"{gbit:g}gbit"
        caches = fresh_folders(work / f"{tag}-cold-w{number}" for number in (1, 2))
        workers, endpoints, _ = start_workers(network, llama_cpp, caches)
        try:
            plan = plan_forecast(network, llama_cpp, model, endpoints)
            # The plan of live workers assumes 1 Gb/s; at another speed the same forecast, with the link named.
            shares = [(host["host"], host["weights_bytes"], rate, "cluster file") for host in plan["hosts"][1:]]
            load = forecast_load(shares)  # type: ignore[arg-type]
            speed = next(item["speed"] for item in plan["quants"] if item["name"] == plan["quant"])
            forecast = {"cold": load.cold_s, "warm": load.cached_s, "preload": load.cached_s}
            common = {"gbit": gbit, "forecast_gen_tps": speed["generation_tokens_per_s"] if speed else None,
                      "plan_assumed_link": plan["load"]["assumed_link"],
                      "plan_weights": [host["weights_bytes"] for host in plan["hosts"][1:]]}  # fmt: skip
            cold = load_and_generate(network, llama_cpp, model, endpoints, tokens, work / f"{tag}-cold.log")
            rows.append({**common, "case": "cold", "forecast_s": forecast["cold"], **cold})
            warm = load_and_generate(network, llama_cpp, model, endpoints, tokens, work / f"{tag}-warm.log")
            rows.append({**common, "case": "cache warm", "forecast_s": forecast["warm"], **warm})
        finally:
            stop_all(workers)
        caches = fresh_folders(work / f"{tag}-preload-w{number}" for number in (1, 2))
        workers, endpoints, seed_s = start_workers(network, llama_cpp, caches, "--preload", str(model))
        try:
            seeded = load_and_generate(network, llama_cpp, model, endpoints, tokens, work / f"{tag}-preload.log")
            rows.append({**common, "case": "after --preload", "forecast_s": forecast["preload"],
                         "seed_s": seed_s, **seeded})  # fmt: skip
        finally:
            stop_all(workers)
    return rows


def table(rows: list[dict[str, object]], header: str) -> str:
    lines = [
        header,
        "",
        "| link | load | load s | plan's forecast s | measured ÷ forecast | ÷ cold | sent to workers | gen tok/s "
        "(forecast) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    cold = {row["gbit"]: row["load_s"] for row in rows if row["case"] == "cold"}
    for row in rows:
        sent = sum(row["sent_bytes"]) / 1e9  # type: ignore[arg-type]
        forecast_tps = f" ({row['forecast_gen_tps']:.1f})" if row["forecast_gen_tps"] else ""
        seeded = f" (seeding took {row['seed_s']:.1f} s)" if "seed_s" in row else ""
        lines.append(
            f"| {row['gbit']:g} Gb/s | {row['case']}{seeded} | {row['load_s']:.1f} | {row['forecast_s']:.1f} | "
            f"{row['load_s'] / row['forecast_s']:.2f} | {row['load_s'] / cold[row['gbit']]:.2f} | {sent:.2f} GB | "
            f"{row['gen_tps']:.1f}{forecast_tps} |"
        )
    return "\n".join(lines)


def phases_table(rows: list[dict[str, object]], hashing_s: float, hashed: int) -> str:
    """Where each load's seconds went (llama-server's timestamps), beside the hashing every load does."""
    lines = [
        "| link | load | before exec s | header s | weights s | after weights s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if "weights_s" not in row:
            continue
        lines.append(
            f"| {row['gbit']:g} Gb/s | {row['case']} | {row['before_exec_s']:.1f} | {row['header_s']:.1f} | "
            f"{row['weights_s']:.1f} | {row['after_weights_s']:.1f} |"
        )
    lines += [
        "",
        f"The head hashes every tensor over 10 MiB at each load ({hashed / 1e9:.2f} GB here): FNV-1a over them "
        f"took {hashing_s:.1f} s on one core of this machine, part of every 'weights' figure with a cache.",
    ]
    return "\n".join(lines)


def main() -> int:
    from nemolaunch.adapters.llamacpp import find_binary
    from nemolaunch.scaled_model import shape_for_size, write_scaled_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llama-cpp", type=Path, default=None)
    parser.add_argument("--gbit", default="1", help="link speeds, Gb/s, comma-separated (e.g. 1,10)")
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nl18-bench"), help="model and worker caches")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (Markdown)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    reason = why_not_here()
    if reason is not None:
        print(f"rpc_link: cannot shape a network here: {reason}", file=sys.stderr)
        return 2
    llama_cpp = find_binary("llama-server", explicit_dir=args.llama_cpp).path.parent
    args.work.mkdir(parents=True, exist_ok=True)
    shape = shape_for_size(int(args.size_gb * 1e9))
    model = args.work / f"scaled-{shape.n_embd}x{len(shape.layers)}.gguf"
    if not model.is_file():
        write_scaled_model(model, shape)
    rows = []
    for gbit in (float(word) for word in args.gbit.split(",")):
        rows.extend(one_speed(gbit, llama_cpp, model, args.work, args.tokens))
    header = (
        f"machine: {platform.machine()}, {os.cpu_count()} logical cores (shared), python {platform.python_version()}; "
        f"{model.name} ({model.stat().st_size / 1e9:.2f} GB), head + 2 workers, each link shaped by tc tbf, "
        f"{THREADS} thread per process, {args.tokens} tokens generated"
    )
    hashing_s, hashed = head_hashing_s(model)
    publish(table(rows, header) + "\n\n" + phases_table(rows, hashing_s, hashed), args.out)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
