"""GPT-NeoX (`gpt_neox`: Pythia, RedPajama-INCITE) in `tvm.relax.frontend.nn`, with MLC's parameter
names and order.

`gpt_neox.embed_in` (vocabulary symbolic), `gpt_neox.layers.{i}.{input_layernorm,
post_attention_layernorm, attention.query_key_value, attention.dense, mlp.dense_h_to_4h,
mlp.dense_4h_to_h}` (LayerNorms with biases; linears with biases, the attention's only with
`attention_bias`), `gpt_neox.final_layer_norm` and the untied `embed_out`.

The fused projection is read as [q heads; k heads; v heads], the order the paged KV cache wants:
the converter reorders the checkpoint's per-head [q, k, v] rows into it, as MLC's converter
does, so the same weights serve both. The cache applies RoPE, NeoX's rotate-half, to the first
`rotary_pct` of each head. A layer adds attention and MLP to its input in parallel (both read the
layer's input: Pythia, GPT-NeoX-20B) or in sequence (RedPajama-INCITE-3B). From its matmuls on,
the MLP computes in `ffn_out_dtype` (MLC's default float32, its biases stored so), then returns to
the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import ModelSizes, model_sizes, require, rope_theta
from packaging_plugin.families.base.model import (
    ACTIVATIONS,
    AttentionLayout,
    CausalLM,
    FusedQKVAttention,
)
from packaging_plugin.families.gpt_neox.config import (
    FFN_OUT_DTYPE,
    HIDDEN_ACTS,
    LAYER_NORM_EPS,
    MODEL_TYPES,
    check_rotary_dim,
    rotary_dim,
)
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class GPTNeoXConfig:
    sizes: ModelSizes
    layout: AttentionLayout
    intermediate_size: int
    layer_norm_eps: float
    use_parallel_residual: bool
    activation: str  # a key of base ACTIVATIONS
    attention_bias: bool
    ffn_out_dtype: str

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> GPTNeoXConfig:
        # MLC's config has no hidden_act (its model always computes "gelu").
        act = cfg.get("hidden_act") or "gelu"
        if act not in HIDDEN_ACTS:
            raise ValueError(f"{model_type}: hidden_act {act!r} is not supported")
        if cfg.get("tie_word_embeddings"):
            raise ValueError(f"{model_type}: tie_word_embeddings is not supported")
        hidden = int(require(model_type, cfg, "hidden_size"))
        heads = int(require(model_type, cfg, "num_attention_heads"))
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        if head_dim * heads != hidden:
            raise ValueError(
                f"{model_type}: head_dim {head_dim} x {heads} heads != hidden_size {hidden}"
            )
        pct = float(require(model_type, cfg, "rotary_pct"))
        if problem := check_rotary_dim(head_dim, pct):
            raise ValueError(f"{model_type}: {problem}")
        return cls(
            sizes=model_sizes(MODEL_TYPES[model_type], cfg, hidden),
            layout=AttentionLayout(
                num_hidden_layers=int(require(model_type, cfg, "num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=heads,
                head_dim=head_dim,
                rope_theta=rope_theta(cfg),
                rotary_dim=rotary_dim(head_dim, pct),
            ),
            intermediate_size=int(require(model_type, cfg, "intermediate_size")),
            layer_norm_eps=float(cfg.get("layer_norm_eps") or LAYER_NORM_EPS),
            use_parallel_residual=bool(require(model_type, cfg, "use_parallel_residual")),
            activation=HIDDEN_ACTS[act],
            attention_bias=bool(cfg.get("attention_bias", True)),
            ffn_out_dtype=str(cfg.get("ffn_out_dtype") or FFN_OUT_DTYPE),
        )


class MLP(nn.Module):
    """`dense_4h_to_h(act(dense_h_to_4h(x)))`, computed in `ffn_out_dtype` from the matmuls on."""

    def __init__(self, cfg: GPTNeoXConfig, quant: Quantization) -> None:
        super().__init__()
        hidden, inner, out_dtype = cfg.sizes.hidden_size, cfg.intermediate_size, cfg.ffn_out_dtype
        self.model_dtype = quant.model_dtype
        self.activation = ACTIVATIONS[cfg.activation]
        self.dense_h_to_4h = Linear(hidden, inner, quant, bias=True, out_dtype=out_dtype)
        self.dense_4h_to_h = Linear(inner, hidden, quant, bias=True, out_dtype=out_dtype)
        # MLC stores these biases in ffn_out_dtype, not the model's dtype: the same parameters.
        self.dense_h_to_4h.bias = nn.Parameter((inner,), out_dtype)
        self.dense_4h_to_h.bias = nn.Parameter((hidden,), out_dtype)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        h = self.activation(self.dense_h_to_4h(x))
        if h.dtype != self.model_dtype:
            h = h.astype(self.model_dtype)
        y = self.dense_4h_to_h(h)
        return y if y.dtype == self.model_dtype else y.astype(self.model_dtype)


class Layer(nn.Module):
    def __init__(self, cfg: GPTNeoXConfig, quant: Quantization) -> None:
        super().__init__()
        hidden, eps, dtype = cfg.sizes.hidden_size, cfg.layer_norm_eps, quant.model_dtype
        self.use_parallel_residual = cfg.use_parallel_residual
        # Attribute order = packed parameter order, MLC's: both norms before the attention.
        self.input_layernorm = nn.LayerNorm(hidden, eps, dtype=dtype)
        self.post_attention_layernorm = nn.LayerNorm(hidden, eps, dtype=dtype)
        self.attention = FusedQKVAttention(
            hidden,
            cfg.layout,
            quant,
            sm_scale=cfg.layout.head_dim**-0.5,
            qkv_name="query_key_value",
            out_name="dense",
            qkv_bias=cfg.attention_bias,
            out_bias=cfg.attention_bias,
        )
        self.mlp = MLP(cfg, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        attn = self.attention(self.input_layernorm(x), kv_cache, layer_id)
        if self.use_parallel_residual:
            # Summed in transformers' order.
            return self.mlp(self.post_attention_layernorm(x)) + attn + x
        x = attn + x
        return self.mlp(self.post_attention_layernorm(x)) + x


class Backbone(nn.Module):
    def __init__(self, cfg: GPTNeoXConfig, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.embed_in = Embedding("vocab_size", hidden, quant)
        self.layers = nn.ModuleList(
            [Layer(cfg, quant) for _ in range(cfg.layout.num_hidden_layers)]
        )
        self.final_layer_norm = nn.LayerNorm(hidden, cfg.layer_norm_eps, dtype=quant.model_dtype)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id)
        return self.final_layer_norm(x)


class GPTNeoXForCausalLM(CausalLM):
    def __init__(self, cfg: GPTNeoXConfig, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.gpt_neox = Backbone(cfg, quant)
        self.embed_out = Linear(cfg.sizes.hidden_size, "vocab_size", quant, out_dtype="float32")

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.gpt_neox.embed_in(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.gpt_neox(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        return self.embed_out(hidden)


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> GPTNeoXForCausalLM:
    cfg = GPTNeoXConfig.from_model_config(model_type, model_config)
    return GPTNeoXForCausalLM(cfg, quant, target)
