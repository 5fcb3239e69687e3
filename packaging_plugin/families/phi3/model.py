"""Phi-3 / Phi-3.5 (`phi3`) in `tvm.relax.frontend.nn`, with MLC's parameter names and order.

MLC names it like its older Phi models: `transformer.embd`, `transformer.h.{i}.ln`,
`.mixer.qkv_proj`, `.mixer.out_proj`, `.mlp.gate_up_proj`, `.mlp.down_proj`,
`.post_attention_layernorm`, `transformer.norm`, `lm_head` (the checkpoint's q/k/v and gate/up
are already fused). The embedding's vocabulary is a number (MLC's choice), the lm_head's the
symbolic "vocab_size".

RoPE may be partial (`partial_rotary_factor`, Phi-4-mini) and scaled by "longrope" (the 128k
variants): the KV cache gets the long factors followed by the short ones, and the attention
factor sqrt(1 + ln(max / original) / ln(original)). TVM's kernel picks the long factors when
one call holds more than `original_max_position_embeddings` tokens; transformers picks them
once a position passes it. The two agree while the context window is at most
`original_max_position_embeddings` (4096 for Phi-3.5-mini), as phone packages set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import (
    ModelSizes,
    model_sizes,
    read_heads,
    require,
    rope_theta,
)
from packaging_plugin.families.base.model import (
    AttentionLayout,
    CausalLM,
    FusedQKVAttention,
    GatedMLP,
    rms_norm,
)
from packaging_plugin.families.phi3 import rope
from packaging_plugin.families.phi3.config import MODEL_TYPES, RMS_NORM_EPS
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class Phi3Config:
    sizes: ModelSizes
    layout: AttentionLayout
    vocab_size: int
    intermediate_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> Phi3Config:
        if (act := cfg.get("hidden_act")) and act != "silu":
            raise ValueError(f"{model_type}: hidden_act {act!r} is not supported (silu only)")
        heads, kv_heads, head_dim = read_heads(model_type, cfg)
        # transformers 5 keeps the factor inside rope_parameters.
        partial = cfg.get("partial_rotary_factor") or (cfg.get("rope_parameters") or {}).get(
            "partial_rotary_factor"
        )
        rotary_dim = int(head_dim * float(partial or 1.0))
        scaling, factors = _longrope(cfg, rotary_dim)
        return cls(
            sizes=model_sizes(
                MODEL_TYPES[model_type], cfg, int(require(model_type, cfg, "hidden_size"))
            ),
            layout=AttentionLayout(
                num_hidden_layers=int(require(model_type, cfg, "num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rope_theta=rope_theta(cfg),
                rope_scaling=scaling,
                rope_ext_factors=factors,
                rotary_dim=rotary_dim,
            ),
            vocab_size=int(require(model_type, cfg, "vocab_size")),
            intermediate_size=int(require(model_type, cfg, "intermediate_size")),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or RMS_NORM_EPS),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


def _longrope(cfg: dict[str, Any], rotary_dim: int) -> tuple[dict[str, Any], tuple[float, ...]]:
    """(TVM's rope_scaling dict, long + short factors) of a longrope config, or ({}, ()).

    MLC writes `rope_scaling` with "type" (older checkpoints say "su"); transformers 5 writes
    `rope_parameters` with "rope_type".
    """
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return {}, ()
    if kind not in ("longrope", "su"):
        raise ValueError(f"phi3: rope scaling {kind!r} is not supported (longrope only)")
    factors: dict[str, list[float]] = {}
    for key in ("long_factor", "short_factor"):
        values = scaling.get(key)
        if not isinstance(values, list) or len(values) != rotary_dim // 2:
            raise ValueError(
                f"phi3: rope_scaling.{key} must list rotary_dim / 2 = {rotary_dim // 2} numbers"
            )
        factors[key] = [float(v) for v in values]
    original = (
        cfg.get("original_max_position_embeddings")
        or scaling.get("original_max_position_embeddings")
        or require("phi3", cfg, "max_position_embeddings")
    )
    tvm_scaling = {
        "rope_type": "longrope",
        "max_position_embeddings": int(require("phi3", cfg, "max_position_embeddings")),
        "original_max_position_embeddings": int(original),
        # Given by some configs; else derived from the two lengths (rope.py).
        **{k: float(scaling[k]) for k in ("factor", "attention_factor") if scaling.get(k)},
    }
    return tvm_scaling, (*factors["long_factor"], *factors["short_factor"])


class ParallelBlock(nn.Module):
    def __init__(self, cfg: Phi3Config, quant: Quantization) -> None:
        super().__init__()
        hidden, eps = cfg.sizes.hidden_size, cfg.rms_norm_eps
        # Attribute order = packed parameter order, MLC's.
        self.ln = rms_norm(hidden, eps, quant)
        self.mixer = FusedQKVAttention(
            hidden, cfg.layout, quant, sm_scale=cfg.layout.head_dim**-0.5, out_name="out_proj"
        )
        self.mlp = GatedMLP(hidden, cfg.intermediate_size, quant, "silu")
        self.post_attention_layernorm = rms_norm(hidden, eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.mixer(self.ln(x), kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: Phi3Config, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.embd = Embedding(cfg.vocab_size, hidden, quant)
        self.h = nn.ModuleList(
            [ParallelBlock(cfg, quant) for _ in range(cfg.layout.num_hidden_layers)]
        )
        self.norm = rms_norm(hidden, cfg.rms_norm_eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.h):
            x = layer(x, kv_cache, layer_id)
        return self.norm(x)


class Phi3ForCausalLM(CausalLM):
    def __init__(self, cfg: Phi3Config, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.cfg = cfg
        self.transformer = Backbone(cfg, quant)
        if not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.sizes.hidden_size, "vocab_size", quant, out_dtype="float32")

    def finish_module(self, mod: tvm.IRModule) -> tvm.IRModule:
        """The exported module with our longrope split-rotary kernel in place (see rope.py)."""
        layout = self.layout
        if not layout.rope_ext_factors:
            return mod
        kernel = rope.longrope_split_rotary(
            head_dim=layout.head_dim,
            num_q_heads=layout.num_attention_heads,
            num_kv_heads=layout.num_key_value_heads,
            dtype=self.dtype,
            rotary_dim=layout.rotary_dim or layout.head_dim,
            theta=layout.rope_theta,
            original_max_position_embeddings=layout.rope_scaling[
                "original_max_position_embeddings"
            ],
            attention_factor=rope.longrope_attention_factor(layout.rope_scaling),
        )
        return rope.replace_split_rotary(mod, kernel)

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.transformer.embd(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.transformer(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        if self.cfg.tie_word_embeddings:
            return self.transformer.embd.lm_head_forward(hidden)
        return self.lm_head(hidden)


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> Phi3ForCausalLM:
    return Phi3ForCausalLM(Phi3Config.from_model_config(model_type, model_config), quant, target)
