#!/usr/bin/env python3
"""Writes a tiny llama-architecture GGUF model with random weights.

drover's tests run the real llama.cpp server, and a real server needs a real
model file: this one is about a megabyte, loads in milliseconds on a CPU and
generates deterministic nonsense. The GGUF container is written by the `gguf`
package (llama.cpp's own writer, from PyPI); the weights come from numpy with
a fixed seed, so the same arguments give the same file.

usage: tiny_gguf.py OUT.gguf [--name NAME] [--seed N] [--ctx TOKENS]
                             [--layers N] [--embd N] [--heads N]
"""

import argparse

import gguf
import numpy as np

# Words the vocabulary holds whole, besides the 256 byte tokens, so that
# generated text has a few readable pieces. "\u2581" is SentencePiece's space.
WORDS = ["the", "a", "drover", "model", "fleet", "hello", "world", "ok"]


def vocabulary():
    """SentencePiece-style vocabulary: unknown, begin and end of text, every
    byte, then WORDS. Returns (tokens, scores, types)."""
    entries = [
        ("<unk>", 0.0, gguf.TokenType.UNKNOWN),
        ("<s>", 0.0, gguf.TokenType.CONTROL),
        ("</s>", 0.0, gguf.TokenType.CONTROL),
    ]
    entries += [(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE) for byte in range(256)]
    entries += [("\u2581" + word, -float(rank), gguf.TokenType.NORMAL) for rank, word in enumerate(WORDS)]
    tokens, scores, types = zip(*entries)
    return list(tokens), list(scores), list(types)


def llama_tensors(rng, n_vocab, n_embd, n_layers):
    """Yields (name, array) for every tensor llama.cpp's llama architecture
    expects: embeddings, per block attention and feed-forward with their
    norms, the output norm and head."""
    n_ff = 2 * n_embd

    def weights(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm():
        return np.ones(n_embd, dtype=np.float32)

    yield "token_embd.weight", weights(n_vocab, n_embd)
    for block in range(n_layers):
        prefix = f"blk.{block}"
        yield f"{prefix}.attn_norm.weight", norm()
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            yield f"{prefix}.{part}.weight", weights(n_embd, n_embd)
        yield f"{prefix}.ffn_norm.weight", norm()
        yield f"{prefix}.ffn_gate.weight", weights(n_ff, n_embd)
        yield f"{prefix}.ffn_up.weight", weights(n_ff, n_embd)
        yield f"{prefix}.ffn_down.weight", weights(n_embd, n_ff)
    yield "output_norm.weight", norm()
    yield "output.weight", weights(n_vocab, n_embd)


def write_model(path, name, seed, ctx, n_layers, n_embd, n_heads):
    if n_embd % n_heads:
        raise SystemExit(f"tiny_gguf: --embd {n_embd} is not a multiple of --heads {n_heads}")
    tokens, scores, types = vocabulary()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_context_length(ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(2 * n_embd)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_heads)
    writer.add_rope_dimension_count(n_embd // n_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # A minimal chat template, so /v1/chat/completions works as it does with
    # any real chat model.
    writer.add_chat_template(
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    rng = np.random.default_rng(seed)
    for tensor_name, array in llama_tensors(rng, len(tokens), n_embd, n_layers):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--name", default="tiny-llama", help="general.name in the file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--ctx", type=int, default=512, help="the model's trained context, in tokens")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args()
    write_model(args.out, args.name, args.seed, args.ctx, args.layers, args.embd, args.heads)
    print(args.out)


if __name__ == "__main__":
    main()
