"""GPT-2 (`gpt2`) in `tvm.relax.frontend.nn`, with MLC's parameter names and order.

`transformer.wte` (token embeddings, vocabulary symbolic), `transformer.wpe` (learned position
embeddings), `transformer.h.{i}.{ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj}`
(LayerNorms and linears with biases), `transformer.ln_f` and an untied `lm_head` (MLC stores a
copy of the embeddings there). No RoPE: the KV cache is made without it, and each query's
position comes from the cache (`get_query_positions`) to index `wpe`.

`wpe` has `n_positions` rows, the length the checkpoint was trained for, whatever the context
window: a smaller context window (an override, for a phone) must not change the shape of a
stored weight. MLC sizes it by the context window, so its libraries cannot load their own
weights after such an override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import ModelSizes, model_sizes, require
from packaging_plugin.families.base.model import AttentionLayout, CausalLM, FusedQKVAttention
from packaging_plugin.families.gpt2.config import ACTIVATIONS, LAYER_NORM_EPS, MODEL_TYPES
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class GPT2Config:
    sizes: ModelSizes
    layout: AttentionLayout
    n_positions: int
    inner_size: int
    layer_norm_eps: float
    scale_attn_by_inverse_layer_idx: bool

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> GPT2Config:
        if (act := cfg.get("activation_function")) not in (None, *ACTIVATIONS):
            raise ValueError(f"{model_type}: activation_function {act!r} is not supported")
        hidden = int(require(model_type, cfg, "n_embd"))
        heads = int(require(model_type, cfg, "n_head"))
        n_positions = int(cfg.get("n_positions") or require(model_type, cfg, "context_window_size"))
        context = min(int(cfg.get("context_window_size") or n_positions), n_positions)
        sizes = model_sizes(
            MODEL_TYPES[model_type], {**cfg, "context_window_size": context}, hidden
        )
        inner = cfg.get("n_inner")
        return cls(
            sizes=sizes,
            layout=AttentionLayout(
                num_hidden_layers=int(require(model_type, cfg, "n_layer")),
                num_attention_heads=heads,
                num_key_value_heads=heads,
                head_dim=int(cfg.get("head_dim") or hidden // heads),
                rope_theta=0.0,
                rope=False,
            ),
            n_positions=n_positions,
            inner_size=4 * hidden if inner in (None, -1) else int(inner),
            layer_norm_eps=float(cfg.get("layer_norm_epsilon") or LAYER_NORM_EPS),
            scale_attn_by_inverse_layer_idx=bool(cfg.get("scale_attn_by_inverse_layer_idx")),
        )


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int, quant: Quantization) -> None:
        super().__init__()
        self.c_fc = Linear(hidden, inner, quant, bias=True)
        self.c_proj = Linear(inner, hidden, quant, bias=True)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.c_proj(op.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: GPT2Config, quant: Quantization, layer_id: int) -> None:
        super().__init__()
        hidden, eps, dtype = cfg.sizes.hidden_size, cfg.layer_norm_eps, quant.model_dtype
        scale = cfg.layout.head_dim**-0.5
        if cfg.scale_attn_by_inverse_layer_idx:
            scale /= layer_id + 1
        # Attribute order = packed parameter order, MLC's.
        self.ln_1 = nn.LayerNorm(hidden, eps, dtype=dtype)
        self.attn = FusedQKVAttention(
            hidden,
            cfg.layout,
            quant,
            sm_scale=scale,
            qkv_name="c_attn",
            out_name="c_proj",
            qkv_bias=True,
            out_bias=True,
        )
        self.ln_2 = nn.LayerNorm(hidden, eps, dtype=dtype)
        self.mlp = MLP(hidden, cfg.inner_size, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer_id)
        return x + self.mlp(self.ln_2(x))


class Backbone(nn.Module):
    def __init__(self, cfg: GPT2Config, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.wte = Embedding("vocab_size", hidden, quant)
        self.wpe = Embedding(cfg.n_positions, hidden, quant)
        self.h = nn.ModuleList([Block(cfg, quant, i) for i in range(cfg.layout.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(hidden, cfg.layer_norm_eps, dtype=quant.model_dtype)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        b, s, h = x.shape
        # One position per query token of the whole batch, sequence by sequence.
        positions = kv_cache.get_query_positions(b * s)
        x = x + op.reshape(self.wpe(positions), (b, s, h))
        for layer_id, layer in enumerate(self.h):
            x = layer(x, kv_cache, layer_id)
        return self.ln_f(x)


class GPT2LMHeadModel(CausalLM):
    def __init__(self, cfg: GPT2Config, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.transformer = Backbone(cfg, quant)
        self.lm_head = Linear(cfg.sizes.hidden_size, "vocab_size", quant, out_dtype="float32")

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.transformer.wte(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.transformer(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        return self.lm_head(hidden)


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> GPT2LMHeadModel:
    return GPT2LMHeadModel(GPT2Config.from_model_config(model_type, model_config), quant, target)
