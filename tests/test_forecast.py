"""The memory forecast: hand-computed arithmetic, the architecture facts, and the GGUF header reader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from gguf_headers import PATTERN, write_nemotron_gguf
from nemolaunch import ULTRA_REPO
from nemolaunch.adapters.gguf_header import read_architecture, read_gguf_header, read_weight_facts
from nemolaunch.core.forecast import (
    ULTRA_ARCHITECTURE,
    ArchitectureFacts,
    architecture_from_metadata,
    builtin_architecture,
    forecast_memory,
    validate_ctx_size,
)
from nemolaunch.errors import (
    EXIT_USAGE,
    ContextSizeNotPositive,
    ContextSizeTooLarge,
    ModelFileMissing,
    NotGGUF,
    TruncatedGGUF,
    describe,
)

GiB = 1024**3
MiB = 1024**2


# --- the built-in Ultra facts --------------------------------------------------------------
def test_ultra_layer_mix() -> None:
    ultra = ULTRA_ARCHITECTURE
    assert (ultra.n_layer, ultra.attention_layers, ultra.recurrent_layers) == (108, 12, 48)
    assert ultra.layer_kinds.count("feed_forward") == 48
    assert ultra.n_ctx_train == 1_048_576
    assert (ultra.expert_count, ultra.expert_used_count) == (512, 22)
    assert builtin_architecture(ULTRA_REPO) is ultra
    assert builtin_architecture("unsloth/Nemotron-3-Nano-30B-A3B-GGUF") is None


def test_kv_cache_counts_attention_layers_only() -> None:
    # 12 attention layers × 8 KV heads × (128 + 128) dims × 2 bytes (f16)
    assert ULTRA_ARCHITECTURE.kv_bytes_per_token() == 12 * 8 * 256 * 2 == 49_152
    # q8_0 stores 32 values in 34 bytes
    assert ULTRA_ARCHITECTURE.kv_bytes_per_token("q8_0") == 26_112


def test_mamba_state_per_sequence() -> None:
    # conv: (4 − 1) × (16384 + 2 × 8 × 128) = 55 296 floats; ssm: 128 × 16384 = 2 097 152 floats
    # (55 296 + 2 097 152) × 4 bytes × 48 Mamba2 layers
    assert ULTRA_ARCHITECTURE.recurrent_bytes_per_sequence() == 413_270_016


def test_forecast_for_ultra_q4_on_one_cuda_gpu() -> None:
    forecast = forecast_memory(298_750_000_000, ULTRA_ARCHITECTURE, ctx_size=32768, gpu_devices=1, cuda_devices=1)
    assert forecast.weights == 298_750_000_000
    assert forecast.kv == 32768 * 49_152 == 1_610_612_736
    assert forecast.recurrent == 413_270_016
    # 2 devices (GPU + CPU) × 512 tokens × (131072 vocab + 16 × 8192) × 4 bytes,
    # and attention's f16 mask over every cached position for each token of the micro-batch.
    assert forecast.compute == 2 * 512 * 262_144 * 4 + 32768 * 512 * 2 == 1_107_296_256
    assert forecast.runtime == 18 * MiB  # llama-server itself, measured by benchmarks/forecast_vs_rss.py
    # 5 % of 301_900_053_376 (rounded) + 1 GiB + 512 MiB for the CUDA context
    assert forecast.margin == 15_095_002_669 + GiB + 512 * MiB == 16_705_615_405
    assert forecast.total == 318_605_668_781
    assert forecast.breakdown() == {
        "weights": 298_750_000_000,
        "kv": 1_610_612_736,
        "recurrent": 413_270_016,
        "compute": 1_107_296_256,
        "runtime": 18 * MiB,
        "margin": 16_705_615_405,
        "total": 318_605_668_781,
    }
    assert forecast.notes == ("architecture from built-in figures (approximate), not a GGUF header",)


def test_forecast_on_a_cpu_with_four_slots_and_a_long_context() -> None:
    forecast = forecast_memory(100_000_000_000, ULTRA_ARCHITECTURE, ctx_size=262_144, parallel=4)
    assert forecast.kv == 262_144 * 49_152 == 12_884_901_888
    assert forecast.recurrent == 4 * 413_270_016
    assert forecast.compute == 536_870_912 + 262_144 * 512 * 2  # the CPU alone, and the attention mask
    subtotal = 100_000_000_000 + 12_884_901_888 + 1_653_080_064 + 805_306_368 + 18 * MiB
    assert forecast.margin == round(subtotal * 0.05) + GiB
    assert forecast.total == subtotal + round(subtotal * 0.05) + GiB


def test_forecast_without_architecture_uses_the_rough_rule() -> None:
    forecast = forecast_memory(50_000_000_000, None, gpu_devices=2, cuda_devices=2)
    assert (forecast.kv, forecast.recurrent) == (0, 0)
    assert forecast.compute == 3 * GiB
    assert forecast.margin == round((50_000_000_000 + 3 * GiB + 18 * MiB) * 0.10) + GiB + 2 * 512 * MiB
    assert "architecture unknown" in forecast.notes[0]


# --- ctx size -------------------------------------------------------------------------------
@pytest.mark.parametrize("ctx_size", [0, -1])
def test_ctx_size_must_be_positive(ctx_size: int) -> None:
    with pytest.raises(ContextSizeNotPositive) as caught:
        validate_ctx_size(ctx_size, ULTRA_ARCHITECTURE)
    code, message = describe(caught.value)
    assert code == EXIT_USAGE
    assert message == f"--ctx-size {ctx_size} is not valid: use a positive number of tokens"


def test_ctx_size_above_the_trained_context() -> None:
    validate_ctx_size(1_048_576, ULTRA_ARCHITECTURE)
    with pytest.raises(ContextSizeTooLarge) as caught:
        validate_ctx_size(1_048_577, ULTRA_ARCHITECTURE)
    assert caught.value.maximum == 1_048_576
    code, message = describe(caught.value)
    assert code == EXIT_USAGE
    assert "maximum of 1048576 tokens" in message


def test_ctx_size_is_unbounded_when_the_architecture_is_unknown() -> None:
    validate_ctx_size(10_000_000, None)


# --- architecture facts from header values --------------------------------------------------------
# A small nemotron_h_moe header as llama.cpp's converter writes it: per-layer
# head_count_kv (attention layers only) and feed_forward_length (MoE layers only).
NEMOTRON_METADATA: dict[str, object] = {
    "general.architecture": "nemotron_h_moe",
    "nemotron_h_moe.block_count": len(PATTERN),
    "nemotron_h_moe.context_length": 262_144,
    "nemotron_h_moe.embedding_length": 2688,
    "nemotron_h_moe.attention.head_count": 32,
    "nemotron_h_moe.attention.head_count_kv": [2 if kind == "*" else 0 for kind in PATTERN],
    "nemotron_h_moe.feed_forward_length": [1856 if kind == "E" else 0 for kind in PATTERN],
    "nemotron_h_moe.attention.key_length": 128,
    "nemotron_h_moe.attention.value_length": 128,
    "nemotron_h_moe.ssm.conv_kernel": 4,
    "nemotron_h_moe.ssm.inner_size": 4096,
    "nemotron_h_moe.ssm.state_size": 128,
    "nemotron_h_moe.ssm.group_count": 8,
    "nemotron_h_moe.ssm.time_step_rank": 64,
    "nemotron_h_moe.expert_count": 128,
    "nemotron_h_moe.expert_used_count": 6,
}
KINDS = {"M": "recurrent", "E": "feed_forward", "*": "attention"}


def test_architecture_from_nemotron_metadata() -> None:
    facts = architecture_from_metadata(NEMOTRON_METADATA, token_count=131_072)
    assert facts.layer_kinds == tuple(KINDS[kind] for kind in PATTERN)
    assert (facts.attention_layers, facts.recurrent_layers) == (2, 4)
    assert facts.n_vocab == 131_072
    assert facts.n_ctx_train == 262_144
    assert (facts.expert_count, facts.expert_used_count, facts.ssm_n_head) == (128, 6, 64)
    assert facts.source == "header"
    # 2 layers × 2 heads × 256 × 2 bytes
    assert facts.kv_bytes_per_token() == 2_048
    # 4 layers × 4 bytes × [3 × (4096 + 2 × 8 × 128) + 128 × 4096]
    assert facts.recurrent_bytes_per_sequence() == 4 * 4 * (3 * 6144 + 524_288)


def test_architecture_of_a_plain_transformer() -> None:
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": 32,
        "llama.context_length": 131_072,
        "llama.embedding_length": 4096,
        "llama.attention.head_count": 32,
        "llama.attention.head_count_kv": 8,
        "llama.feed_forward_length": 14336,
        "llama.vocab_size": 128_256,
    }
    facts = architecture_from_metadata(metadata)
    assert facts.attention_layers == 32
    assert facts.recurrent_layers == 0
    assert (facts.key_length, facts.value_length) == (128, 128)  # n_embd / n_head
    assert facts.n_vocab == 128_256
    assert facts.kv_bytes_per_token() == 32 * 8 * 256 * 2


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("general.architecture", "general.architecture is missing"),
        ("nemotron_h_moe.block_count", "nemotron_h_moe.block_count is missing"),
        ("nemotron_h_moe.context_length", "nemotron_h_moe.context_length is missing"),
    ],
)
def test_missing_header_key_is_named(drop: str, message: str) -> None:
    metadata = {key: value for key, value in NEMOTRON_METADATA.items() if key != drop}
    with pytest.raises(ValueError, match=message):
        architecture_from_metadata(metadata)


def test_per_layer_array_of_the_wrong_length_is_rejected() -> None:
    metadata = {**NEMOTRON_METADATA, "nemotron_h_moe.feed_forward_length": [0, 1856]}
    with pytest.raises(ValueError, match="feed_forward_length has 2 entries for 10 layers"):
        architecture_from_metadata(metadata)


# --- the GGUF header adapter, on real files ------------------------------------------------------
def test_read_architecture_from_a_gguf_file(tmp_path: Path) -> None:
    facts = read_architecture(write_nemotron_gguf(tmp_path / "m.gguf"))
    assert facts == ArchitectureFacts(
        architecture="nemotron_h_moe",
        n_layer=10,
        n_embd=2688,
        n_vocab=300,
        n_ctx_train=262_144,
        layer_kinds=tuple(KINDS[kind] for kind in PATTERN),  # type: ignore[misc]
        n_head_kv=(0, 0, 0, 2, 0, 0, 0, 0, 2, 0),
        key_length=128,
        value_length=128,
        ssm_d_conv=4,
        ssm_d_inner=4096,
        ssm_d_state=128,
        ssm_n_group=8,
        ssm_n_head=64,
        expert_count=128,
        expert_used_count=6,
        source="header",
    )


def test_header_keeps_only_architecture_keys(tmp_path: Path) -> None:
    header = read_gguf_header(write_nemotron_gguf(tmp_path / "m.gguf"))
    assert header.token_count == 300
    assert header.metadata["general.architecture"] == "nemotron_h_moe"
    assert header.metadata["nemotron_h_moe.attention.head_count_kv"] == [0, 0, 0, 2, 0, 0, 0, 0, 2, 0]
    assert all(key.startswith(("nemotron_h_moe.", "general.architecture")) for key in header.metadata)


def test_header_without_what_the_forecast_needs_gives_none(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    writer = GGUFWriter(path, "llama")
    writer.add_embedding_length(64)
    writer.add_tensor("w", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert read_architecture(path) is None


def test_header_reader_rejects_what_is_not_a_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelFileMissing):
        read_gguf_header(tmp_path / "absent.gguf")
    html = tmp_path / "error.gguf"
    html.write_bytes(b"<!DOCTYPE html>")
    with pytest.raises(NotGGUF) as caught:
        read_gguf_header(html)
    assert caught.value.magic == b"<!DO"


def test_header_reader_reports_a_truncated_file(tmp_path: Path) -> None:
    whole = write_nemotron_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[:200])
    with pytest.raises(TruncatedGGUF):
        read_gguf_header(cut)


def test_weight_facts_of_an_unchanged_file_come_from_the_header_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan or launch of the same model parses its header once: the gguf reader takes seconds over a real
    vocabulary (benchmarks/header_read.py), and a plan needs the tensor table as well as the keys."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write_nemotron_gguf(tmp_path / "m.gguf")
    first = read_weight_facts((path,))
    assert (first.parameters, first.weights_bytes, first.expert_count) == (16, 64, 128)  # output_norm: 16 f32
    # Same size and modification time, the magic kept, every other byte zero: only the cache still knows.
    info = path.stat()
    path.write_bytes(b"GGUF" + bytes(info.st_size - 4))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert read_weight_facts((path,)) == first
    os.utime(path)  # changed: read again, and the zeros are no header
    with pytest.raises(TruncatedGGUF):
        read_weight_facts((path,))


def test_a_cache_entry_without_tensor_totals_is_read_again_and_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nemolaunch.adapters import header_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = write_nemotron_gguf(tmp_path / "m.gguf")
    entry = header_cache.entry(header_cache.local_key(path))
    header_cache.save(entry, read_gguf_header(path).to_entry())
    raw = json.loads(entry.read_text())
    entry.write_text(json.dumps({"metadata": raw["metadata"], "token_count": raw["token_count"]}))  # an older entry
    assert read_weight_facts((path,)).weights_bytes == 64
    assert json.loads(entry.read_text())["tensors"] == {"parameters": 16, "weights_bytes": 64, "expert_bytes": 0}
