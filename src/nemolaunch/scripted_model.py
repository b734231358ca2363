"""A tiny Nemotron 3 model that says exactly what a test scripts: thinking, an answer, a tool call.

The tiny model's random weights make a random reply; tests of tool calls, reasoning and the chat
need a reply known in advance, through the real llama-server at NVIDIA's temperature 1.0. This is
the tiny model (same architecture, tokenizer and chat template) wired as a transition table:

* every layer's projection back into the residual stream is zero (attention and Mamba2 outputs, the
  latent MoE's up-projection, the shared expert's down), so what reaches the LM head is the last
  token's embedding alone: the next token depends on the last one and nothing else;
* each scripted token gets its own orthogonal embedding, and the LM head row of the token that must
  follow it points along that embedding, ``SCRIPT_LOGIT`` logits above every other token: sampling at
  temperature 1.0 (min-p 0.01 then drops the rest) picks it every time.

The chain starts from the last token of the prompt, which the Nemotron 3 template ends with the
generation prompt ``<think>`` and a newline. Each piece of the script becomes one token (added to the
vocabulary when it is not a token already), so pieces must be distinct, and none may be the start.
The script's last piece should be ``<|im_end|>``, which ends the turn.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

from nemolaunch import tiny_model
from nemolaunch.tiny_model import IM_END, SPECIAL_TOKENS, THINK_END, Wiring, vocabulary

#: The last token of a Nemotron 3 prompt that asks for a reply ("<|im_start|>assistant\n<think>\n").
SCRIPT_START = "\n"
#: How far the scripted next token's logit stands above every other token's (after the final norm).
SCRIPT_LOGIT = 40.0
SCRIPTED_MODEL_NAME = "nemolaunch-scripted-nemotron3"


def _spelled(text: str) -> str:
    """A piece of text as byte-level BPE spells a token (a space is "Ġ", a newline "Ċ")."""
    table = tiny_model._bytes_to_unicode()
    return "".join(table[byte] for byte in text.encode("utf-8"))


def token_texts(script: list[str]) -> list[str]:
    """The vocabulary spelling of each piece: special tokens as they are, text byte-level encoded."""
    return [piece if piece in SPECIAL_TOKENS else _spelled(piece) for piece in script]


def write_scripted_model(path: Path, script: list[str], *, start: str = SCRIPT_START) -> Path:
    """Write a model whose reply to any Nemotron 3 prompt is ``script``, piece by piece."""
    pieces = token_texts(script)
    chain = [_spelled(start), *pieces]
    if len(set(chain)) != len(chain):
        raise ValueError("each piece of the script must be distinct and differ from the start token")
    base, _, _ = vocabulary()
    extra = tuple(dict.fromkeys(piece for piece in pieces if piece not in base))

    def wiring(tokens: list[str]) -> Wiring:
        ids = [tokens.index(piece) for piece in chain]
        n_embd = tiny_model._N_EMBD
        if len(ids) > n_embd:
            raise ValueError(f"a script of at most {n_embd - 1} pieces fits this model's width")
        rng = np.random.default_rng(0)
        # Orthonormal directions for the chain's tokens; the others get random ones (never a source).
        basis, _ = np.linalg.qr(rng.standard_normal((n_embd, n_embd)))
        embeddings = rng.standard_normal((len(tokens), n_embd)) / np.sqrt(n_embd)
        output = np.zeros((len(tokens), n_embd))
        for number, (source, target) in enumerate(itertools.pairwise(ids)):
            embeddings[source] = basis[number]
            # RMS norm scales the embedding to length sqrt(n_embd): this row then scores SCRIPT_LOGIT.
            output[target] += basis[number] * SCRIPT_LOGIT / np.sqrt(n_embd)
        return Wiring(embeddings=embeddings, output=output)

    def fill(writer: GGUFWriter) -> None:
        tiny_model._fill(writer, 0, extra_tokens=extra, wiring_for=wiring, name=SCRIPTED_MODEL_NAME)

    return tiny_model.write_model(path, fill)


def tool_call_script(function: str, arguments: dict[str, str], *, thinking: str) -> list[str]:
    """The Nemotron 3 reply that calls ``function``: thinking, then its <tool_call> block, then the end."""
    pieces = [thinking, THINK_END, "<tool_call>\n", f"<function={function}>\n"]
    for name, value in arguments.items():
        # Value and closing tag in one piece: pieces must be distinct, and each value is.
        pieces += [f"<parameter={name}>\n", f"{value}\n</parameter>\n"]
    pieces += ["</function>\n", "</tool_call>", IM_END]
    return pieces
