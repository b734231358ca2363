"""GGUF files that are all header: a nemotron_h_moe model's keys and one small tensor, written with the
``gguf`` package, for the header adapter's tests and the header benchmark (benchmarks/header_read.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter

#: Mamba2 (M), MoE (E) and attention (*) layers, interleaved as the Nemotron 3 models do.
PATTERN = "MEM*EMEM*E"


def write_nemotron_gguf(
    path: Path,
    *,
    arch: str = "nemotron_h_moe",
    with_ssm: bool = True,
    chat_template: str | None = None,
    vocab: int = 300,
    merges: int = 0,
) -> Path:
    """``vocab`` tokens; with ``merges``, a BPE tokenizer's token types and merges as well (the Nemotron 3
    family's: 131,072 tokens and ~260,000 merges, an 8.4 MB header)."""
    writer = GGUFWriter(path, arch)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_block_count(len(PATTERN))
    writer.add_context_length(262_144)
    writer.add_embedding_length(2688)
    writer.add_head_count(32)
    writer.add_head_count_kv([2 if kind == "*" else 0 for kind in PATTERN])
    writer.add_feed_forward_length([1856 if kind == "E" else 0 for kind in PATTERN])
    writer.add_key_length(128)
    writer.add_value_length(128)
    if with_ssm:
        writer.add_ssm_conv_kernel(4)
        writer.add_ssm_inner_size(4096)
        writer.add_ssm_state_size(128)
        writer.add_ssm_group_count(8)
        writer.add_ssm_time_step_rank(64)
    writer.add_expert_count(128)
    writer.add_expert_used_count(6)
    writer.add_token_list([f"t{index}" for index in range(vocab)])
    if merges:
        writer.add_token_types([1] * vocab)
        writer.add_token_merges([f"a{index} b{index}" for index in range(merges)])
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
