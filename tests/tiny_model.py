"""A tiny llama-architecture GGUF model whose answers are fixed by its weights.

Two layers, 64 dimensions, the o200k_base vocabulary bundled with ccproxyd (as a byte-level BPE
with merges derived from its ranks) and a ChatML-with-tools chat template.  The attention and
feed-forward blocks have random inputs but zero output projections, so the residual stream that
reaches the output is the embedding of the last token: the model is a Markov chain over tokens,
written into two matrices.

    any other token  ->  "Hello"                 (embedding dimension 0, shared by every token)
    "Hello" -> " from" -> " the" -> " tiny" -> " llama" -> <|im_end|>

So every answer is ANSWER, then the end of the turn.  Inside a forced tool call the server's JSON
grammar masks what does not fit; the model then writes ANSWER in the first string argument and
closes it (the quote is its second choice after " llama"; PREFERENCES settle the rest):
`{"city": "Hello from the tiny llama"}`.
"""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path

import numpy as np

ANSWER = "Hello from the tiny llama"
WORDS = ("Hello", " from", " the", " tiny", " llama")
N_EMBD, N_LAYER, N_HEAD, N_FF = 64, 2, 4, 128
CONTEXT = 131072
SPECIALS = ("<|im_start|>", "<|im_end|>")
START, STEP, QUOTE_AFTER_END = 10.0, 30.0, 15.0        # output weights (see the chain above)
# Inside a grammar, where the chain's choice is masked, these single characters beat every token
# that would glue structure and string content together (`:");\n`), which all score 0.
PREFERENCES = {'"': 3.0, ":": 2.5, "}": 2.0, "{": 2.0}

# ChatML with tools (Hermes style).  The server renders it with trim_blocks and lstrip_blocks, so
# newlines are written as {{ nl }} rather than after block tags.
CHAT_TEMPLATE = (
    "{% set nl = '\\n' %}"
    "{% if tools %}<|im_start|>system{{ nl }}# Tools{{ nl }}"
    "{% for tool in tools %}{{ tool.function | tojson }}{{ nl }}{% endfor %}<|im_end|>{{ nl }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}{{ nl }}"
    "{% if m.content is string %}{{ m.content }}"
    "{% elif m.content %}{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}"
    "{% endif %}"
    "{% for call in m.tool_calls or [] %}<tool_call>{{ nl }}"
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments }}}{{ nl }}</tool_call>"
    "{% endfor %}<|im_end|>{{ nl }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ nl }}{% endif %}"
)


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte, the spelling byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def o200k_ranks() -> dict[bytes, int]:
    raw = resources.files("ccproxyd").joinpath("data/o200k_base.tiktoken").read_bytes()
    return {base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in raw.splitlines() if line)}


def _split(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The last merge that builds `token`: byte-pair merging by rank, stopped below its own rank."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < limit and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} is not a merge of two tokens")
    return parts[0], parts[1]


def vocabulary() -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """Token spellings, token types, merges, and the ids of the specials (appended at the end)."""
    ranks = o200k_ranks()
    spell = _byte_to_unicode()
    size = max(ranks.values()) + 1
    tokens = [f"<|reserved_{i}|>" for i in range(size)]
    types = [3] * size                                   # 3: control (unused ids stay control)
    for token, rank in ranks.items():
        tokens[rank] = "".join(spell[b] for b in token)
        types[rank] = 1                                  # 1: normal
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = _split(ranks, token)
            merges.append("".join(spell[b] for b in left) + " " + "".join(spell[b] for b in right))
    ids = {}
    for name in ("<|endoftext|>", *SPECIALS):
        ids[name] = len(tokens)
        tokens.append(name)
        types.append(3)
    return tokens, types, merges, ids


def weights(n_vocab: int, word_ids: list[int], end_id: int, preferred: dict[int, float]) -> dict[str, np.ndarray]:
    """Embedding and output matrices of the Markov chain, and blocks that add nothing."""
    rng = np.random.default_rng(14)
    embd = np.zeros((n_vocab, N_EMBD), np.float32)
    embd[:, 0] = 1.0                                     # the shared "anywhere else" direction
    out = np.zeros((n_vocab, N_EMBD), np.float32)
    out[word_ids[0], 0] = START
    for step, token in enumerate(word_ids, start=1):
        embd[token, step] = 1.0
        following = word_ids[step] if step < len(word_ids) else end_id
        out[following, step] = STEP
    quote = [t for t, p in preferred.items() if p == PREFERENCES['"']][0]
    out[quote, len(word_ids)] = QUOTE_AFTER_END
    for token, preference in preferred.items():
        out[token, 0] += preference
    tensors = {"token_embd.weight": embd.astype(np.float16), "output.weight": out.astype(np.float16),
               "output_norm.weight": np.ones(N_EMBD, np.float32)}
    for layer in range(N_LAYER):
        block = f"blk.{layer}."
        tensors[block + "attn_norm.weight"] = np.ones(N_EMBD, np.float32)
        tensors[block + "ffn_norm.weight"] = np.ones(N_EMBD, np.float32)
        for name in ("attn_q", "attn_k", "attn_v"):
            tensors[block + name + ".weight"] = rng.normal(0, 0.02, (N_EMBD, N_EMBD)).astype(np.float32)
        tensors[block + "attn_output.weight"] = np.zeros((N_EMBD, N_EMBD), np.float32)
        tensors[block + "ffn_gate.weight"] = rng.normal(0, 0.02, (N_FF, N_EMBD)).astype(np.float32)
        tensors[block + "ffn_up.weight"] = rng.normal(0, 0.02, (N_FF, N_EMBD)).astype(np.float32)
        tensors[block + "ffn_down.weight"] = np.zeros((N_EMBD, N_FF), np.float32)
    return tensors


def write(path: Path) -> Path:
    """Write the model to `path` (about 50 MB) and return it."""
    import gguf

    from ccproxyd.translate.tokens import encoding

    enc = encoding("o200k_base")
    word_ids = []
    for word in WORDS:
        ids = enc.encode_ordinary(word)
        assert len(ids) == 1, f"{word!r} is not one o200k token"
        word_ids += ids
    tokens, types, merges, special = vocabulary()
    preferred = {enc.encode_single_token(text): p for text, p in PREFERENCES.items()}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("ccproxyd-tiny-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-4o")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|endoftext|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array in weights(len(tokens), word_ids, special["<|im_end|>"], preferred).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
