"""The llama architecture family (llama, mistral, qwen2, qwen3) in `tvm.relax.frontend.nn`.

One module serves the four `model_type`s; they differ only in configuration (the table in
`config.py`).

qwen3 normalizes each head of q and k (RMSNorm over head_dim, `self_attn.q_norm` / `k_norm`)
before RoPE, which the KV cache applies, so the norms run on the fused QKV before it goes in;
its `attention_bias` puts a bias on both c_attn and o_proj, as in MLC and transformers. Its
head_dim is explicit and may differ from hidden_size / num_attention_heads.

Both rope keys are accepted for every family. Attention runs on TVM's paged KV cache
(`TIRPagedKVCache`), which also applies RoPE (llama3 scaling included). Sliding-window attention
is a property of the sequences in that cache, switched on by the MLC runtime when the library's
metadata has `sliding_window_size != -1`; the compiled kernels are the same.

Parameter names, the packed-parameter order and the exported function set follow the MLC-LLM
runtime's contract (see docs and notes/mlc-model-lib-abi.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
from packaging_plugin.families.llama.config import VARIANTS, LlamaVariant
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class LlamaConfig:
    """The subset of an MLC `model_config` this architecture reads, normalized."""

    variant: LlamaVariant
    sizes: ModelSizes
    layout: AttentionLayout
    qkv_bias: bool
    o_proj_bias: bool
    intermediate_size: int
    rms_norm_eps: float
    tie_word_embeddings: bool

    @classmethod
    def from_model_config(cls, variant: LlamaVariant, cfg: dict[str, Any]) -> LlamaConfig:
        """Read an MLC model_config (overrides applied); ValueError names what is wrong."""
        kind = variant.rules.model_type
        heads, kv_heads, head_dim = read_heads(kind, cfg)
        if (hidden_act := cfg.get("hidden_act")) and hidden_act != "silu":
            raise ValueError(f"{kind}: hidden_act {hidden_act!r} is not supported (silu only)")
        sizes = model_sizes(variant.rules, cfg, int(require(kind, cfg, "hidden_size")))
        attention_bias = variant.attention_bias_key and bool(cfg.get("attention_bias", False))
        return cls(
            variant=variant,
            sizes=sizes,
            layout=AttentionLayout(
                num_hidden_layers=int(require(kind, cfg, "num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rope_theta=rope_theta(cfg),
                # MLC's key, or transformers 5's (a raw config.json of a checkpoint).
                rope_scaling=_rope_scaling(cfg.get("rope_scaling") or cfg.get("rope_parameters")),
            ),
            qkv_bias=variant.qkv_bias or attention_bias,
            o_proj_bias=attention_bias,
            intermediate_size=int(require(kind, cfg, "intermediate_size")),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or variant.mlc_rms_norm_eps),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


def _rope_scaling(value: dict[str, Any] | None) -> dict[str, Any]:
    """Normalize rope_scaling: {} for none, a llama3 dict with the keys TVM's RoPE reads."""
    if not value:
        return {}
    kind = value.get("rope_type", value.get("type"))
    if kind in (None, "default"):
        return {}
    if kind != "llama3":
        raise ValueError(f"rope_scaling type {kind!r} is not supported (llama3 only)")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ValueError(f"llama3 rope_scaling lacks {', '.join(missing)}")
    return {"rope_type": "llama3", **{k: float(value[k]) for k in keys}}


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        hidden, eps = cfg.sizes.hidden_size, cfg.rms_norm_eps
        # Attribute order = packed parameter order; kept as MLC's.
        self.self_attn = FusedQKVAttention(
            hidden,
            cfg.layout,
            quant,
            sm_scale=cfg.layout.head_dim**-0.5,
            qkv_name=cfg.variant.qkv_name,
            qkv_bias=cfg.qkv_bias,
            out_bias=cfg.o_proj_bias,
            qk_norm_eps=eps if cfg.variant.qk_norm else None,
        )
        self.mlp = GatedMLP(hidden, cfg.intermediate_size, quant, "silu")
        self.input_layernorm = rms_norm(hidden, eps, quant)
        self.post_attention_layernorm = rms_norm(hidden, eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        # The vocabulary stays symbolic, as in MLC: metadata says "vocab_size" and the runtime
        # takes the real value from mlc-chat-config.json.
        self.embed_tokens = Embedding("vocab_size", hidden, quant)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, quant) for _ in range(cfg.layout.num_hidden_layers)]
        )
        self.norm = rms_norm(hidden, cfg.rms_norm_eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id)
        return self.norm(x)


class LlamaForCausalLM(CausalLM):
    def __init__(self, cfg: LlamaConfig, quant: Quantization, target: Target) -> None:
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
) -> LlamaForCausalLM:
    """The model of `model_type` (one of VARIANTS) for an MLC model_config."""
    cfg = LlamaConfig.from_model_config(VARIANTS[model_type], model_config)
    return LlamaForCausalLM(cfg, quant, target)
