"""SmolLM3 (`smollm3`) in `tvm.relax.frontend.nn`, with llama's MLC parameter names and order.

MLC has no SmolLM3; it is llama-shaped (`model.layers.{i}.self_attn.qkv_proj`, `o_proj`,
`mlp.gate_up_proj`, `mlp.down_proj`, the two norms, `model.norm`; tied embeddings in SmolLM3-3B,
GQA), except that some layers apply no rotary embedding (`no_rope_layers`: every fourth layer in
SmolLM3-3B). TVM's paged KV cache applies one RoPE to every layer, so the cache is made without
one and each RoPE layer rotates its own q and k (`rotate_qk`) at the cache's query positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import (
    LayerRope,
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
from packaging_plugin.families.smollm3.config import (
    MODEL_TYPES,
    RMS_NORM_EPS,
    ROPE_THETA,
    rope_layers,
)
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class SmolLM3Config:
    sizes: ModelSizes
    layout: AttentionLayout
    layer_ropes: tuple[LayerRope | None, ...]  # None: the layer applies no RoPE
    intermediate_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> SmolLM3Config:
        if (act := cfg.get("hidden_act")) and act != "silu":
            raise ValueError(f"{model_type}: hidden_act {act!r} is not supported (silu only)")
        for flag in ("attention_bias", "mlp_bias", "use_sliding_window"):
            if cfg.get(flag):
                raise ValueError(f"{model_type}: {flag}=true is not supported")
        scaling = cfg.get("rope_scaling") or {}
        if scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
            raise ValueError(f"{model_type}: rope_scaling {scaling!r} is not supported")
        heads, kv_heads, head_dim = read_heads(model_type, cfg)
        layers = int(require(model_type, cfg, "num_hidden_layers"))
        has_theta = cfg.get("position_embedding_base") or cfg.get("rope_theta")
        rope = LayerRope(rope_theta(cfg) if has_theta else ROPE_THETA)
        uses_rope = rope_layers(
            layers, cfg.get("no_rope_layers"), cfg.get("no_rope_layer_interval"), ""
        )
        return cls(
            sizes=model_sizes(
                MODEL_TYPES[model_type], cfg, int(require(model_type, cfg, "hidden_size"))
            ),
            layout=AttentionLayout(
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rope_theta=rope.theta,
                rope=False,  # each layer rotates q and k itself, or not at all
            ),
            layer_ropes=tuple(rope if used else None for used in uses_rope),
            intermediate_size=int(require(model_type, cfg, "intermediate_size")),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or RMS_NORM_EPS),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)),
        )


class DecoderLayer(nn.Module):
    def __init__(self, cfg: SmolLM3Config, quant: Quantization, layer_id: int) -> None:
        super().__init__()
        hidden, eps = cfg.sizes.hidden_size, cfg.rms_norm_eps
        # Attribute order = packed parameter order, llama's in MLC.
        self.self_attn = FusedQKVAttention(
            hidden,
            cfg.layout,
            quant,
            sm_scale=cfg.layout.head_dim**-0.5,
            layer_rope=cfg.layer_ropes[layer_id],
        )
        self.mlp = GatedMLP(hidden, cfg.intermediate_size, quant, "silu")
        self.input_layernorm = rms_norm(hidden, eps, quant)
        self.post_attention_layernorm = rms_norm(hidden, eps, quant)

    def forward(
        self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int, positions: nn.Tensor
    ) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id, positions)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: SmolLM3Config, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.embed_tokens = Embedding("vocab_size", hidden, quant)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, quant, i) for i in range(cfg.layout.num_hidden_layers)]
        )
        self.norm = rms_norm(hidden, cfg.rms_norm_eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        # One position per query token of the whole batch, shared by every RoPE layer.
        positions = kv_cache.get_query_positions(b * s)
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id, positions)
        return self.norm(x)


class SmolLM3ForCausalLM(CausalLM):
    def __init__(self, cfg: SmolLM3Config, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.cfg = cfg
        self.model = Backbone(cfg, quant)
        if not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.sizes.hidden_size, "vocab_size", quant, out_dtype="float32")

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.model(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        if self.cfg.tie_word_embeddings:
            return self.model.embed_tokens.lm_head_forward(hidden)
        return self.lm_head(hidden)


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> SmolLM3ForCausalLM:
    cfg = SmolLM3Config.from_model_config(model_type, model_config)
    return SmolLM3ForCausalLM(cfg, quant, target)
