"""`--ctx-size max` and `--cache-type`: the longest context that fits, and the KV cache's precision."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.hardware_file import load_hardware_facts
from nemolaunch.cli.context_options import ContextRequest, read_context
from nemolaunch.core.assessment import CTX_STEP, max_context
from nemolaunch.core.catalog import builtin_catalog
from nemolaunch.core.forecast import ULTRA_ARCHITECTURE, forecast_memory
from nemolaunch.core.planner import PlanRequest, memory_budget, plan_launch
from nemolaunch.errors import BadOption

from conftest import cli_env, run_nemolaunch

HARDWARE = Path(__file__).parent / "fixtures" / "hardware"


def ultra(name: str, **request: object):
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    facts = load_hardware_facts(HARDWARE / f"{name}.json")
    return plan_launch(facts, catalog, PlanRequest(parallel=4, **request), ULTRA_ARCHITECTURE)  # type: ignore[arg-type]


def test_context_options_are_checked_by_the_settings_and_read_here() -> None:
    from nemolaunch.core.settings import resolve_settings

    def checked(**flags: object) -> ContextRequest:
        values = resolve_settings(flags=flags, environ={}, file_values={}, file=None).values
        return read_context(values.ctx_size, values.cache_type)

    assert checked() == ContextRequest()
    assert checked(ctx_size="MAX", cache_type="q8_0") == ContextRequest(longest=True, cache_type="q8_0")
    assert checked(ctx_size=" 8192 ") == ContextRequest(ctx_size=8192)
    with pytest.raises(BadOption, match="max for the longest"):
        checked(ctx_size="lots")
    with pytest.raises(BadOption, match="use a positive number of tokens"):
        checked(ctx_size="0")
    with pytest.raises(BadOption, match="use one of f16"):
        checked(cache_type="q3")


def test_the_longest_context_fits_and_one_step_more_does_not() -> None:
    facts = load_hardware_facts(HARDWARE / "h200_135gb.json")
    catalog = builtin_catalog(ULTRA_REPO)
    assert catalog is not None
    budget = memory_budget(facts)
    quant = catalog.find("UD-IQ3_XXS")
    request = PlanRequest(parallel=4)
    longest = max_context(quant, budget, ULTRA_ARCHITECTURE, request)
    assert longest is not None and longest % CTX_STEP == 0

    def total(ctx_size: int, cache_type: str = "f16") -> int:
        return forecast_memory(
            quant.size_bytes, ULTRA_ARCHITECTURE, ctx_size=ctx_size, parallel=4, gpu_devices=1, cuda_devices=1,
            cache_type=cache_type,
        ).total  # fmt: skip

    assert total(longest) <= budget.total_bytes < total(longest + CTX_STEP)
    # An 8-bit KV cache (34 bytes per 32 values, against 64) holds about twice the context.
    longer = max_context(quant, budget, ULTRA_ARCHITECTURE, replace(request, cache_type="q8_0"))
    assert longer is not None and 1.8 * longest < longer <= 2 * longest + CTX_STEP
    # A quant that does not fit even at the shortest context has none; the model's maximum caps the rest.
    assert max_context(catalog.find("BF16"), budget, ULTRA_ARCHITECTURE, request) is None
    assert max_context(catalog.find("UD-IQ1_S"), budget, ULTRA_ARCHITECTURE, request) == 1_048_576


# The note's figures: the maximum context per quant for 1×H200 + 135 GB of RAM and for 4×B200.
MAX_CONTEXT_GOLDEN = {
    "h200_135gb": {"UD-Q2_K_XL": 648_960, "UD-IQ3_XXS": 327_168, "UD-Q3_K_XL": None},
    "b200x4": {"UD-Q4_K_XL": 1_048_576, "UD-Q8_K_XL": 1_048_576, "BF16": 1_048_576},
}


@pytest.mark.parametrize("name", sorted(MAX_CONTEXT_GOLDEN))
def test_golden_max_context_per_quant(name: str) -> None:
    plan = ultra(name, max_context=True)
    by_quant = {item.quant.name: item.max_ctx for item in plan.assessments}
    for quant, tokens in MAX_CONTEXT_GOLDEN[name].items():
        assert by_quant[quant] == tokens, quant
    # The chosen quant runs with its longest context, and the plan says so.
    assert plan.ctx_size == by_quant[plan.quant.name] and plan.compared_ctx == 32768
    assert plan.chosen.forecast.total <= plan.budget.total_bytes
    assert any(reason.startswith("--ctx-size max: ") for reason in plan.reasons)


def test_the_plan_says_when_an_8_bit_kv_cache_buys_a_longer_context() -> None:
    plan = ultra("h200_135gb", max_context=True)
    assert any("with --cache-type q8_0 the context could reach" in reason for reason in plan.reasons)
    eight_bit = ultra("h200_135gb", max_context=True, cache_type="q8_0")
    assert eight_bit.ctx_size > plan.ctx_size and eight_bit.quant == plan.quant
    assert not any("--cache-type q8_0" in reason for reason in eight_bit.reasons)  # already chosen


def test_plan_json_and_command_carry_the_context_and_the_cache_type() -> None:
    result = run_nemolaunch(
        "plan", "--hardware", str(HARDWARE / "h200_135gb.json"), "--ctx-size", "max", "--cache-type", "q8_0", "--json",
        env=cli_env(HF_HUB_OFFLINE="1"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["quant"], data["cache_type"]) == ("UD-IQ3_XXS", "q8_0")
    assert data["ctx_size"] == next(q["max_ctx_size"] for q in data["quants"] if q["name"] == "UD-IQ3_XXS")
    command = data["command"]
    assert command[command.index("--ctx-size") + 1] == str(data["ctx_size"])
    assert command[command.index("--cache-type-k") + 1] == command[command.index("--cache-type-v") + 1] == "q8_0"
    table = run_nemolaunch(
        "plan", "--hardware", str(HARDWARE / "h200_135gb.json"), "--ctx-size", "max",
        env=cli_env(HF_HUB_OFFLINE="1", COLUMNS="100"),
    )  # fmt: skip
    assert "max ctx" in table.stderr and "(--ctx-size max)" in table.stderr
    assert all(len(line) <= 100 for line in table.stderr.splitlines() if line.startswith(("│", "┃")))


@pytest.mark.llama
def test_serve_with_an_8_bit_kv_cache_and_the_longest_context_answers(tiny_model: Path, llama_bin_dir: Path) -> None:
    import subprocess

    from openai import OpenAI

    from conftest import free_port, nemolaunch_argv
    from test_smoke import stop_with_sigint, wait_for_health

    port = free_port()
    server = subprocess.Popen(
        nemolaunch_argv(
            "serve", str(tiny_model), "--port", str(port), "--llama-cpp", str(llama_bin_dir), "--ctx-size", "max",
            "--cache-type", "q8_0", "--", "--threads", "1",
        ),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        wait_for_health(port, server)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().decode().split("\0")
        assert cmdline[cmdline.index("--cache-type-k") + 1] == "q8_0"
        assert cmdline[cmdline.index("--ctx-size") + 1] == "4096"  # the tiny model's whole context fits
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed")
        reply = client.chat.completions.create(
            model=tiny_model.stem, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
    finally:
        stop_with_sigint(server)


def test_the_cache_type_after_dashes_is_refused(tiny_model: Path) -> None:
    result = run_nemolaunch("serve", str(tiny_model), "--dry-run", "--", "--cache-type-v", "q4_0")
    assert result.returncode == 2 and "use nemolaunch's own --cache-type" in result.stderr
