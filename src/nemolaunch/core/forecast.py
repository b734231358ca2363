"""How much memory llama-server needs for a quant at a context size, with the reasons.

total = weights + kv + recurrent + compute + runtime + margin, where

* weights   = the GGUF files' total size: llama.cpp loads tensors as stored.
* kv        = ctx_size × Σ over attention layers of n_head_kv(l) × (key_length + value_length)
              × bytes per cache element (2 for the default f16 cache). Only the
              few attention layers keep a KV cache; Mamba2 and MoE layers keep none.
* recurrent = parallel sequences × Σ over Mamba2 layers of 4 bytes ×
              [(d_conv − 1) × (d_inner + 2 × n_group × d_state)   (conv state)
               + d_state × d_inner]                                (SSM state)
              llama.cpp keeps both states in f32, one set per sequence, whatever
              the context size.
* compute   = compute devices (GPUs, RPC worker devices, the CPU) × n_ubatch × (n_vocab + 16 × n_embd) × 4 bytes
              + ctx_size × n_ubatch × 2 bytes (attention's f16 mask over the cached positions):
              each backend (every GPU, and the CPU that runs spilled experts)
              reserves its own graph buffer, sized for a full micro-batch of
              logits (n_ubatch × n_vocab floats) plus the activations of the widest
              layers (a heuristic 16 × n_embd floats per token).
* runtime   = llama-server's own footprint (code, tokenizer, HTTP server, prompt
              cache bookkeeping): peak RSS minus the buffers llama.cpp reports,
              measured on the tiny model by benchmarks/forecast_vs_rss.py;
              + an rpc-server's footprint per RPC worker.
* margin    = 5 % of the above (allocator rounding, estimate error)
              + 1 GiB (long prompts' host buffers, page cache pressure, what the estimate misses)
              + 512 MiB per CUDA GPU (the CUDA context and cuBLAS workspace,
              which NVML's free memory does not yet account for).

When a model's architecture is unknown (no GGUF header at hand and no built-in
facts) the KV cache and recurrent state cannot be counted: compute is taken as
1 GiB per device and the proportional margin rises to 10 %. The breakdown says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from nemolaunch import ULTRA_REPO
from nemolaunch.core.launch import DEFAULT_CTX_SIZE
from nemolaunch.errors import ContextSizeNotPositive, ContextSizeTooLarge

GiB = 1024**3
MiB = 1024**2

DEFAULT_UBATCH = 512  # llama.cpp's default --ubatch-size
RECURRENT_STATE_BYTES = 4  # llama.cpp keeps Mamba conv and SSM states in f32
COMPUTE_ACTIVATION_WIDTH = 16  # activations per token, in multiples of n_embd (heuristic)
UNKNOWN_COMPUTE_PER_DEVICE = 1 * GiB
KQ_MASK_BYTES = 2  # f16
RUNTIME_BYTES = 18 * MiB  # see benchmarks/forecast_vs_rss.py
MARGIN_FRACTION = 0.05
UNKNOWN_ARCHITECTURE_MARGIN_FRACTION = 0.10
MARGIN_FIXED_BYTES = 1 * GiB
CUDA_CONTEXT_BYTES = 512 * MiB
#: An rpc-server's own footprint beside the tensors it holds (code, backend, the connection's buffers).
RPC_SERVER_RUNTIME_BYTES = 64 * MiB

#: Bytes per KV-cache element for llama.cpp's --cache-type-k/-v values
#: (quantized types carry a block scale: q8_0 is 34 bytes per 32 values).
KV_CACHE_BYTES_PER_ELEMENT: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}

LayerKind = Literal["attention", "recurrent", "feed_forward"]


@dataclass(frozen=True)
class ArchitectureFacts:
    """What the memory forecast needs from a model's GGUF header."""

    architecture: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    layer_kinds: tuple[LayerKind, ...]
    n_head_kv: tuple[int, ...]  # per layer; 0 where a layer has no attention
    key_length: int
    value_length: int
    ssm_d_conv: int = 0
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_n_group: int = 0
    ssm_n_head: int = 0
    expert_count: int = 0
    expert_used_count: int = 0
    source: Literal["header", "builtin"] = "header"

    @property
    def attention_layers(self) -> int:
        return self.layer_kinds.count("attention")

    @property
    def recurrent_layers(self) -> int:
        return self.layer_kinds.count("recurrent")

    def kv_bytes_per_token(self, cache_type: str = "f16") -> int:
        elements = sum(
            heads * (self.key_length + self.value_length)
            for heads, kind in zip(self.n_head_kv, self.layer_kinds, strict=True)
            if kind == "attention"
        )
        return round(elements * KV_CACHE_BYTES_PER_ELEMENT[cache_type])

    def recurrent_bytes_per_sequence(self) -> int:
        conv = max(self.ssm_d_conv - 1, 0) * (self.ssm_d_inner + 2 * self.ssm_n_group * self.ssm_d_state)
        ssm = self.ssm_d_state * self.ssm_d_inner
        return self.recurrent_layers * (conv + ssm) * RECURRENT_STATE_BYTES


