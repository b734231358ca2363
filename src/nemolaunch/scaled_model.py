"""Nemotron 3 Ultra's shape at any size: random-weight ``nemotron_h_moe`` GGUFs of 0.1 to several GB.

The tiny model proves every code path loads; speed and memory forecasts need models big enough
that reading the weights dominates. These keep the Ultra's proportions as llama.cpp sees them
(``nemolaunch.core.forecast.ULTRA_ARCHITECTURE``): blocks of nine layers, Mamba2 / latent-MoE pairs
around one attention layer; a few of many experts routed per token (the Ultra's 22 of 512, 4.3 %);
a latent MoE; Mamba2 with 128-wide states. Only the width (``n_embd``) and the block count scale.

Weights are Q8_0, llama.cpp's fast 8-bit format, written block by block straight as bytes (an fp16
scale and 32 random int8s per block) rather than quantized from floats: a 4 GB model is written in
seconds. ``weight_type`` writes the matrices as F32, F16 or Q4_0 instead (an fp16 scale and 16 bytes of
random nibbles per block of 32), for checking the speed forecast across weight types. The vocabulary,
tokenizer and chat template are the tiny model's, so llama-server answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType

from nemolaunch.tiny_model import (
    add_tokenizer,
    vocabulary,
    write_model,
)

#: The Ultra's block of nine layers (forecast.ULTRA_ARCHITECTURE): M Mamba2, E latent MoE, * attention.
ULTRA_BLOCK = "MEME*MEME"
Q8_0_BLOCK = 32
Q8_0_BYTES = 34
#: Bytes per block of 32 weights, by weight type.
BLOCK_BYTES = {"F32": 128, "F16": 64, "Q8_0": Q8_0_BYTES, "Q4_0": 18}
_GGML_TYPES = {
    "F32": GGMLQuantizationType.F32,
    "F16": GGMLQuantizationType.F16,
    "Q8_0": GGMLQuantizationType.Q8_0,
    "Q4_0": GGMLQuantizationType.Q4_0,
}
_FILE_TYPES = {
    "F32": LlamaFileType.ALL_F32,
    "F16": LlamaFileType.MOSTLY_F16,
    "Q8_0": LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": LlamaFileType.MOSTLY_Q4_0,
}
SCALED_CONTEXT_LENGTH = 32768


@dataclass(frozen=True)
class ScaledShape:
    """The dimensions of one scaled model; everything else follows the Ultra's proportions."""

    n_embd: int
    blocks: int
    n_expert: int = 128
    n_expert_used: int = 6  # 4.7 % routed, as the Ultra's 22 of 512
    weight_type: str = "Q8_0"  # or F32, F16, Q4_0

    @property
    def layers(self) -> str:
        return ULTRA_BLOCK * self.blocks

    @property
    def ssm_d_inner(self) -> int:
        return 2 * self.n_embd

    ssm_d_state = 128
    ssm_d_conv = 4
    ssm_n_group = 8
    head_dim = 128

    @property
    def ssm_n_head(self) -> int:
        return self.ssm_d_inner // 64

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_dim

    n_head_kv = 2

    @property
    def moe_latent(self) -> int:
        return self.n_embd // 4

    @property
    def n_ff_exp(self) -> int:
        return self.n_embd // 2

    @property
    def n_ff_shexp(self) -> int:
        return 2 * self.n_embd


