"""Golden plans for recorded machines, and the planner's rules and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.hardware_file import load_hardware_facts
from nemolaunch.core.catalog import NANO_REPO, SUPER_REPO, Catalog, ListingEntry, build_catalog, builtin_catalog
from nemolaunch.core.forecast import ULTRA_ARCHITECTURE
from nemolaunch.core.hardware import GpuFacts, HardwareFacts
from nemolaunch.core.planner import Plan, PlanRequest, memory_budget, plan_launch
from nemolaunch.errors import (
    EXIT_USAGE,
    BadOption,
    ContextSizeNotPositive,
    ContextSizeTooLarge,
    NoCompleteQuant,
    UnknownQuant,
    describe,
)

HARDWARE = Path(__file__).parent / "fixtures" / "hardware"
LISTINGS = Path(__file__).parent / "fixtures" / "listings"
GiB = 1024**3


def machine(name: str) -> HardwareFacts:
    return load_hardware_facts(HARDWARE / f"{name}.json")


def ultra() -> Catalog:
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    return catalog


def plan(name: str | HardwareFacts, **request: object) -> Plan:
    facts = machine(name) if isinstance(name, str) else name
    return plan_launch(facts, ultra(), PlanRequest(**request), ULTRA_ARCHITECTURE)  # type: ignore[arg-type]


# --- golden plans -----------------------------------------------------------------------------------
GOLDEN = [
    # machine, quant, placement, budget in bytes
    ("b200x4", "UD-Q8_K_XL", "gpu", 4 * 191_126_044_672 + 2_093_412_765_696),
    ("h100x8", "UD-Q8_K_XL", "gpu", 8 * 84_986_036_224 + 1_983_526_123_520),
    ("rtx4090_256gb", "UD-IQ3_XXS", "gpu+cpu-experts", 25_217_466_368 + 261_993_005_056),
    ("mac_studio_m3_ultra_512gb", "UD-Q5_K_XL", "metal", 412_316_860_416),
    ("cpu_epyc_384gb", "UD-Q4_K_XL", "cpu", 395_136_991_232),
    ("h200_shared", "UD-Q4_K_XL", "gpu+cpu-experts", 75_108_810_752 + 261_672_165_376),
]


@pytest.mark.parametrize(("name", "quant", "placement", "budget"), GOLDEN, ids=[row[0] for row in GOLDEN])
def test_golden_plan(name: str, quant: str, placement: str, budget: int) -> None:
    result = plan(name)
    data = result.to_json()
    assert (data["quant"], data["placement"], data["fits"], data["budget_bytes"]) == (quant, placement, True, budget)
    assert data["launchable"] is True
    assert data["forecast_bytes"] <= data["budget_bytes"]
    assert data["shortfall_bytes"] is None and data["ways_out"] == []
    # The next better quant (if any) does not fit, or loses to the quality ceiling.
    names = [entry["name"] for entry in data["quants"]]
    better = data["quants"][names.index(quant) + 1 :]
    assert all(not entry["fits"] or entry["placement"] == "gpu+cpu-experts" for entry in better)


NOTHING_FITS = [
    # machine, budget, forecast of UD-Q2_K_XL (the smallest worth recommending) there
    ("rtx3090x2_128gb", 179_649_839_104, 254_322_754_150),
    ("mac_m3_ultra_256gb", 206_158_430_208, 252_685_297_869),
    ("laptop_64gb", 65_864_048_640, 253_222_168_781),
]


@pytest.mark.parametrize(("name", "budget", "needs"), NOTHING_FITS, ids=[row[0] for row in NOTHING_FITS])
def test_nothing_fits_gives_the_shortfall_and_ways_out(name: str, budget: int, needs: int) -> None:
    data = plan(name).to_json()
    assert (data["quant"], data["placement"], data["fits"], data["launchable"]) == (None, None, False, False)
    assert data["budget_bytes"] == budget
    assert data["shortfall_bytes"] == needs - budget
    kinds = [way["kind"] for way in data["ways_out"]]
    assert kinds[-1] == "rpc"
    assert data["ways_out"][-1]["needs_bytes"] == needs - budget
    assert "n-cpu-moe" not in json.dumps(data)


def test_two_3090s_ways_out() -> None:
    ways = {way.kind: way for way in plan("rtx3090x2_128gb").ways_out}
    assert [way.kind for way in plan("rtx3090x2_128gb").ways_out] == [
        "smallest_quant", "disk", "smaller_model", "smaller_model", "rpc"
    ]  # fmt: skip
    smallest = ways["smallest_quant"]
    assert (smallest.quant, smallest.needs_bytes) == ("UD-IQ1_S", 204_510_754_150)
    assert "24.9 GB more than this machine has" in smallest.text
    models = [(way.repo, way.quant) for way in plan("rtx3090x2_128gb").ways_out if way.kind == "smaller_model"]
    # Super's Q8_0 spills experts to RAM; Nano's Q8_0 stays on the GPUs and beats its BF16.
    assert models == [(SUPER_REPO, "Q8_0"), (NANO_REPO, "Q8_0")]


def test_laptop_ways_out_name_the_smaller_models_that_fit() -> None:
    models = [(way.repo, way.quant) for way in plan("laptop_64gb").ways_out if way.kind == "smaller_model"]
    assert models == [(SUPER_REPO, "UD-Q2_K_XL"), (NANO_REPO, "Q8_0")]


def test_256gb_mac_ways_out_offer_the_1_bit_quant_and_a_higher_gpu_limit() -> None:
    ways = {way.kind: way for way in plan("mac_m3_ultra_256gb").ways_out}
    below = ways["below_floor_quant"]
    # 189.04 GB + 1 610 612 736 KV + 413 270 016 Mamba + 2 × 512 MiB compute = 192 137 624 576,
    # plus 5 % (9 606 881 229) and 1 GiB
    assert (below.quant, below.needs_bytes) == ("UD-IQ1_S", 202_873_297_869)
    assert f"name {ULTRA_REPO}:UD-IQ1_S to run it anyway" in below.text
    limit = ways["metal_limit"]
    assert limit.quant == "UD-Q2_K_XL"
    assert "sudo sysctl iogpu.wired_limit_mb=245760" in limit.text  # 256 GiB − 16 GiB, in MiB
    assert "smallest_quant" not in ways  # the smallest quant does fit, just below the floor


# --- the rules behind the choices ---------------------------------------------------------------------
def test_memory_another_process_holds_changes_the_choice() -> None:
    shared = machine("h200_shared")
    idle_gpu = shared.model_copy(
        update={"gpus": [shared.gpus[0].model_copy(update={"free_bytes": shared.gpus[0].total_bytes})]}
    )
    assert plan(shared).quant.name == "UD-Q4_K_XL"  # type: ignore[union-attr]
    assert plan(idle_gpu).quant.name == "UD-Q5_K_XL"  # type: ignore[union-attr]


def test_unified_memory_is_counted_once_on_a_mac() -> None:
    facts = machine("mac_studio_m3_ultra_512gb")
    budget = memory_budget(facts)
    assert (budget.kind, budget.gpu_bytes, budget.ram_bytes) == ("metal", 412_316_860_416, 0)
    assert budget.total_bytes < facts.memory.available_bytes


def test_gpu_on_shared_system_memory_is_counted_once() -> None:
    base = machine("cpu_epyc_384gb")
    spark = base.model_copy(
        update={
            "gpus": [
                GpuFacts(backend="cuda", index=0, name="NVIDIA GB10", total_bytes=base.memory.total_bytes,
                         free_bytes=base.memory.available_bytes, compute_capability="12.1", unified=True)
            ]
        }
    )  # fmt: skip
    budget = memory_budget(spark)
    assert (budget.kind, budget.gpu_bytes, budget.ram_bytes) == ("cuda", 395_136_991_232, 0)
    result = plan(spark)
    assert (result.quant.name, result.placement) == ("UD-Q4_K_XL", "gpu")  # type: ignore[union-attr]


def test_past_8_bits_the_quant_that_stays_on_the_gpus_wins() -> None:
    result = plan("b200x4")
    bf16 = next(item for item in result.assessments if item.quant.name == "BF16")
    assert bf16.fits and bf16.placement == "gpu+cpu-experts"
    assert any("BF16 would fit only with experts in RAM" in reason for reason in result.reasons)


def test_reasons_explain_the_budget_and_the_forecast() -> None:
    reasons = plan("rtx4090_256gb").reasons
    assert reasons[0] == "budget: 1 CUDA GPU(s) with 25.2 GB free + 262.0 GB of RAM available = 287.2 GB"
    assert reasons[2] == (
        "UD-IQ3_XXS needs 270.2 GB at 32768 tokens of context: weights 252.6 GB, KV cache 1.6 GB, "
        "Mamba state 0.4 GB, compute buffers 1.1 GB, llama-server itself 19 MB, safety margin 14.4 GB"
    )
    assert "the next better quant, UD-Q3_K_XL, needs 297.0 GB, more than the budget" in reasons


def test_a_longer_context_can_push_a_quant_out() -> None:
    # 1M tokens of KV cache on the 512 GB Mac: 48 GiB more than at 32k.
    assert plan("mac_studio_m3_ultra_512gb", ctx_size=1_048_576).quant.name == "UD-Q4_K_XL"  # type: ignore[union-attr]


# --- asking for a quant, forcing ------------------------------------------------------------------------
def test_named_quant_is_matched_case_insensitively() -> None:
    result = plan("rtx4090_256gb", quant="ud-q2_k_xl")
    assert (result.quant.name, result.fits, result.launchable) == ("UD-Q2_K_XL", True, True)  # type: ignore[union-attr]


def test_named_quant_that_does_not_fit() -> None:
    result = plan("rtx4090_256gb", quant="Q8_K_XL")
    data = result.to_json()
    assert (data["quant"], data["fits"], data["launchable"]) == ("UD-Q8_K_XL", False, False)
    assert data["shortfall_bytes"] == data["forecast_bytes"] - data["budget_bytes"]
    smaller = data["ways_out"][0]
    assert (smaller["kind"], smaller["quant"]) == ("smaller_quant", "UD-IQ3_XXS")


def test_forced_quant_that_does_not_fit_is_launchable_with_a_warning() -> None:
    result = plan("rtx4090_256gb", quant="UD-Q8_K_XL", force=True)
    assert (result.fits, result.launchable) == (False, True)
    assert any("forced: it would be launched anyway" in warning for warning in result.warnings)


def test_named_quant_below_the_floor_is_allowed_with_a_warning() -> None:
    result = plan("mac_m3_ultra_256gb", quant="UD-IQ1_S")
    assert (result.quant.name, result.fits, result.placement) == ("UD-IQ1_S", True, "metal")  # type: ignore[union-attr]
    assert any("below UD-Q2_K_XL" in warning for warning in result.warnings)


def test_force_without_a_quant_stays_at_the_floor_even_when_a_lower_quant_would_fit() -> None:
    # The issue: never below UD-Q2_K_XL unless the user names a quant; --force only launches what does not fit.
    result = plan("mac_m3_ultra_256gb", force=True)
    assert (result.quant.name, result.fits, result.launchable) == ("UD-Q2_K_XL", False, True)  # type: ignore[union-attr]
    assert any(way.quant == "UD-IQ1_S" for way in plan("mac_m3_ultra_256gb").ways_out)  # offered by name instead


def test_force_when_nothing_fits_takes_the_smallest_recommended_quant() -> None:
    result = plan("rtx3090x2_128gb", force=True)
    # Never below the quality floor unless a quant is named, forced or not.
    assert (result.quant.name, result.fits, result.launchable) == ("UD-Q2_K_XL", False, True)  # type: ignore[union-attr]
    assert result.shortfall_bytes == 254_322_754_150 - 179_649_839_104


# --- plan JSON -------------------------------------------------------------------------------------------
def test_plan_json_shape() -> None:
    data = plan("cpu_epyc_384gb").to_json()
    assert {"model", "quant", "fits", "forecast_bytes", "budget_bytes", "placement", "quants", "source"} <= set(data)
    assert data["model"] == ULTRA_REPO
    assert data["source"] == "builtin"
    assert data["forecast"]["total"] == data["forecast_bytes"]
    assert len(data["quants"]) == 13
    assert set(data["quants"][0]) >= {"name", "size_bytes", "forecast_bytes", "fits"}
    assert data["files"][0] == "UD-Q4_K_XL/NVIDIA-Nemotron-3-Ultra-550B-A55B-UD-Q4_K_XL-00001-of-00006.gguf"
    assert json.loads(json.dumps(data)) == data


def test_plan_from_a_hub_listing_says_so_and_drops_the_approximate_warning() -> None:
    raw_items = json.loads((LISTINGS / "ultra_hub.json").read_text())
    entries = [ListingEntry(raw["path"], raw["size"]) for raw in raw_items if "size" in raw]
    catalog = build_catalog(ULTRA_REPO, entries, source="hub")
    result = plan_launch(machine("cpu_epyc_384gb"), catalog, PlanRequest(), ULTRA_ARCHITECTURE)
    assert (result.source, result.quant.name) == ("hub", "UD-Q4_K_XL")  # type: ignore[union-attr]
    assert not any("approximate built-in figures" in warning for warning in result.warnings)


def test_download_larger_than_the_free_disk_is_a_warning() -> None:
    facts = machine("rtx4090_256gb")
    small_disk = facts.model_copy(update={"disk": facts.disk.model_copy(update={"free_bytes": 100_000_000_000})})  # type: ignore[union-attr]
    result = plan(small_disk)
    assert any("UD-IQ3_XXS is 252.6 GB but only 100.0 GB is free" in warning for warning in result.warnings)
    assert not any("is free at" in warning for warning in plan(facts).warnings)


def test_unknown_architecture_is_planned_with_a_warning() -> None:
    catalog = build_catalog("someone/model-GGUF", [ListingEntry("M-Q4_K_M.gguf", 20_000_000_000)], source="hub")
    result = plan_launch(machine("rtx4090_256gb"), catalog, PlanRequest(), None)
    assert (result.quant.name, result.placement) == ("Q4_K_M", "gpu+cpu-experts")  # type: ignore[union-attr]
    assert "the model's architecture is unknown: the KV cache is not in the forecast" in result.warnings


# --- refusals ------------------------------------------------------------------------------------------
def test_unknown_quant_lists_what_exists() -> None:
    with pytest.raises(UnknownQuant) as caught:
        plan("cpu_epyc_384gb", quant="Q4_K_M")
    assert "UD-Q4_K_XL" in caught.value.available


@pytest.mark.parametrize("ctx_size", [0, -4096])
def test_ctx_size_not_positive(ctx_size: int) -> None:
    with pytest.raises(ContextSizeNotPositive):
        plan("cpu_epyc_384gb", ctx_size=ctx_size)


def test_ctx_size_above_the_model_maximum() -> None:
    with pytest.raises(ContextSizeTooLarge) as caught:
        plan("cpu_epyc_384gb", ctx_size=2_000_000)
    assert caught.value.maximum == 1_048_576


def test_parallel_must_be_positive() -> None:
    with pytest.raises(BadOption) as caught:
        plan("cpu_epyc_384gb", parallel=0)
    assert describe(caught.value)[0] == EXIT_USAGE


def test_catalog_with_only_incomplete_quants() -> None:
    catalog = build_catalog("someone/model-GGUF", [ListingEntry("Q8_0/M-Q8_0-00001-of-00002.gguf", 5)], source="cache")
    with pytest.raises(NoCompleteQuant) as caught:
        plan_launch(machine("cpu_epyc_384gb"), catalog, PlanRequest(), None)
    assert caught.value.incomplete == ["Q8_0"]


def test_past_the_quality_ceiling_the_quant_that_spills_least_wins() -> None:
    """8xH100 at the full 1M context: no 8-bit-or-more quant stays in GPU memory, so the smallest of them
    (Q8_0) is chosen, not BF16, which would spill twice as many experts for no better answers."""
    result = plan("h100x8", ctx_size=1_048_576, parallel=4)
    assert result.quant is not None and result.quant.name == "Q8_0"
    assert result.placement == "gpu+cpu-experts"
    # With room on the GPUs, the dynamic 8-bit quant is preferred over plain Q8_0.
    assert plan("b200x4").quant.name == "UD-Q8_K_XL"  # type: ignore[union-attr]
