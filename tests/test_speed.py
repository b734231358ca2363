"""The speed forecast: bandwidth facts, tokens/s by placement, choosing by speed, local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.hardware_file import load_hardware_facts
from nemolaunch.core.catalog import builtin_catalog
from nemolaunch.core.forecast import ULTRA_ARCHITECTURE
from nemolaunch.core.hardware import GpuFacts
from nemolaunch.core.planner import Plan, PlanRequest, plan_launch
from nemolaunch.core.speed import (
    CPU_LAYER_OVERHEAD_S,
    EXPERT_SHARE_GUESS,
    GPU_EFFICIENCY,
    MEASURED_RAM_EFFICIENCY,
    RAM_BYTES_PER_S_MAX,
    Bandwidth,
    FastPart,
    active_share_from_name,
    forecast_speed,
    gpu_bandwidth,
    model_sparsity,
    ram_bandwidth,
)
from nemolaunch.errors import BadOption

from conftest import cli_env, run_nemolaunch

HARDWARE = Path(__file__).parent / "fixtures" / "hardware"
GB = 1e9


def machine(name: str):
    return load_hardware_facts(HARDWARE / f"{name}.json")


def ultra_plan(name: str, **request: object) -> Plan:
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    return plan_launch(machine(name), catalog, PlanRequest(parallel=4, **request), ULTRA_ARCHITECTURE)  # type: ignore[arg-type]


# --- bandwidth facts ------------------------------------------------------------------------------------
def test_gpu_bandwidth_from_nvml_else_the_table_else_unknown() -> None:
    base = {"backend": "cuda", "index": 0, "total_bytes": 1, "free_bytes": 1}
    assert gpu_bandwidth(GpuFacts(name="X", memory_bandwidth_bytes_per_s=2e12, **base)) == Bandwidth(2e12, "nvml")
    assert gpu_bandwidth(GpuFacts(name="NVIDIA H200", **base)) == Bandwidth(4.8e12, "table")
    # Most specific first: an H100 PCIe is not an SXM.
    assert gpu_bandwidth(GpuFacts(name="NVIDIA H100 PCIe", **base)).bytes_per_s == 2.0e12
    assert gpu_bandwidth(GpuFacts(name="NVIDIA H100 80GB HBM3", **base)).bytes_per_s == 3.35e12
    assert gpu_bandwidth(GpuFacts(name="NVIDIA GeForce RTX 4090", **base)).bytes_per_s == 1.008e12
    assert gpu_bandwidth(GpuFacts(name="Mystery Accelerator", **base)) == Bandwidth(None, "unknown")
    metal = GpuFacts(backend="metal", index=0, name="Apple M3 Ultra", total_bytes=1, free_bytes=1, unified=True)
    assert gpu_bandwidth(metal).bytes_per_s == 819e9


def test_ram_bandwidth_measured_else_estimated_from_the_cores() -> None:
    measured = machine("cpu_epyc_384gb").model_copy(
        update={"memory": machine("cpu_epyc_384gb").memory.model_copy(update={"bandwidth_bytes_per_s": 321e9})}
    )
    assert ram_bandwidth(measured) == Bandwidth(321e9, "measured")
    assert ram_bandwidth(machine("laptop_64gb")).source == "estimated"
    assert ram_bandwidth(machine("cpu_epyc_384gb")).bytes_per_s == RAM_BYTES_PER_S_MAX  # 96 cores: the cap


def test_doctor_measures_this_machines_ram_bandwidth() -> None:
    result = run_nemolaunch("doctor", "--json")
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)["memory"]["bandwidth_bytes_per_s"]
    # Any machine reads RAM faster than 100 MB/s and slower than 10 TB/s.
    assert 1e8 < measured < 1e13
    table = run_nemolaunch("doctor", env=cli_env(COLUMNS="200"))
    row = next(line for line in table.stdout.splitlines() if "memory bandwidth" in line)
    assert "measured" in row and "GB/s" in row


# --- the model of a token ----------------------------------------------------------------------------------
def test_a_token_reads_the_active_share_from_where_it_lives() -> None:
    ram = Bandwidth(100 * GB, "measured")
    speed = forecast_speed(
        weights_bytes=int(100 * GB), active_share=0.1, expert_share=0.9, bits_per_weight=4.0, fast_parts=(),
        ram_bytes=int(100 * GB), ram=ram, ram_flops=1e12,
    )  # fmt: skip
    # 10 GB a token from RAM at 85 % of 100 GB/s.
    assert speed.active_bytes_per_token == pytest.approx(10 * GB)
    assert speed.generation_tps == pytest.approx(100 * GB * MEASURED_RAM_EFFICIENCY / (10 * GB))
    # Prompts: 2 FLOPs per active parameter (10 GB at 4 bits = 20 G parameters).
    assert speed.prompt_tps == pytest.approx(1e12 * 0.5 / (2 * 20e9))


def test_a_low_bit_quant_in_ram_is_bound_by_the_cpus_multiplications_when_they_take_longer() -> None:
    """Measured here: Q4_0 generated slower than Q8_0 of a larger file; the reads alone cannot say why."""
    ram = Bandwidth(30 * GB, "measured")

    def speed(bits: float) -> float | None:
        return forecast_speed(
            weights_bytes=int(1 * GB), active_share=0.3, expert_share=0.0, bits_per_weight=bits, fast_parts=(),
            ram_bytes=int(1 * GB), ram=ram, ram_flops=1e12, ram_dot_flops=66e9,
        ).generation_tps  # fmt: skip

    reads = 1 / (0.3 * GB / (30 * GB * MEASURED_RAM_EFFICIENCY))  # 0.3 GB a token
    assert speed(8.5) == pytest.approx(reads)  # Q8_0: 0.28 G weights, 8.6 ms of multiplying < 11.8 ms of reads
    # Q4_0: 0.53 G weights a token, 2 FLOPs each at 66 GFLOP/s: 16 ms, longer than its reads.
    assert speed(4.5) == pytest.approx(66e9 / (2 * 0.3 * GB * 8 / 4.5))
    assert speed(4.5) < reads


def test_spilled_experts_are_read_at_the_routed_rate_and_the_rest_on_the_gpu() -> None:
    gpu = FastPart("GPU", int(40 * GB), Bandwidth(1000 * GB, "table"), 100e12)
    speed = forecast_speed(
        weights_bytes=int(100 * GB), active_share=0.1, expert_share=0.95, bits_per_weight=4.0, fast_parts=(gpu,),
        ram_bytes=int(60 * GB), ram=Bandwidth(100 * GB, "estimated"), ram_flops=1e12, layers=10,
    )  # fmt: skip
    ram_part = next(part for part in speed.parts if part.device == "RAM")
    gpu_part = next(part for part in speed.parts if part.device == "GPU")
    routed = (10 - 5) / 95  # active 10 GB: 5 GB shared, 5 GB of the 95 GB of experts
    assert ram_part.bytes_per_token == pytest.approx(60 * GB * routed)
    assert gpu_part.bytes_per_token + ram_part.bytes_per_token == pytest.approx(10 * GB)
    seconds = gpu_part.bytes_per_token / (1000 * GB * GPU_EFFICIENCY) + ram_part.bytes_per_token / (100 * GB)
    seconds += speed.overhead_seconds
    assert speed.generation_tps == pytest.approx(1 / seconds)
    assert speed.overhead_seconds > 10 * CPU_LAYER_OVERHEAD_S * 0.5


def test_an_unknown_bandwidth_gives_no_figure_and_never_wins_on_speed() -> None:
    gpu = FastPart("GPU", int(10 * GB), Bandwidth(None, "unknown"), None)
    speed = forecast_speed(
        weights_bytes=int(10 * GB), active_share=1.0, expert_share=0.0, bits_per_weight=8.0, fast_parts=(gpu,),
        ram_bytes=0, ram=Bandwidth(50 * GB, "estimated"), ram_flops=None,
    )  # fmt: skip
    assert speed.generation_tps is None and speed.prompt_tps is None


def test_sparsity_from_the_name_the_experts_or_dense() -> None:
    assert active_share_from_name(ULTRA_REPO) == pytest.approx(0.1)
    assert active_share_from_name("unsloth/Nemotron-3-Nano-30B-A3B-GGUF") == pytest.approx(0.1)
    assert active_share_from_name("someone/Llama-3-70B-GGUF") is None
    ultra = model_sparsity(ULTRA_REPO, 512, 22)
    # a = (1 - e) + e·22/512  ⇒  e = 0.9 / (1 - 22/512)
    assert (ultra.active_share, ultra.source) == (pytest.approx(0.1), "name")
    assert ultra.expert_share == pytest.approx(0.9 / (1 - 22 / 512))
    guessed = model_sparsity("someone/moe-GGUF", 64, 8)
    assert guessed.source == "experts" and guessed.expert_share == EXPERT_SHARE_GUESS
    assert model_sparsity("someone/dense-GGUF") == model_sparsity("x/y")
    assert model_sparsity("x/y").active_share == 1.0


# --- the plan's forecast and choosing by speed -----------------------------------------------------------
def test_every_quant_gets_a_forecast_and_fewer_bits_are_faster_in_the_same_place() -> None:
    plan = ultra_plan("b200x4")
    rates = [item.tokens_per_s for item in plan.assessments]
    assert all(rate > 0 for rate in rates)
    assert rates == sorted(rates, reverse=True)  # lowest quality first in the catalog: fastest first
    data = plan.to_json()
    speed = data["quants"][0]["speed"]
    assert speed["generation_tokens_per_s"] > 0 and speed["parts"][0]["bandwidth_source"] == "table"
    assert any("10.0% of the weights" in words for words in data["speed_assumptions"])


def test_spilling_experts_to_ram_costs_speed() -> None:
    plan = ultra_plan("h100x4_1tb")
    by_name = {item.quant.name: item for item in plan.assessments}
    on_gpus, spilled = by_name["UD-Q3_K_XL"], by_name["Q8_0"]
    assert (on_gpus.placement, spilled.placement) == ("gpu", "gpu+cpu-experts")
    assert on_gpus.tokens_per_s > 2 * spilled.tokens_per_s


SPEED_GOLDEN = [
    # machine, request, chosen quant, placement
    ("h100x4_1tb", {}, "Q8_0", "gpu+cpu-experts"),
    ("h100x4_1tb", {"prefer": "speed"}, "UD-Q2_K_XL", "gpu"),
    ("h100x4_1tb", {"min_speed": 20.0}, "UD-Q6_K_XL", "gpu+cpu-experts"),
    ("rtx4090_256gb", {}, "UD-IQ3_XXS", "gpu+cpu-experts"),
    ("rtx4090_256gb", {"prefer": "speed"}, "UD-Q2_K_XL", "gpu+cpu-experts"),
    ("mac_studio_m3_ultra_512gb", {}, "UD-Q5_K_XL", "metal"),
    ("mac_studio_m3_ultra_512gb", {"prefer": "speed"}, "UD-Q2_K_XL", "metal"),
    ("mac_studio_m3_ultra_512gb", {"min_speed": 11.5}, "UD-Q4_K_XL", "metal"),
    ("cpu_epyc_768gb", {}, "UD-Q8_K_XL", "cpu"),
    ("cpu_epyc_768gb", {"prefer": "speed"}, "UD-Q2_K_XL", "cpu"),
    ("cpu_epyc_768gb", {"min_speed": 9.5}, "UD-Q5_K_XL", "cpu"),
]


@pytest.mark.parametrize(
    ("name", "request_", "quant", "placement"), SPEED_GOLDEN, ids=[f"{row[0]}-{row[1]}" for row in SPEED_GOLDEN]
)
def test_golden_speed_choices(name: str, request_: dict[str, object], quant: str, placement: str) -> None:
    plan = ultra_plan(name, **request_)
    assert (plan.quant.name, plan.placement, plan.fits) == (quant, placement, True)
    eligible = [item for item in plan.assessments if item.fits and not item.quant.below_quality_floor]
    if request_.get("prefer") == "speed":
        assert plan.chosen.tokens_per_s == max(item.tokens_per_s for item in eligible)
    if "min_speed" in request_:
        reaching = [item for item in eligible if item.tokens_per_s >= request_["min_speed"]]
        assert plan.chosen in reaching
        # The best quality among those: every better quant is slower than asked.
        better = [item for item in eligible if (item.quant.bits_per_weight or 0) > plan.quant.bits_per_weight]
        assert all(item.tokens_per_s < request_["min_speed"] for item in better if item.quant.bits_per_weight < 8.5)


def test_the_reasons_say_what_was_traded() -> None:
    plan = ultra_plan("h100x4_1tb", min_speed=20.0)
    traded = next(reason for reason in plan.reasons if reason.startswith("traded:"))
    assert "UD-Q6_K_XL (gpu+cpu-experts) ~" in traded
    assert "Q8_0, the best quality that fits (gpu+cpu-experts), would be ~" in traded


def test_a_speed_no_quant_reaches_takes_the_fastest_and_says_so() -> None:
    plan = ultra_plan("rtx4090_256gb", min_speed=1000.0)
    assert plan.quant.name == "UD-Q2_K_XL"
    assert any(reason.startswith("no quant that fits reaches 1000 tokens/s") for reason in plan.reasons)


def test_a_nonpositive_min_speed_is_refused() -> None:
    with pytest.raises(BadOption, match="--min-speed"):
        ultra_plan("b200x4", min_speed=0.0)


def test_a_cluster_pays_the_network_per_token() -> None:
    from nemolaunch.adapters.hardware_file import load_machine

    facts, workers = load_machine(Path(__file__).parent / "fixtures" / "clusters" / "two_cpu_256gb.json")
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    plan = plan_launch(facts, catalog, PlanRequest(parallel=4), ULTRA_ARCHITECTURE, workers)
    speed = plan.chosen.speed
    assert speed is not None and speed.network_seconds > 0
    assert {part.device for part in speed.parts} == {"10.0.0.2:50052", "RAM"}


# --- through the CLI ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--prefer", "fast"], "--prefer fast is not valid: use quality or speed"),
        (["--min-speed", "-3"], "--min-speed -3.0 is not valid"),
        (["--min-speed", "nan"], "--min-speed nan is not valid"),
        (["--prefer", "speed", "--min-speed", "5"], "--min-speed already chooses by speed"),
    ],
)
def test_bad_speed_options_are_one_line(args: list[str], words: str) -> None:
    result = run_nemolaunch("plan", *args, env=cli_env(HF_HUB_OFFLINE="1"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr


def test_plan_takes_a_local_gguf_with_the_memory_check_and_the_forecast(tiny_model: Path) -> None:
    result = run_nemolaunch("plan", str(tiny_model), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["source"], data["fits"], len(data["quants"])) == ("local", True, 1)
    speed = data["quants"][0]["speed"]
    assert speed["generation_tokens_per_s"] > 0
    assert speed["parts"][0]["bandwidth_source"] == "measured"  # plan measures this machine's RAM
    assert any("(from the tensors)" in words for words in data["speed_assumptions"])
    assert data["command"][data["command"].index("--model") + 1] == str(tiny_model)
    assert data["command"][data["command"].index("--alias") + 1] == tiny_model.stem
    table = run_nemolaunch("plan", str(tiny_model), env=cli_env(COLUMNS="120"))
    assert "tok/s" in table.stderr and "quants from local" in table.stderr
    refused = run_nemolaunch("plan", str(tiny_model), "--quant", "Q4_K_M")
    assert refused.returncode == 2 and "not of a local file" in refused.stderr


def test_plan_of_a_local_file_that_does_not_fit_exits_6(tiny_model: Path, tmp_path: Path) -> None:
    small = json.loads((HARDWARE / "laptop_64gb.json").read_text())
    small["memory"] = {"total_bytes": 10**6, "available_bytes": 10**6, "bandwidth_bytes_per_s": None}
    small["gpus"] = []
    path = tmp_path / "small.json"
    path.write_text(json.dumps(small))
    result = run_nemolaunch("plan", str(tiny_model), "--hardware", str(path))
    assert result.returncode == 6
    errors = [line for line in result.stderr.splitlines() if line.startswith("nemolaunch: error:")]
    assert len(errors) == 1 and "does not fit" in errors[0], result.stderr


def test_serve_chooses_by_speed_too_but_not_for_a_local_file(tiny_model: Path, llama_bin_dir: Path) -> None:
    hardware = str(HARDWARE / "h100x4_1tb.json")
    base = ["serve", "--hardware", hardware, "--dry-run", "--llama-cpp", str(llama_bin_dir)]
    env = cli_env(HF_HUB_OFFLINE="1")
    by_quality = run_nemolaunch(*base, env=env)
    by_speed = run_nemolaunch(*base, "--prefer", "speed", env=env)
    fast_enough = run_nemolaunch(*base, "--min-speed", "20", env=env)
    assert "UD-Q8_K_XL" not in by_speed.stderr
    assert ":Q8_0 (gpu+cpu-experts)" in by_quality.stderr, by_quality.stderr
    assert ":UD-Q2_K_XL (gpu)" in by_speed.stderr, by_speed.stderr
    assert ":UD-Q6_K_XL (gpu+cpu-experts)" in fast_enough.stderr, fast_enough.stderr
    local = run_nemolaunch(
        "serve", str(tiny_model), "--prefer", "speed", "--dry-run", "--llama-cpp", str(llama_bin_dir)
    )
    assert local.returncode == 2 and "not of a local file" in local.stderr