def q8_bytes(dims: tuple[int, ...], weight_type: str = "Q8_0") -> int:
    """The size of a matrix of ``dims`` (lead..., n_out, n_in) in ``weight_type`` (Q8_0 by default)."""
    *lead, n_out, n_in = dims
    return int(np.prod(lead, dtype=np.int64)) * n_out * (n_in // Q8_0_BLOCK) * BLOCK_BYTES[weight_type]


def _matrices(shape: ScaledShape, n_vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every Q8_0 matrix: name and (lead..., n_out, n_in) in numpy's order."""
    e = shape.n_embd
    d_in_proj = 2 * shape.ssm_d_inner + 2 * shape.ssm_n_group * shape.ssm_d_state + shape.ssm_n_head
    found: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (n_vocab, e)), ("output.weight", (n_vocab, e))]
    for il, kind in enumerate(shape.layers):
        blk = f"blk.{il}"
        if kind == "M":
            # The conv weights and the small vectors stay F32 (see _fill).
            found += [(f"{blk}.ssm_in.weight", (d_in_proj, e)), (f"{blk}.ssm_out.weight", (e, shape.ssm_d_inner))]
        elif kind == "*":
            found += [
                (f"{blk}.attn_q.weight", (shape.n_head * shape.head_dim, e)),
                (f"{blk}.attn_k.weight", (shape.n_head_kv * shape.head_dim, e)),
                (f"{blk}.attn_v.weight", (shape.n_head_kv * shape.head_dim, e)),
                (f"{blk}.attn_output.weight", (e, shape.n_head * shape.head_dim)),
            ]
        else:
            latent, ff = shape.moe_latent, shape.n_ff_exp
            found += [
                (f"{blk}.ffn_latent_down.weight", (latent, e)),
                (f"{blk}.ffn_latent_up.weight", (e, latent)),
                (f"{blk}.ffn_up_exps.weight", (shape.n_expert, ff, latent)),
                (f"{blk}.ffn_down_exps.weight", (shape.n_expert, latent, ff)),
                (f"{blk}.ffn_up_shexp.weight", (shape.n_ff_shexp, e)),
                (f"{blk}.ffn_down_shexp.weight", (e, shape.n_ff_shexp)),
            ]
    return found


def weights_bytes(shape: ScaledShape, n_vocab: int | None = None) -> int:
    n_vocab = n_vocab if n_vocab is not None else len(vocabulary()[0])
    return sum(q8_bytes(dims, shape.weight_type) for _, dims in _matrices(shape, n_vocab))


def shape_for_size(target_bytes: int, *, blocks: int = 2, weight_type: str = "Q8_0") -> ScaledShape:
    """The widest shape (n_embd a multiple of 256) whose weights stay within ``target_bytes``."""
    width = 256
    while weights_bytes(ScaledShape(width + 256, blocks, weight_type=weight_type)) <= target_bytes:
        width += 256
    return ScaledShape(width, blocks, weight_type=weight_type)


def _q8_random(rng: np.random.Generator, dims: tuple[int, ...]) -> np.ndarray:
    """Random Q8_0 bytes for a matrix of ``dims`` (lead..., n_out, n_in): per block an fp16 scale, 32 int8."""
    *lead, n_out, n_in = dims
    blocks = n_in // Q8_0_BLOCK
    rows = int(np.prod(lead, dtype=np.int64)) * n_out if lead else n_out
    data = rng.integers(-127, 128, size=(rows, blocks, Q8_0_BYTES), dtype=np.int8).view(np.uint8)
    # int8 uniform on ±127 has a std of ~73: this scale makes each weight ~1/sqrt(n_in), as the
    # tiny model's floats, so activations stay O(1) through the stack.
    scale = np.array([1.0 / (73.0 * np.sqrt(n_in))], dtype=np.float16).view(np.uint8)
    data[:, :, 0:2] = scale
    return data.reshape(*lead, n_out, blocks * Q8_0_BYTES)


def _random_matrix(rng: np.random.Generator, dims: tuple[int, ...], weight_type: str) -> np.ndarray:
    """Random weights of ``dims`` in ``weight_type``, each ~1/sqrt(n_in) like the Q8_0 ones."""
    if weight_type == "Q8_0":
        return _q8_random(rng, dims)
    *lead, n_out, n_in = dims
    if weight_type in ("F32", "F16"):
        values = rng.standard_normal(size=dims, dtype=np.float32) / np.float32(np.sqrt(n_in))
        return values if weight_type == "F32" else values.astype(np.float16)
    rows = int(np.prod(lead, dtype=np.int64)) * n_out if lead else n_out
    blocks = n_in // Q8_0_BLOCK
    data = rng.integers(0, 256, size=(rows, blocks, BLOCK_BYTES["Q4_0"]), dtype=np.uint8)
    # Nibbles 0..15 less 8, std ~4.6: the scale brings each weight to ~1/sqrt(n_in).
    data[:, :, 0:2] = np.array([1.0 / (4.6 * np.sqrt(n_in))], dtype=np.float16).view(np.uint8)
    return data.reshape(*lead, n_out, blocks * BLOCK_BYTES["Q4_0"])


def _add_matrix(writer: GGUFWriter, name: str, data: np.ndarray, weight_type: str) -> None:
    if weight_type in ("F32", "F16"):
        writer.add_tensor(name, data)  # numpy's dtype says the type
    else:
        writer.add_tensor(name, data, raw_dtype=_GGML_TYPES[weight_type])


