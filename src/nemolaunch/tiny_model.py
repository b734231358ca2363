"""A tiny random-weight Nemotron 3 (``nemotron_h_moe``) GGUF for demos and CI smoke tests.

The real Nemotron 3 Ultra is hundreds of GB; this model is under 2 MB yet has the same
shape of everything llama.cpp has to load for it: a hybrid stack of Mamba2, attention and
latent-MoE layers, a byte-level BPE tokenizer with the Nemotron chat special tokens, and
NVIDIA's real Nemotron 3 chat template (the one that opens a ``<think>`` block, so
llama-server's reasoning parser is exercised too).

The weights are random, so what it says is gibberish; what matters is that llama-server
and llama-cli load it, template a conversation, generate and stop as they do for the real
model. One planted logit bias (see ``_BIAS_CHANNEL``) keeps the gibberish printable and
makes replies end on their own. Everything here follows llama.cpp's own loader
(``src/models/nemotron-h.cpp``, ``src/llama-vocab.cpp``), not the Hugging Face config.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

#: llama.cpp's name for the architecture of every Nemotron 3 model (Nano, Super, Ultra).
TINY_MODEL_ARCH = "nemotron_h_moe"
#: ``general.name`` of the tiny model; llama-server prints it when it loads the file.
TINY_MODEL_NAME = "nemolaunch-tiny-nemotron3"
#: The file name the app stores the tiny model under.
TINY_MODEL_FILENAME = f"{TINY_MODEL_NAME}.gguf"
#: Training context length written to ``nemotron_h_moe.context_length``. The model has no
#: RoPE, so this is only the default llama-server uses for ``-c 0``; it is kept small
#: so that default costs next to no memory (a few MB of KV cache at most).
TINY_MODEL_CONTEXT_LENGTH = 4096

#: Per-layer kinds, in order: "M" Mamba2, "*" attention, "E" latent MoE (the letters of
#: Nemotron's ``hybrid_override_pattern``). Like the real model, an MoE block follows each
#: mixer block; one of each kind is all llama.cpp needs to exercise every code path.
TINY_MODEL_LAYER_PATTERN = "ME*E"

# The chat special tokens, in vocabulary order from id 0. ``<|im_end|>`` ends a turn, so
# it is both EOS and EOT: generation must stop on it. ``</s>`` is kept because llama.cpp
# marks any token spelled like that as end-of-generation, as in the real vocabulary.
UNK_TOKEN = "<unk>"
BOS_TOKEN = "<s>"
EOS_TEXT_TOKEN = "</s>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_START = "<think>"
THINK_END = "</think>"
SPECIAL_TOKENS: tuple[str, ...] = (
    UNK_TOKEN,
    BOS_TOKEN,
    EOS_TEXT_TOKEN,
    IM_START,
    IM_END,
    THINK_START,
    THINK_END,
)

# Model dimensions. They are chosen so every op also has a kernel on CUDA, not only on
# the CPU (the smoke tests may run on a GPU build): the Mamba2 scan kernel needs
# d_state in {96, 128, 256} and a head size that is a multiple of 16, the conv kernel
# needs its channel count (d_inner + 2*n_group*d_state) to be a multiple of 128, and a
# 64-wide attention head is one every flash-attention backend supports.
_N_EMBD = 128
_N_HEAD = 2  # attention query heads
_N_HEAD_KV = 1  # grouped-query attention, as in the real model
_HEAD_DIM = 64
_SSM_D_CONV = 4
_SSM_D_INNER = 128
_SSM_D_STATE = 128
_SSM_N_HEAD = 4  # Mamba2 heads (ssm.time_step_rank); head size 128/4 = 32
_SSM_N_GROUP = 2  # 128 + 2*2*128 = 640 conv channels = 5 * 128
_N_EXPERT = 4
_N_EXPERT_USED = 2
_N_FF_EXP = 96  # routed expert width; unlike the latent width, so a swapped axis fails to load
_N_FF_SHEXP = 128  # shared expert width
_MOE_LATENT = 64  # the latent MoE width (Ultra's feature): experts work in this space
_EXPERT_WEIGHTS_SCALE = 2.5  # routed_scaling_factor of the real Nemotron 3 models
_NORM_EPS = 1e-5

# The one non-random part of the model, a constant "bias channel". With purely random
# logits a model emits NUL bytes and broken UTF-8, and picks <|im_end|> about once in
# n_vocab tokens, so each reply is unreadable and runs to max_tokens. Instead, channel 0
# of the residual stream holds a constant: every token embedding has _BIAS_VALUE there and
# no layer writes to it (row 0 of every projection into the residual stream is zero).
# After the final RMS norm it is a positive input of the LM head, so column 0 of
# output.weight acts as a per-token logit bias: printable ASCII is favoured (and sampling's
# min-p then drops the other bytes), </think> and <|im_end|> are likely enough to close the
# reasoning and then the reply after some tens of tokens, and the other special tokens are
# suppressed. What it says is still random, but it is text and it ends.
# The normed channel is about 4, so a bias of 1.0 is about +4 in logits. The values were
# tuned against llama-server's default sampling: replies end with finish_reason "stop"
# after roughly 10 to 300 tokens, and most close the think block first.
_BIAS_CHANNEL = 0
_BIAS_VALUE = 8.0
_BIAS_PRINTABLE = 1.5  # printable ASCII tokens (and the merges, all ASCII)
_BIAS_NEWLINE = 1.2
_BIAS_THINK_END = 1.85
_BIAS_IM_END = 1.7
_BIAS_SUPPRESS = -2.0  # the other special tokens: never generated

# A few BPE merges on top of the 256 byte tokens. The byte tokens alone already make
# every string tokenizable; the merges are there so the BPE merge path runs too. Each
# pair's parts are byte tokens or results of earlier merges (rank = list order).
# "Ġ" is how byte-level BPE spells a space.
_MERGES: tuple[tuple[str, str], ...] = (
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("a", "n"),
    ("o", "n"),
    ("Ġ", "a"),
    ("r", "e"),
    ("Ġt", "he"),
    ("Ġ", "s"),
    ("e", "n"),
    ("Ġ", "w"),
    ("o", "u"),
    ("Ġ", "o"),
    ("i", "s"),
    ("Ġ", "h"),
    ("l", "l"),
    ("Ġ", "i"),
    ("in", "g"),
    ("Ġ", "c"),
    ("a", "t"),
    ("o", "r"),
    ("Ġ", "b"),
    ("i", "t"),
)


def load_chat_template() -> str:
    """The Nemotron 3 chat template shipped as package data (NVIDIA's, via llama.cpp)."""
    template = resources.files("nemolaunch") / "data" / "nemotron3_chat_template.jinja"
    return template.read_text(encoding="utf-8")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table, which byte-level BPE vocabularies use.

    llama.cpp maps text bytes through the same table (``unicode_byte_to_utf8``), so each
    of the 256 byte tokens must be spelled this way for arbitrary text to tokenize.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """Tokens, their GGUF token types and the merges of the tiny byte-level BPE."""
    tokens: list[str] = list(SPECIAL_TOKENS)
    # CONTROL is what llama.cpp's converter gives tokens marked special: they are matched
    # whole in prompts (parse_special) and never split into bytes.
    types: list[int] = [int(TokenType.CONTROL)] * len(SPECIAL_TOKENS)
    byte_tokens = _bytes_to_unicode()
    for b in range(256):
        tokens.append(byte_tokens[b])
        types.append(int(TokenType.NORMAL))
    known = set(tokens)
    merges: list[str] = []
    for left, right in _MERGES:
        if left not in known or right not in known:
            raise AssertionError(f"merge {left!r} + {right!r} uses a token not yet in the vocab")
        merged = left + right
        merges.append(f"{left} {right}")
        if merged not in known:
            tokens.append(merged)
            types.append(int(TokenType.NORMAL))
            known.add(merged)
    return tokens, types, merges


def _layer_arrays() -> tuple[list[int], list[int]]:
    """Per-layer ``feed_forward_length`` and ``head_count_kv``, which set each layer's kind.

    llama.cpp's rule: both 0 is a Mamba2 layer, only the feed-forward length 0 is an
    attention layer, a feed-forward length > 0 is an MoE layer.
    """
    ff: list[int] = []
    kv: list[int] = []
    for kind in TINY_MODEL_LAYER_PATTERN:
        ff.append(_N_FF_EXP if kind == "E" else 0)
        kv.append(_N_HEAD_KV if kind == "*" else 0)
    return ff, kv


class _Weights:
    """Deterministic random tensors in numpy's (reversed ggml) axis order."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def linear(self, n_out: int, n_in: int, *lead: int) -> np.ndarray:
        # ggml {n_in, n_out} == numpy (n_out, n_in); 1/sqrt(fan_in) keeps activations O(1)
        # through the stack so the random model neither overflows nor goes silent.
        shape = (*lead, n_out, n_in)
        return (self._rng.standard_normal(shape) / np.sqrt(n_in)).astype(np.float32)

    def normal(self, *shape: int, std: float) -> np.ndarray:
        return (self._rng.standard_normal(shape) * std).astype(np.float32)

    def uniform(self, *shape: int, low: float, high: float) -> np.ndarray:
        return self._rng.uniform(low, high, shape).astype(np.float32)


def _ones(*shape: int) -> np.ndarray:
    return np.ones(shape, dtype=np.float32)


def _logit_bias(tokens: list[str]) -> np.ndarray:
    """Column ``_BIAS_CHANNEL`` of output.weight: how much each token is favoured."""
    byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
    bias = np.zeros(len(tokens), dtype=np.float32)
    for i, tok in enumerate(tokens):
        if tok == THINK_END:
            bias[i] = _BIAS_THINK_END
        elif tok == IM_END:
            bias[i] = _BIAS_IM_END
        elif tok in SPECIAL_TOKENS:
            bias[i] = _BIAS_SUPPRESS
        else:
            raw = bytes(byte_of[ch] for ch in tok)
            if raw == b"\n":
                bias[i] = _BIAS_NEWLINE
            elif all(0x20 <= b < 0x7F for b in raw):
                bias[i] = _BIAS_PRINTABLE
    return bias


def _without_bias_row(weight: np.ndarray) -> np.ndarray:
    """Zero the output row of a projection into the residual stream (see _BIAS_CHANNEL)."""
    weight[..., _BIAS_CHANNEL, :] = 0.0
    return weight


@dataclass(frozen=True)
class Wiring:
    """A model whose output is set, not random (``nemolaunch.scripted_model``): its own embeddings and
    LM head, and every layer's projection back into the residual stream zeroed, so the stream that
    reaches the head is the last token's embedding alone."""

    embeddings: np.ndarray  # (n_vocab, n_embd)
    output: np.ndarray  # (n_vocab, n_embd)


def _add_tensors(writer: GGUFWriter, tokens: list[str], seed: int, wiring: Wiring | None = None) -> None:
    w = _Weights(seed)
    n_vocab = len(tokens)
    conv_dim = _SSM_D_INNER + 2 * _SSM_N_GROUP * _SSM_D_STATE
    d_in_proj = 2 * _SSM_D_INNER + 2 * _SSM_N_GROUP * _SSM_D_STATE + _SSM_N_HEAD

    embd = w.normal(n_vocab, _N_EMBD, std=1.0)
    embd[:, _BIAS_CHANNEL] = _BIAS_VALUE
    # A separate output matrix (untied), as the real model has.
    output = w.linear(n_vocab, _N_EMBD)
    output[:, _BIAS_CHANNEL] = _logit_bias(tokens)
    if wiring is not None:
        embd, output = wiring.embeddings.astype(np.float32), wiring.output.astype(np.float32)
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", _ones(_N_EMBD))
    writer.add_tensor("output.weight", output)

    def into_residual(weight: np.ndarray) -> np.ndarray:
        # A projection back into the residual stream: random but for the bias row, or silenced.
        return np.zeros_like(weight) if wiring is not None else _without_bias_row(weight)

    for il, kind in enumerate(TINY_MODEL_LAYER_PATTERN):
        blk = f"blk.{il}"
        writer.add_tensor(f"{blk}.attn_norm.weight", _ones(_N_EMBD))
        if kind == "M":
            writer.add_tensor(f"{blk}.ssm_in.weight", w.linear(d_in_proj, _N_EMBD))
            writer.add_tensor(f"{blk}.ssm_conv1d.weight", w.linear(conv_dim, _SSM_D_CONV))
            # llama.cpp's loader calls this bias optional but the Mamba2 graph adds it
            # unconditionally: without it llama-server crashes at the first decode.
            writer.add_tensor(f"{blk}.ssm_conv1d.bias", w.normal(conv_dim, std=0.02))
            # dt bias around softplus^-1 of small step sizes, as Mamba2 initialises it.
            writer.add_tensor(f"{blk}.ssm_dt.bias", w.uniform(_SSM_N_HEAD, low=-4.0, high=-2.0))
            # A = -exp(A_log) must be negative (state decay), or the scan blows up.
            writer.add_tensor(f"{blk}.ssm_a", -w.uniform(_SSM_N_HEAD, 1, low=1.0, high=16.0))
            writer.add_tensor(f"{blk}.ssm_d", _ones(_SSM_N_HEAD, 1))
            # Grouped RMS norm: ggml {d_inner / n_group, n_group}.
            writer.add_tensor(f"{blk}.ssm_norm.weight", _ones(_SSM_N_GROUP, _SSM_D_INNER // _SSM_N_GROUP))
            writer.add_tensor(f"{blk}.ssm_out.weight", into_residual(w.linear(_N_EMBD, _SSM_D_INNER)))
        elif kind == "*":
            writer.add_tensor(f"{blk}.attn_q.weight", w.linear(_N_HEAD * _HEAD_DIM, _N_EMBD))
            writer.add_tensor(f"{blk}.attn_k.weight", w.linear(_N_HEAD_KV * _HEAD_DIM, _N_EMBD))
            writer.add_tensor(f"{blk}.attn_v.weight", w.linear(_N_HEAD_KV * _HEAD_DIM, _N_EMBD))
            attn_out = into_residual(w.linear(_N_EMBD, _N_HEAD * _HEAD_DIM))
            writer.add_tensor(f"{blk}.attn_output.weight", attn_out)
        else:
            # Router (sigmoid gating with a per-expert selection bias) sees the full width.
            writer.add_tensor(f"{blk}.ffn_gate_inp.weight", w.linear(_N_EXPERT, _N_EMBD))
            writer.add_tensor(f"{blk}.exp_probs_b.bias", np.zeros(_N_EXPERT, dtype=np.float32))
            # Latent MoE: project n_embd -> latent, run the routed experts there, project back.
            writer.add_tensor(f"{blk}.ffn_latent_down.weight", w.linear(_MOE_LATENT, _N_EMBD))
            latent_up = into_residual(w.linear(_N_EMBD, _MOE_LATENT))
            writer.add_tensor(f"{blk}.ffn_latent_up.weight", latent_up)
            # Experts have no gate (ReLU^2 up/down); ggml {in, out, n_expert}.
            writer.add_tensor(f"{blk}.ffn_up_exps.weight", w.linear(_N_FF_EXP, _MOE_LATENT, _N_EXPERT))
            writer.add_tensor(f"{blk}.ffn_down_exps.weight", w.linear(_MOE_LATENT, _N_FF_EXP, _N_EXPERT))
            # The shared expert works at full width, beside the latent path.
            writer.add_tensor(f"{blk}.ffn_up_shexp.weight", w.linear(_N_FF_SHEXP, _N_EMBD))
            down_shexp = into_residual(w.linear(_N_EMBD, _N_FF_SHEXP))
            writer.add_tensor(f"{blk}.ffn_down_shexp.weight", down_shexp)


def add_tokenizer(writer: GGUFWriter, tokens: list[str], types: list[int], merges: list[str]) -> None:
    """The byte-level BPE tokenizer, its special tokens and NVIDIA's Nemotron 3 chat template."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_unk_token_id(tokens.index(UNK_TOKEN))
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(IM_END))
    writer.add_eot_token_id(tokens.index(IM_END))
    writer.add_pad_token_id(tokens.index(EOS_TEXT_TOKEN))
    # The template writes every marker itself; a BOS in front would be a stray token.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(load_chat_template())


def _fill(
    writer: GGUFWriter,
    seed: int,
    *,
    extra_tokens: tuple[str, ...] = (),
    wiring_for: Callable[[list[str]], Wiring] | None = None,
    name: str = TINY_MODEL_NAME,
) -> None:
    """Add every key and tensor of the tiny model to ``writer``; a scripted model adds tokens and wiring."""
    tokens, types, merges = vocabulary()
    for token in extra_tokens:
        tokens.append(token)
        types.append(int(TokenType.NORMAL))
    ff, head_kv = _layer_arrays()

    writer.add_name(name)
    writer.add_file_type(int(LlamaFileType.ALL_F32))
    writer.add_context_length(TINY_MODEL_CONTEXT_LENGTH)
    writer.add_embedding_length(_N_EMBD)
    writer.add_block_count(len(TINY_MODEL_LAYER_PATTERN))
    writer.add_feed_forward_length(ff)
    writer.add_head_count(_N_HEAD)
    writer.add_head_count_kv(head_kv)
    writer.add_key_length(_HEAD_DIM)
    writer.add_value_length(_HEAD_DIM)
    # nemotron_h requires the LayerNorm epsilon (the MTP head's final norm uses it) and
    # reads the RMS one for every other norm.
    writer.add_layer_norm_eps(_NORM_EPS)
    writer.add_layer_norm_rms_eps(_NORM_EPS)

    writer.add_ssm_conv_kernel(_SSM_D_CONV)
    writer.add_ssm_inner_size(_SSM_D_INNER)
    writer.add_ssm_state_size(_SSM_D_STATE)
    writer.add_ssm_time_step_rank(_SSM_N_HEAD)
    writer.add_ssm_group_count(_SSM_N_GROUP)

    writer.add_expert_count(_N_EXPERT)
    writer.add_expert_used_count(_N_EXPERT_USED)
    writer.add_expert_feed_forward_length(_N_FF_EXP)
    writer.add_expert_shared_feed_forward_length(_N_FF_SHEXP)
    writer.add_expert_shared_count(1)
    writer.add_expert_weights_norm(True)
    writer.add_expert_weights_scale(_EXPERT_WEIGHTS_SCALE)
    writer.add_moe_latent_size(_MOE_LATENT)

    add_tokenizer(writer, tokens, types, merges)

    _add_tensors(writer, tokens, seed, wiring_for(tokens) if wiring_for is not None else None)


def write_tiny_model(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny Nemotron 3 GGUF to ``path`` and return ``path``. The bytes depend only on ``seed``."""
    return write_model(path, lambda writer: _fill(writer, seed))


def write_model(path: Path, fill: Callable[[GGUFWriter], None]) -> Path:
    """Write a ``nemotron_h_moe`` GGUF whose keys and tensors ``fill`` adds, atomically, to ``path``.

    The file is written under a temporary name in the same folder and then renamed over
    ``path``, so a crash or a concurrent reader never sees a half-written file under the
    final name. The tiny, scripted and scaled models are all written this way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder, so os.replace is an atomic rename; a random suffix so two writers
    # never share a temporary file. Not tempfile.mkstemp: its 0600 mode would stick to
    # the final file, and a model file is meant to be readable like any other.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    writer = GGUFWriter(tmp, TINY_MODEL_ARCH)
    try:
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        # Make the data durable before the rename publishes it.
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path
