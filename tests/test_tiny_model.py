"""Fast checks of the tiny Nemotron 3 GGUF: read back with gguf-py, no llama.cpp needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import pytest

from nemolaunch import tiny_model
from nemolaunch.tiny_model import (
    TINY_MODEL_ARCH,
    TINY_MODEL_CONTEXT_LENGTH,
    TINY_MODEL_NAME,
    load_chat_template,
    write_tiny_model,
)

ARCH = TINY_MODEL_ARCH
TEMPLATE_FILE = Path(tiny_model.__file__).parent / "data" / "nemotron3_chat_template.jinja"

# What llama.cpp's nemotron_h loader creates per layer kind (blk.N. prefix dropped).
MAMBA_TENSORS = {
    "ssm_in.weight",
    "ssm_conv1d.weight",
    "ssm_conv1d.bias",  # "optional" to the loader, but the Mamba2 graph adds it unconditionally
    "ssm_dt.bias",
    "ssm_a",
    "ssm_d",
    "ssm_norm.weight",
    "ssm_out.weight",
}
ATTENTION_TENSORS = {"attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}
MOE_TENSORS = {
    "ffn_gate_inp.weight",
    "exp_probs_b.bias",
    "ffn_latent_down.weight",
    "ffn_latent_up.weight",
    "ffn_up_exps.weight",
    "ffn_down_exps.weight",
    "ffn_up_shexp.weight",
    "ffn_down_shexp.weight",
}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="module")
def reader(model_path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(model_path)


def _kv(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    assert field is not None, f"missing key {key}"
    return field.contents()


def _tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader.tensors}


def _ne(tensor: gguf.ReaderTensor) -> list[int]:
    """A tensor's shape in ggml order (ne0 first), as llama.cpp's loader checks it."""
    return [int(n) for n in tensor.shape]


def _layer_kinds(reader: gguf.GGUFReader) -> list[str]:
    # llama.cpp's rule: ff 0 and kv 0 -> Mamba2, ff 0 -> attention, ff > 0 -> MoE.
    ff = _kv(reader, f"{ARCH}.feed_forward_length")
    kv = _kv(reader, f"{ARCH}.attention.head_count_kv")
    assert len(ff) == len(kv) == _kv(reader, f"{ARCH}.block_count")
    return ["M" if f == 0 and k == 0 else "*" if f == 0 else "E" for f, k in zip(ff, kv, strict=True)]


def test_returns_path_and_reads_back(model_path: Path, reader: gguf.GGUFReader) -> None:
    assert model_path.name == "tiny.gguf"
    assert _kv(reader, "general.architecture") == "nemotron_h_moe"
    assert _kv(reader, "general.name") == TINY_MODEL_NAME
    assert _kv(reader, f"{ARCH}.context_length") == TINY_MODEL_CONTEXT_LENGTH


def test_has_every_layer_kind(reader: gguf.GGUFReader) -> None:
    kinds = _layer_kinds(reader)
    assert {"M", "*", "E"} <= set(kinds)
    assert "".join(kinds) == tiny_model.TINY_MODEL_LAYER_PATTERN


def test_layer_tensors_match_layer_kinds(reader: gguf.GGUFReader) -> None:
    tensors = _tensors(reader)
    for il, kind in enumerate(_layer_kinds(reader)):
        names = {n.split(".", 2)[2] for n in tensors if n.startswith(f"blk.{il}.")}
        assert "attn_norm.weight" in names
        if kind == "M":
            assert names >= MAMBA_TENSORS
        elif kind == "*":
            assert names >= ATTENTION_TENSORS
        else:
            assert names >= MOE_TENSORS


def test_mamba_shapes_follow_ssm_hparams(reader: gguf.GGUFReader) -> None:
    tensors = _tensors(reader)
    n_embd = _kv(reader, f"{ARCH}.embedding_length")
    d_conv = _kv(reader, f"{ARCH}.ssm.conv_kernel")
    d_inner = _kv(reader, f"{ARCH}.ssm.inner_size")
    d_state = _kv(reader, f"{ARCH}.ssm.state_size")
    n_head = _kv(reader, f"{ARCH}.ssm.time_step_rank")
    n_group = _kv(reader, f"{ARCH}.ssm.group_count")
    conv_dim = d_inner + 2 * n_group * d_state
    il = _layer_kinds(reader).index("M")
    assert _ne(tensors[f"blk.{il}.ssm_in.weight"]) == [n_embd, 2 * d_inner + 2 * n_group * d_state + n_head]
    assert _ne(tensors[f"blk.{il}.ssm_conv1d.weight"]) == [d_conv, conv_dim]
    assert _ne(tensors[f"blk.{il}.ssm_conv1d.bias"]) == [conv_dim]
    assert _ne(tensors[f"blk.{il}.ssm_norm.weight"]) == [d_inner // n_group, n_group]
    # Mamba's A is a decay: it must be negative.
    assert (tensors[f"blk.{il}.ssm_a"].data < 0).all()


def test_latent_moe(reader: gguf.GGUFReader) -> None:
    tensors = _tensors(reader)
    n_embd = _kv(reader, f"{ARCH}.embedding_length")
    latent = _kv(reader, f"{ARCH}.moe_latent_size")
    n_expert = _kv(reader, f"{ARCH}.expert_count")
    n_ff_exp = _kv(reader, f"{ARCH}.expert_feed_forward_length")
    assert 0 < latent < n_embd
    assert 0 < _kv(reader, f"{ARCH}.expert_used_count") <= n_expert
    moe_layers = [il for il, kind in enumerate(_layer_kinds(reader)) if kind == "E"]
    assert moe_layers
    for il in moe_layers:
        assert _ne(tensors[f"blk.{il}.ffn_latent_down.weight"]) == [n_embd, latent]
        assert _ne(tensors[f"blk.{il}.ffn_latent_up.weight"]) == [latent, n_embd]
        # The routed experts work in the latent space, not at full width.
        assert _ne(tensors[f"blk.{il}.ffn_up_exps.weight"]) == [latent, n_ff_exp, n_expert]
        assert _ne(tensors[f"blk.{il}.ffn_down_exps.weight"]) == [n_ff_exp, latent, n_expert]


def test_bias_channel_favours_text_and_stops(reader: gguf.GGUFReader) -> None:
    # Channel 0 of the residual stream is a constant no layer writes to; column 0 of the
    # LM head turns it into a logit bias (see tiny_model._BIAS_CHANNEL).
    tensors = _tensors(reader)
    embd = tensors["token_embd.weight"].data
    assert (embd[:, 0] == embd[0, 0]).all() and embd[0, 0] > 0
    writers = ("ssm_out.weight", "attn_output.weight", "ffn_latent_up.weight", "ffn_down_shexp.weight")
    for name, tensor in tensors.items():
        if name.endswith(writers):
            assert not tensor.data[0, :].any(), name
    tokens: list[str] = _kv(reader, "tokenizer.ggml.tokens")
    bias = tensors["output.weight"].data[:, 0]
    letter = bias[tokens.index("a")]
    nul = bias[tokens.index(tiny_model._bytes_to_unicode()[0])]
    assert letter > nul
    assert bias[tokens.index("<|im_end|>")] > letter
    assert bias[tokens.index("</think>")] > letter
    for suppressed in ("<|im_start|>", "<think>", "<s>"):
        assert bias[tokens.index(suppressed)] < nul


def test_tokenizer_special_tokens(reader: gguf.GGUFReader) -> None:
    assert _kv(reader, "tokenizer.ggml.model") == "gpt2"
    tokens: list[str] = _kv(reader, "tokenizer.ggml.tokens")
    types: list[int] = _kv(reader, "tokenizer.ggml.token_type")
    assert len(types) == len(tokens) == len(set(tokens))
    for special in ("<|im_start|>", "<|im_end|>", "<think>", "</think>"):
        assert special in tokens
        assert types[tokens.index(special)] == gguf.TokenType.CONTROL
    im_end = tokens.index("<|im_end|>")
    # Generation stops on <|im_end|>: it must be both EOS and EOT.
    assert _kv(reader, "tokenizer.ggml.eos_token_id") == im_end
    assert _kv(reader, "tokenizer.ggml.eot_token_id") == im_end
    assert 0 <= _kv(reader, "tokenizer.ggml.bos_token_id") < len(tokens)
    assert _kv(reader, "tokenizer.ggml.add_bos_token") is False


def test_tokenizer_covers_every_byte(reader: gguf.GGUFReader) -> None:
    # Byte-level BPE can tokenize any text only if all 256 byte tokens are there.
    tokens = set(_kv(reader, "tokenizer.ggml.tokens"))
    byte_tokens = set(tiny_model._bytes_to_unicode().values())
    assert len(byte_tokens) == 256
    assert byte_tokens <= tokens
    assert "Ġ" in tokens and "Ċ" in tokens  # space and newline
    for merge in _kv(reader, "tokenizer.ggml.merges"):
        left, right = merge.split(" ")
        assert left in tokens and right in tokens and left + right in tokens


def test_chat_template(reader: gguf.GGUFReader) -> None:
    template = _kv(reader, "tokenizer.chat_template")
    assert template == load_chat_template() == TEMPLATE_FILE.read_text(encoding="utf-8")
    # NVIDIA's template: ChatML turns and an open think block as the generation prompt.
    assert "<|im_start|>assistant\\n<think>\\n" in template
    assert "reasoning_content" in template


def test_deterministic_for_a_seed(tmp_path: Path, model_path: Path) -> None:
    again = write_tiny_model(tmp_path / "again.gguf", seed=0)
    other = write_tiny_model(tmp_path / "other.gguf", seed=1)
    assert again.read_bytes() == model_path.read_bytes()
    assert other.read_bytes() != model_path.read_bytes()
    assert other.stat().st_size == model_path.stat().st_size


def test_small(model_path: Path) -> None:
    assert model_path.stat().st_size < 4 * 1024 * 1024


def test_atomic_write_leaves_only_the_model(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "tiny.gguf"
    assert write_tiny_model(target) == target
    assert [p.name for p in target.parent.iterdir()] == ["tiny.gguf"]
    # Overwriting replaces the file in one step and still leaves nothing behind.
    write_tiny_model(target, seed=3)
    assert [p.name for p in target.parent.iterdir()] == ["tiny.gguf"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "tiny.gguf"
    target.write_bytes(b"old")

    def boom(self: gguf.GGUFWriter, **_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tiny_model(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]


def test_a_scaled_ultra_shaped_model_loads_and_answers(llama_bin_dir: Path, tmp_path: Path) -> None:
    """The generator for realistic sizes: the Ultra's layer pattern and routing, Q8_0, served for real."""
    import json
    import subprocess
    import urllib.request

    from nemolaunch.adapters.gguf_header import read_architecture, read_weight_facts
    from nemolaunch.scaled_model import ScaledShape, shape_for_size, weights_bytes, write_scaled_model

    from conftest import free_port
    from test_smoke import stop_with_sigint, wait_for_health

    shape = shape_for_size(30_000_000)
    assert weights_bytes(shape) <= 30_000_000 < weights_bytes(ScaledShape(shape.n_embd + 256, shape.blocks))
    path = write_scaled_model(tmp_path / "scaled.gguf", shape)
    architecture = read_architecture(path)
    assert architecture is not None and architecture.architecture == "nemotron_h_moe"
    kinds = architecture.layer_kinds[:9]
    assert kinds == ("recurrent", "feed_forward", "recurrent", "feed_forward", "attention",
                     "recurrent", "feed_forward", "recurrent", "feed_forward")  # fmt: skip
    facts = read_weight_facts((path,))
    # Every Q8_0 matrix counted by the generator, plus the small F32 vectors, inside the file.
    assert weights_bytes(shape) < facts.weights_bytes < path.stat().st_size
    assert (facts.expert_count, facts.expert_used_count) == (shape.n_expert, shape.n_expert_used)
    assert 0 < facts.active_share < 0.6  # sparse, as the Ultra is
    port = free_port()
    # Its log into a file, not a pipe nobody reads while it loads: a full pipe (64 KiB) would stop
    # llama-server mid-load, and the test would wait out its timeout for a server that is only blocked.
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(llama_bin_dir / "llama-server"), "-m", str(path), "--port", str(port), "--threads", "1", "-c", "512"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    log.close()  # the server holds its own copy
    try:
        wait_for_health(port, server)
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            answer = json.loads(reply.read())
        assert answer["usage"]["completion_tokens"] >= 1
    finally:
        stop_with_sigint(server)