def _f32(rng: np.random.Generator, *shape: int, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, shape).astype(np.float32)


def write_scaled_model(path: Path, shape: ScaledShape, *, seed: int = 0) -> Path:
    """Write a scaled Ultra-shaped model to ``path`` (atomically, like the tiny model)."""
    return write_model(path, lambda writer: _fill(writer, shape, seed))


def _fill(writer: GGUFWriter, shape: ScaledShape, seed: int) -> None:
    tokens, types, merges = vocabulary()
    layers = shape.layers
    writer.add_name(f"nemolaunch-scaled-nemotron3-{shape.n_embd}x{len(layers)}")
    writer.add_file_type(int(_FILE_TYPES[shape.weight_type]))
    writer.add_context_length(SCALED_CONTEXT_LENGTH)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(len(layers))
    writer.add_feed_forward_length([shape.n_ff_exp if kind == "E" else 0 for kind in layers])
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv([shape.n_head_kv if kind == "*" else 0 for kind in layers])
    writer.add_key_length(shape.head_dim)
    writer.add_value_length(shape.head_dim)
    writer.add_layer_norm_eps(1e-5)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_ssm_conv_kernel(shape.ssm_d_conv)
    writer.add_ssm_inner_size(shape.ssm_d_inner)
    writer.add_ssm_state_size(shape.ssm_d_state)
    writer.add_ssm_time_step_rank(shape.ssm_n_head)
    writer.add_ssm_group_count(shape.ssm_n_group)
    writer.add_expert_count(shape.n_expert)
    writer.add_expert_used_count(shape.n_expert_used)
    writer.add_expert_feed_forward_length(shape.n_ff_exp)
    writer.add_expert_shared_feed_forward_length(shape.n_ff_shexp)
    writer.add_expert_shared_count(1)
    writer.add_expert_weights_norm(True)
    writer.add_expert_weights_scale(2.5)
    writer.add_moe_latent_size(shape.moe_latent)
    add_tokenizer(writer, tokens, types, merges)

    rng = np.random.default_rng(seed)
    e = shape.n_embd
    conv_dim = shape.ssm_d_inner + 2 * shape.ssm_n_group * shape.ssm_d_state
    ones = np.ones(e, dtype=np.float32)
    matrices = dict(_matrices(shape, len(tokens)))
    kind_of = shape.weight_type
    _add_matrix(writer, "token_embd.weight", _random_matrix(rng, matrices["token_embd.weight"], kind_of), kind_of)
    writer.add_tensor("output_norm.weight", ones)
    _add_matrix(writer, "output.weight", _random_matrix(rng, matrices["output.weight"], kind_of), kind_of)
    for il, kind in enumerate(layers):
        blk = f"blk.{il}"
        writer.add_tensor(f"{blk}.attn_norm.weight", ones)
        if kind == "M":
            writer.add_tensor(f"{blk}.ssm_conv1d.weight", _f32(rng, conv_dim, shape.ssm_d_conv, low=-0.5, high=0.5))
            writer.add_tensor(f"{blk}.ssm_conv1d.bias", _f32(rng, conv_dim, low=-0.02, high=0.02))
            writer.add_tensor(f"{blk}.ssm_dt.bias", _f32(rng, shape.ssm_n_head, low=-4.0, high=-2.0))
            writer.add_tensor(f"{blk}.ssm_a", -_f32(rng, shape.ssm_n_head, 1, low=1.0, high=16.0))
            writer.add_tensor(f"{blk}.ssm_d", np.ones((shape.ssm_n_head, 1), dtype=np.float32))
            group = shape.ssm_d_inner // shape.ssm_n_group
            writer.add_tensor(f"{blk}.ssm_norm.weight", np.ones((shape.ssm_n_group, group), dtype=np.float32))
        elif kind == "E":
            writer.add_tensor(f"{blk}.ffn_gate_inp.weight", _f32(rng, shape.n_expert, e, low=-0.05, high=0.05))
            writer.add_tensor(f"{blk}.exp_probs_b.bias", np.zeros(shape.n_expert, dtype=np.float32))
        for name, dims in matrices.items():
            if name.startswith(f"{blk}."):
                _add_matrix(writer, name, _random_matrix(rng, dims, kind_of), kind_of)