def _layer_values(value: object, n_layer: int, key: str) -> tuple[int, ...]:
    # Hybrid models store per-layer arrays; uniform models a single number.
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(int(item) for item in value)
        if len(values) != n_layer:
            raise ValueError(f"{key} has {len(values)} entries for {n_layer} layers")
        return values
    if isinstance(value, int | float):
        return (int(value),) * n_layer
    raise ValueError(f"{key} is missing")


def architecture_from_metadata(metadata: Mapping[str, object], *, token_count: int | None = None) -> ArchitectureFacts:
    """Architecture facts from a GGUF header's key/value pairs (as the gguf reader returns them).

    Layer kinds follow llama.cpp: a layer with KV heads is attention; in a model
    with SSM keys, a layer with neither KV heads nor a feed-forward length is a
    Mamba2 layer (nemotron_h: Mamba2, MoE and attention are separate layers).
    Raises ValueError naming the missing key when the header lacks one.
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError("general.architecture is missing")

    def number(suffix: str, default: int | None = None) -> int:
        value = metadata.get(f"{arch}.{suffix}")
        if isinstance(value, int | float):
            return int(value)
        if default is not None:
            return default
        raise ValueError(f"{arch}.{suffix} is missing")

    n_layer = number("block_count")
    n_embd = number("embedding_length")
    has_ssm = f"{arch}.ssm.inner_size" in metadata
    # Without head_count_kv llama.cpp takes head_count (no GQA); a pure SSM
    # model has neither, and no attention at all.
    kv_heads = metadata.get(f"{arch}.attention.head_count_kv", metadata.get(f"{arch}.attention.head_count"))
    if kv_heads is None and has_ssm:
        kv_heads = 0
    n_head_kv = _layer_values(kv_heads, n_layer, f"{arch}.attention.head_count_kv")
    n_ff_raw = metadata.get(f"{arch}.feed_forward_length")
    n_ff = _layer_values(n_ff_raw, n_layer, f"{arch}.feed_forward_length") if n_ff_raw is not None else None
    head_count = _layer_values(metadata.get(f"{arch}.attention.head_count", 0), n_layer, "head_count")
    default_head_dim = n_embd // max(max(head_count), 1)

    kinds: list[LayerKind] = []
    for layer in range(n_layer):
        if n_head_kv[layer] > 0:
            kinds.append("attention")
        elif has_ssm and (n_ff is None or n_ff[layer] == 0 or not arch.startswith("nemotron_h")):
            kinds.append("recurrent")
        else:
            kinds.append("feed_forward")

    vocab = metadata.get(f"{arch}.vocab_size")
    n_vocab = int(vocab) if isinstance(vocab, int) else (token_count or 0)
    return ArchitectureFacts(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_ctx_train=number("context_length"),
        layer_kinds=tuple(kinds),
        n_head_kv=n_head_kv,
        key_length=number("attention.key_length", default_head_dim),
        value_length=number("attention.value_length", default_head_dim),
        ssm_d_conv=number("ssm.conv_kernel", 0),
        ssm_d_inner=number("ssm.inner_size", 0),
        ssm_d_state=number("ssm.state_size", 0),
        ssm_n_group=number("ssm.group_count", 0),
        ssm_n_head=number("ssm.time_step_rank", 0),
        expert_count=number("expert_count", 0),
        expert_used_count=number("expert_used_count", 0),
        source="header",
    )


def _ultra_layer_kinds() -> tuple[LayerKind, ...]:
    # 108 layers in 12 blocks of nine: Mamba2/MoE pairs with one attention layer
    # in the middle of each block (48 Mamba2, 48 MoE, 12 attention).
    block: tuple[LayerKind, ...] = (
        "recurrent", "feed_forward", "recurrent", "feed_forward", "attention",
        "recurrent", "feed_forward", "recurrent", "feed_forward",
    )  # fmt: skip
    return block * 12


_ULTRA_KINDS = _ultra_layer_kinds()

#: Nemotron 3 Ultra's facts for when no GGUF header is at hand. APPROXIMATE:
#: the layer mix, head counts and SSM sizes follow the Nemotron 3 family's
#: published design (Mamba2 + latent MoE + a few GQA attention layers, 512
#: experts with 22 active, 1M context) and are chosen to err high on the KV
#: cache. A real header, once the first shard is local, replaces them.
ULTRA_ARCHITECTURE = ArchitectureFacts(
    architecture="nemotron_h_moe",
    n_layer=len(_ULTRA_KINDS),
    n_embd=8192,
    n_vocab=131072,
    n_ctx_train=1_048_576,
    layer_kinds=_ULTRA_KINDS,
    n_head_kv=tuple(8 if kind == "attention" else 0 for kind in _ULTRA_KINDS),
    key_length=128,
    value_length=128,
    ssm_d_conv=4,
    ssm_d_inner=16384,
    ssm_d_state=128,
    ssm_n_group=8,
    ssm_n_head=256,
    expert_count=512,
    expert_used_count=22,
    source="builtin",
)


def builtin_architecture(repo: str) -> ArchitectureFacts | None:
    """Built-in facts for the Ultra; None for any other repository."""
    return ULTRA_ARCHITECTURE if repo.lower() == ULTRA_REPO.lower() else None


def validate_ctx_size(ctx_size: int, architecture: ArchitectureFacts | None) -> None:
    if ctx_size <= 0:
        raise ContextSizeNotPositive(ctx_size=ctx_size)
    if architecture is not None and ctx_size > architecture.n_ctx_train:
        raise ContextSizeTooLarge(ctx_size=ctx_size, maximum=architecture.n_ctx_train)


@dataclass(frozen=True)
class Forecast:
    """The memory a launch needs, item by item, in bytes."""

    weights: int
    kv: int
    recurrent: int
    compute: int
    runtime: int
    margin: int
    notes: tuple[str, ...] = ()

    @property
    def predicted(self) -> int:
        """What llama-server is expected to use: everything but the safety margin."""
        return self.weights + self.kv + self.recurrent + self.compute + self.runtime

    @property
    def total(self) -> int:
        return self.predicted + self.margin

    def breakdown(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "kv": self.kv,
            "recurrent": self.recurrent,
            "compute": self.compute,
            "runtime": self.runtime,
            "margin": self.margin,
            "total": self.total,
        }


def forecast_memory(
    weights_bytes: int,
    architecture: ArchitectureFacts | None,
    *,
    ctx_size: int = DEFAULT_CTX_SIZE,
    parallel: int = 1,
    gpu_devices: int = 0,
    cuda_devices: int = 0,
    cache_type: str = "f16",
    ubatch: int = DEFAULT_UBATCH,
    rpc_devices: int = 0,
    rpc_workers: int = 0,
) -> Forecast:
    """The forecast for one quant (see the module docstring for the formula).

    ``gpu_devices`` is how many GPUs get a share of the model (each adds a
    compute buffer), ``cuda_devices`` how many of them are CUDA (each adds a
    context); the CPU always counts as one more compute device. Over RPC,
    each worker device reserves a compute buffer of its own too, and each
    worker's rpc-server adds its footprint to the runtime.
    """
    devices = gpu_devices + rpc_devices + 1
    notes: list[str] = []
    if architecture is None:
        kv = 0
        recurrent = 0
        compute = devices * UNKNOWN_COMPUTE_PER_DEVICE
        fraction = UNKNOWN_ARCHITECTURE_MARGIN_FRACTION
        notes.append(f"architecture unknown: KV cache and recurrent state not counted, margin raised to {fraction:.0%}")
    else:
        kv = ctx_size * architecture.kv_bytes_per_token(cache_type)
        recurrent = parallel * architecture.recurrent_bytes_per_sequence()
        compute = devices * ubatch * (architecture.n_vocab + COMPUTE_ACTIVATION_WIDTH * architecture.n_embd) * 4
        if architecture.attention_layers:
            # Attention reads a mask of every cached position for every token of the micro-batch
            # (llama.cpp's kq_mask, f16): it grows with the context, 1 GiB at 1M tokens (measured here:
            # the compute buffer grew by exactly this, 28 MiB from 4,096 to 32,768 tokens).
            compute += ctx_size * ubatch * KQ_MASK_BYTES
        fraction = MARGIN_FRACTION
        if architecture.source == "builtin":
            notes.append("architecture from built-in figures (approximate), not a GGUF header")
    runtime = RUNTIME_BYTES + rpc_workers * RPC_SERVER_RUNTIME_BYTES
    subtotal = weights_bytes + kv + recurrent + compute + runtime
    margin = round(subtotal * fraction) + MARGIN_FIXED_BYTES + cuda_devices * CUDA_CONTEXT_BYTES
    return Forecast(
        weights=weights_bytes,
        kv=kv,
        recurrent=recurrent,
        compute=compute,
        runtime=runtime,
        margin=margin,
        notes=tuple(notes),
    )
