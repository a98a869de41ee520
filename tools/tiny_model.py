"""A tiny MLX language model, built with a fixed seed, for the demo and tests.

    python3 tools/tiny_model.py OUT_DIR [--dtype bfloat16|float16|float32] [--bits 4]

writes OUT_DIR/config.json, OUT_DIR/model.safetensors and a tokenizer stub,
in the layout mlx-lm uses. ``TinyLM`` is the model; ``forward(weights_dir
or dict, tokens)`` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

CONFIG = {"model_type": "tinylm", "architectures": ["TinyLMForCausalLM"], "vocab_size": 512,
          "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
          "rms_norm_eps": 1e-5}


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int, eps: float):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(dim, eps=eps)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)
        self.post_attention_layernorm = nn.RMSNorm(dim, eps=eps)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        h = self.input_layernorm(x)
        q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        mask = nn.MultiHeadAttention.create_additive_causal_mask(x.shape[1]).astype(x.dtype)
        scores = (q @ k.transpose(0, 2, 1)) / (q.shape[-1] ** 0.5) + mask
        x = x + self.o_proj(mx.softmax(scores.astype(mx.float32), axis=-1).astype(x.dtype) @ v)
        return x + self.down_proj(nn.silu(self.up_proj(self.post_attention_layernorm(x))))


class TinyLM(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        dim = config["hidden_size"]
        self.embed_tokens = nn.Embedding(config["vocab_size"], dim)
        self.layers = [Block(dim, config["intermediate_size"], config["rms_norm_eps"])
                       for _ in range(config["num_hidden_layers"])]
        self.norm = nn.RMSNorm(dim, eps=config["rms_norm_eps"])
        self.lm_head = nn.Linear(dim, config["vocab_size"], bias=False)

    def __call__(self, tokens: mx.array) -> mx.array:
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def build(config: dict | None = None, dtype: str = "bfloat16", bits: int | None = None,
          seed: int = 7) -> tuple[TinyLM, dict]:
    config = dict(config or CONFIG)
    mx.random.seed(seed)
    model = TinyLM(config)
    model.set_dtype(getattr(mx, dtype))
    config["torch_dtype"] = dtype
    if bits:
        nn.quantize(model, group_size=64, bits=bits)
        config["quantization"] = {"group_size": 64, "bits": bits}
    mx.eval(model.parameters())
    return model, config


def save(model: TinyLM, config: dict, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(os.path.join(out, "model.safetensors"), weights, metadata={"format": "mlx"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"model_max_length": 256, "tokenizer_class": "PreTrainedTokenizerFast"}, f)


def from_weights(config: dict, weights: dict[str, mx.array]) -> TinyLM:
    model = TinyLM(config)
    if config.get("quantization"):
        q = config["quantization"]
        nn.quantize(model, group_size=q["group_size"], bits=q["bits"])
    model.update(tree_unflatten(list(weights.items())))
    return model


def forward(config: dict, weights: dict[str, mx.array], tokens: list[int]) -> mx.array:
    out = from_weights(config, weights)(mx.array([tokens]))
    mx.eval(out)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--bits", type=int, choices=[4, 8])
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    model, config = build(dtype=args.dtype, bits=args.bits, seed=args.seed)
    save(model, config, args.out)
    print(f"wrote {args.out} ({args.dtype}{f', {args.bits}-bit' if args.bits else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
