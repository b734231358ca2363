"""Disk-backed placement: a model larger than memory, its experts paged from disk, chosen only with
--allow-disk; the disk's read speed in the facts; the launch kept mapped from the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.disk_speed import measure_disk_read
from nemolaunch.adapters.hardware_file import load_hardware_facts
from nemolaunch.core.budget import DISK_PLACEMENTS
from nemolaunch.core.catalog import builtin_catalog
from nemolaunch.core.disk_paging import (
    ASSUMED_RANDOM_BYTES_PER_S,
    ROUTED_CACHE_SHARE,
    disk_reads,
    routed_share,
)
from nemolaunch.core.forecast import CUDA_CONTEXT_BYTES, ULTRA_ARCHITECTURE
from nemolaunch.core.planner import Plan, PlanRequest, memory_budget, plan_launch
from nemolaunch.core.speed import model_sparsity
from nemolaunch.errors import EXIT_DOES_NOT_FIT, EXIT_USAGE

from conftest import cli_env, llama_cpp_shim, run_nemolaunch

HARDWARE = Path(__file__).parent / "fixtures" / "hardware"
#: The machines most people have, where no quant of the Ultra fits in memory.
SHORT_OF_MEMORY = ["laptop_64gb", "rtx3090x2_128gb", "mac_m4_max_128gb"]


def plan(name: str, **request: object) -> Plan:
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    facts = load_hardware_facts(HARDWARE / f"{name}.json")
    return plan_launch(facts, catalog, PlanRequest(**request), ULTRA_ARCHITECTURE)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", SHORT_OF_MEMORY)
def test_allow_disk_chooses_a_disk_backed_placement_with_a_speed(name: str) -> None:
    result = plan(name, allow_disk=True)
    assert result.launchable and result.fits and result.paged
    chosen = result.chosen
    assert chosen is not None and chosen.disk is not None
    assert chosen.placement in DISK_PLACEMENTS
    assert not chosen.quant.below_quality_floor
    # The smallest quant at or above the floor: every byte past memory is read from disk again and again.
    recommended = [item for item in result.assessments if not item.quant.below_quality_floor]
    assert chosen.quant is min(recommended, key=lambda item: item.quant.size_bytes).quant
    # What memory holds besides the weights stays resident; the rest of memory holds weights.
    forecast, budget = chosen.forecast, result.budget
    resident = forecast.predicted - forecast.weights + budget.cuda_devices * CUDA_CONTEXT_BYTES
    assert chosen.disk.memory_weight_bytes == budget.total_bytes - resident
    assert chosen.disk.disk_bytes == forecast.weights - chosen.disk.memory_weight_bytes > 0
    # Uniform routing, the Ultra's slices larger than any read-ahead: a token misses its routed share of the
    # experts outside memory that the page cache does not keep, and the cache keeps at most half of what it
    # holds for them (Linux's inactive list, where pages read once wait).
    sparsity = model_sparsity(ULTRA_REPO, ULTRA_ARCHITECTURE.expert_count, ULTRA_ARCHITECTURE.expert_used_count)
    routed = routed_share(sparsity)
    shared = forecast.weights * (1 - sparsity.expert_share)
    # (CUDA GPUs hold experts apart from RAM; a Mac's unified memory is the page cache itself.)
    experts_in_gpus = min(max(budget.gpu_bytes - shared, 0), forecast.weights * sparsity.expert_share)
    experts_in_gpus = experts_in_gpus if budget.kind == "cuda" else 0
    cached = chosen.disk.memory_weight_bytes - shared - experts_in_gpus
    kept = cached * ROUTED_CACHE_SHARE
    assert chosen.disk.read_per_token == pytest.approx(routed * (chosen.disk.disk_bytes + cached - kept))
    assert routed * chosen.disk.disk_bytes < chosen.disk.read_per_token
    speed = chosen.speed
    assert speed is not None and speed.generation_tps and speed.prompt_tps
    disk = next(part for part in speed.parts if part.device == "disk")
    # The disk's time alone bounds the speed from above.
    assert speed.generation_tps < 1 / disk.seconds
    assert any("paged from disk" in reason for reason in result.reasons)
    assert any("page cache" in words for words in result.speed_assumptions)


@pytest.mark.parametrize("name", SHORT_OF_MEMORY)
def test_without_allow_disk_nothing_fits_and_the_way_out_names_it(name: str) -> None:
    result = plan(name)
    assert not result.launchable and result.chosen is None
    allowed = plan(name, allow_disk=True).chosen
    assert allowed is not None and allowed.speed is not None and allowed.disk is not None
    way = next(way for way in result.ways_out if way.kind == "disk")
    assert way.quant == allowed.quant.name
    assert way.text.startswith(f"with --allow-disk: {allowed.quant.name}, ~{allowed.speed.generation_tps:.1f} tokens/s")
    assert f"{allowed.disk.read_per_token * 100 / 1e9:.1f} GB read from disk per 100 tokens" in way.text


def test_a_quant_that_fits_in_memory_is_never_paged() -> None:
    # 256 GB of RAM on the CPU machine: UD-Q4_K_XL fits, --allow-disk changes nothing.
    assert plan("cpu_epyc_384gb", allow_disk=True).to_json()["placement"] == "cpu"
    assert plan("cpu_epyc_384gb", allow_disk=True).to_json()["quant"] == plan("cpu_epyc_384gb").to_json()["quant"]


def test_measured_disk_speed_is_used_else_a_typical_ssd_is_assumed() -> None:
    measured = load_hardware_facts(HARDWARE / "rtx3090x2_128gb.json")
    assert measured.disk is not None
    assert disk_reads(measured).random.bytes_per_s == measured.disk.random_read_bytes_per_s
    assert disk_reads(measured).random.source == "measured"
    laptop = disk_reads(load_hardware_facts(HARDWARE / "laptop_64gb.json"))
    assert (laptop.random.bytes_per_s, laptop.random.source) == (ASSUMED_RANDOM_BYTES_PER_S, "assumed")


def test_a_faster_disk_forecasts_faster_tokens() -> None:
    facts = load_hardware_facts(HARDWARE / "laptop_64gb.json")
    assert facts.disk is not None
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None

    def rate(random_read: float) -> float:
        speeds = {"read_bytes_per_s": 2 * random_read, "random_read_bytes_per_s": random_read}
        disk = facts.disk.model_copy(update=speeds)  # type: ignore[union-attr]
        faster = facts.model_copy(update={"disk": disk})
        chosen = plan_launch(faster, catalog, PlanRequest(allow_disk=True), ULTRA_ARCHITECTURE).chosen
        assert chosen is not None and chosen.speed is not None and chosen.speed.generation_tps
        return chosen.speed.generation_tps

    assert rate(6e9) > rate(1e9)


def test_no_disk_placement_over_rpc_or_when_resident_memory_is_short() -> None:
    # A budget far too small even for what must stay resident (the shared tensors, KV, buffers).
    facts = load_hardware_facts(HARDWARE / "laptop_64gb.json")
    small = facts.model_copy(
        update={"gpus": [], "memory": facts.memory.model_copy(update={"available_bytes": 4 * 10**9})}
    )
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    result = plan_launch(small, catalog, PlanRequest(allow_disk=True), ULTRA_ARCHITECTURE)
    assert memory_budget(small).total_bytes == 4 * 10**9
    assert not result.launchable
    assert all(item.disk is None for item in result.assessments)
    assert "disk" not in [way.kind for way in result.ways_out]


# --- the CLI ------------------------------------------------------------------------------------------
def test_plan_cli_exits_6_naming_allow_disk_and_allow_disk_plans_it() -> None:
    laptop = str(HARDWARE / "laptop_64gb.json")
    refused = run_nemolaunch("plan", "--hardware", laptop, env=cli_env(HF_HUB_OFFLINE="1"))
    assert refused.returncode == EXIT_DOES_NOT_FIT, refused.stderr
    assert "with --allow-disk: UD-Q2_K_XL" in refused.stderr
    allowed = run_nemolaunch("plan", "--hardware", laptop, "--allow-disk", "--json", env=cli_env(HF_HUB_OFFLINE="1"))
    assert allowed.returncode == 0, allowed.stderr
    data = json.loads(allowed.stdout)
    assert (data["placement"], data["allow_disk"], data["launchable"]) == ("gpu+ram+disk", True, True)
    assert data["disk"]["disk_bytes"] > 0
    assert "--no-repack" in data["command"]
    chosen = next(entry for entry in data["quants"] if entry["name"] == data["quant"])
    assert chosen["speed"]["generation_tokens_per_s"] > 0
    assert any(part["device"] == "disk" for part in chosen["speed"]["parts"])


def test_allow_disk_is_a_setting_too() -> None:
    laptop = str(HARDWARE / "laptop_64gb.json")
    result = run_nemolaunch(
        "plan", "--hardware", laptop, "--json", env=cli_env(HF_HUB_OFFLINE="1", NEMOLAUNCH_ALLOW_DISK="true")
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["placement"] == "gpu+ram+disk"
    shown = run_nemolaunch("config", "show", "--json", env=cli_env(NEMOLAUNCH_ALLOW_DISK="true"))
    assert json.loads(shown.stdout)["settings"]["allow_disk"] == {
        "value": True,
        "from": "env",
        "where": "NEMOLAUNCH_ALLOW_DISK",
    }


@pytest.mark.parametrize("after", [["--mlock"], ["--no-mmap"], ["-lm", "mlock"], ["--load-mode=none"]])
def test_a_disk_backed_launch_refuses_what_would_keep_the_model_in_memory(after: list[str], tmp_path: Path) -> None:
    laptop = str(HARDWARE / "laptop_64gb.json")
    result = run_nemolaunch(
        "serve", "--hardware", laptop, "--allow-disk", "--dry-run", "--llama-cpp", str(llama_cpp_shim(tmp_path)),
        "--", *after,
        env=cli_env(HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    assert result.returncode == EXIT_USAGE, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "after -- with experts paged from disk" in errors[0], result.stderr


def test_a_disk_backed_dry_run_keeps_mmap_and_allows_the_mmap_load_mode(tmp_path: Path) -> None:
    laptop = str(HARDWARE / "laptop_64gb.json")
    result = run_nemolaunch(
        "serve", "--hardware", laptop, "--allow-disk", "--dry-run", "--json",
        "--llama-cpp", str(llama_cpp_shim(tmp_path)), "--", "--load-mode", "mmap",
        env=cli_env(HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)["command"]
    assert "--no-repack" in command and command[-2:] == ["--load-mode", "mmap"]


# --- the disk's read speed ---------------------------------------------------------------------------------
def test_disk_read_speed_is_measured_on_a_scratch_file_it_removes(tmp_path: Path) -> None:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here: the page cache cannot be bypassed, so nothing is measured")
    speed = measure_disk_read(tmp_path, scratch_bytes=32 * 1024**2)
    assert speed is not None
    assert speed.sequential_bytes_per_s > 0 and speed.random_bytes_per_s > 0
    assert list(tmp_path.iterdir()) == []


def test_doctor_json_carries_the_disk_read_speed(tmp_path: Path) -> None:
    result = run_nemolaunch("doctor", "--json", env=cli_env(HF_HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    disk = json.loads(result.stdout)["disk"]
    if hasattr(os, "posix_fadvise"):
        assert disk["read_bytes_per_s"] > 0 and disk["random_read_bytes_per_s"] > 0
    assert [path.name for path in tmp_path.rglob(".nemolaunch-disk-speed-*")] == []


def test_a_read_ahead_window_larger_than_a_slice_never_reads_more_than_lies_outside_memory() -> None:
    # Recorded here: read_ahead_kb 8192 over 78 KB slices forecast 2.95 GB a token of a 0.7 GB model.
    facts = load_hardware_facts(HARDWARE / "laptop_64gb.json")
    assert facts.disk is not None
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None

    def paged(read_ahead: int) -> tuple[float, float]:
        disk = facts.disk.model_copy(update={"read_ahead_bytes": read_ahead})  # type: ignore[union-attr]
        chosen = plan_launch(
            facts.model_copy(update={"disk": disk}), catalog, PlanRequest(allow_disk=True), ULTRA_ARCHITECTURE
        ).chosen
        assert chosen is not None and chosen.disk is not None
        outside = chosen.disk.disk_bytes + chosen.disk.memory_weight_bytes
        return chosen.disk.read_per_token, outside

    small, _ = paged(128 * 1024)
    huge, outside = paged(1 << 30)
    assert small < huge <= outside
