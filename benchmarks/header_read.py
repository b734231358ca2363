"""What a model's vocabulary costs the first `nemolaunch plan` of it: the GGUF header read and parsed.

Writes two GGUF files that differ only in their tokenizer: a few hundred tokens (the baseline, as in the
tiny and scaled models), and one the size of the Nemotron 3 family's (131,072 tokens, their types, and
260,000 BPE merges: an 8 MB header). Each is planned with `nemolaunch plan FILE --json` (a whole
command, as a person runs it) once with the header cache cold (the file is touched, so its entry no
longer matches) and once warm; medians of ``--runs``, the spread, and ratios against the baseline
measured in the same run. The table is printed with this machine's facts (and written to ``--out``;
``run_all.py`` keeps it with the others).

    .venv/bin/python benchmarks/header_read.py [--runs 3] [--vocab 131072] [--merges 260000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATTERN = "MEM*EMEM*E"  # Mamba2, MoE and attention layers, as the Nemotron 3 models interleave them


def write_model(path: Path, *, vocab: int, merges: int) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "nemotron_h_moe")
    writer.add_block_count(len(PATTERN))
    writer.add_context_length(262_144)
    writer.add_embedding_length(2688)
    writer.add_head_count(32)
    writer.add_head_count_kv([2 if kind == "*" else 0 for kind in PATTERN])
    writer.add_feed_forward_length([1856 if kind == "E" else 0 for kind in PATTERN])
    writer.add_key_length(128)
    writer.add_value_length(128)
    writer.add_ssm_conv_kernel(4)
    writer.add_ssm_inner_size(4096)
    writer.add_ssm_state_size(128)
    writer.add_ssm_group_count(8)
    writer.add_ssm_time_step_rank(64)
    writer.add_expert_count(128)
    writer.add_expert_used_count(6)
    writer.add_token_list([f"tok{index}" for index in range(vocab)])
    writer.add_token_types([1] * vocab)
    if merges:
        writer.add_token_merges([f"a{index} b{index}" for index in range(merges)])
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def plan_seconds(model: Path, machine: Path, env: dict[str, str], *, cold: bool) -> float:
    if cold:
        os.utime(model)  # a new modification time: the cached header no longer matches the file
    argv = [sys.executable, "-m", "nemolaunch", "plan", str(model), "--hardware", str(machine), "--json"]
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"nemolaunch plan {model.name} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=131_072, help="tokens of the large vocabulary")
    parser.add_argument("--merges", type=int, default=260_000, help="BPE merges of the large vocabulary")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nl-header-") as folder:
        work = Path(folder)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache")}  # a header cache of this run's own
        machine = work / "machine.json"
        machine.write_text(json.dumps({
            "os": "linux", "arch": "x86_64",
            "cpu": {"model": "benchmark", "physical_cores": 8, "logical_cores": 16, "flags": ["avx2"]},
            "memory": {"total_bytes": 64 * 2**30, "available_bytes": 60 * 2**30},
            "disk": {"path": str(work), "free_bytes": 500 * 2**30}, "gpus": [],
        }))  # fmt: skip
        models = {
            "300 tokens (baseline)": write_model(work / "small.gguf", vocab=300, merges=0),
            f"{args.vocab:,} tokens, {args.merges:,} merges": write_model(
                work / "large.gguf", vocab=args.vocab, merges=args.merges
            ),
        }
        runs: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.runs):  # interleaved, so drift of a shared machine hits every row alike
            for label, model in models.items():
                for state in ("cold", "warm"):
                    runs.setdefault((label, state), []).append(plan_seconds(model, machine, env, cold=state == "cold"))
        sizes = {label: model.stat().st_size for label, model in models.items()}

    baseline = statistics.median(runs[("300 tokens (baseline)", "cold")])
    lines = [
        "# The first `nemolaunch plan` of a model: its GGUF header read with the cache cold and warm",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}",
        f"- medians of {args.runs} runs; ratios against the baseline's cold plan, measured in the same run",
        "",
        "| vocabulary | file MB | cache | median s | spread s (min-max) | × baseline cold |",
        "|---|---:|---|---:|---|---:|",
    ]  # fmt: skip
    for (label, state), seconds in runs.items():
        median = statistics.median(seconds)
        lines.append(
            f"| {label} | {sizes[label] / 1e6:.1f} | {state} | {median:.2f} | {min(seconds):.2f}-{max(seconds):.2f} "
            f"| {median / baseline:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
