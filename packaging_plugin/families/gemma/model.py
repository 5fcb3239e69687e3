"""Gemma and Gemma-2 in `tvm.relax.frontend.nn`, with MLC's parameter names and order.

Both are llama-shaped (`model.layers.{i}.self_attn.qkv_proj`, `o_proj`, `mlp.gate_up_proj`,
`mlp.down_proj`, `model.norm`) with:

- the lm_head always tied to the embeddings, and the embeddings scaled by sqrt(hidden_size)
  before the first layer (in `hidden_states`: `embed` returns the plain rows, as in MLC);
- a GELU-tanh gated MLP (`hidden_activation` gelu / gelu_pytorch_tanh);
- RMSNorm weights stored as HF weight + 1 (the converter adds the 1, as MLC's loader does), so
  the norms here are plain RMSNorms;
- explicit `head_dim` (256 in the released models, not hidden / heads).

Gemma-2 adds `pre_feedforward_layernorm` / `post_feedforward_layernorm`, puts the attention
output through `post_attention_layernorm` before its residual add, scales attention scores by
`query_pre_attn_scalar ** -0.5` and soft-caps the final logits (`tanh(l / c) * c`). Like MLC, it
uses its sliding window (4096) as the context window, where the alternating local/global layers
of transformers see the same tokens, and leaves out the attention-score soft-capping, which TVM's
attention kernels do not have. MLC computes the attention scale from head_dim instead of
`query_pre_attn_scalar`; those differ for Gemma-2-27B, so we follow transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
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
from packaging_plugin.families.gemma.config import ACTIVATIONS, MODEL_TYPES, RMS_NORM_EPS
from packaging_plugin.quantization.layers import Embedding
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class GemmaConfig:
    gemma2: bool
    sizes: ModelSizes
    layout: AttentionLayout
    intermediate_size: int
    rms_norm_eps: float
    sm_scale: float
    final_logit_softcapping: float  # 0: none

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> GemmaConfig:
        gemma2 = model_type == "gemma2"
        act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in ACTIVATIONS:
            raise ValueError(f"{model_type}: activation {act!r} is not supported (GELU only)")
        if cfg.get("attention_bias"):
            raise ValueError(f"{model_type}: attention_bias=true is not supported")
        heads, kv_heads, head_dim = read_heads(model_type, cfg)
        hidden = int(require(model_type, cfg, "hidden_size"))
        sizes = model_sizes(MODEL_TYPES[model_type], cfg, hidden)
        scalar = cfg.get("query_pre_attn_scalar") if gemma2 else None
        return cls(
            gemma2=gemma2,
            sizes=sizes,
            layout=AttentionLayout(
                num_hidden_layers=int(require(model_type, cfg, "num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rope_theta=rope_theta(cfg),
            ),
            intermediate_size=int(require(model_type, cfg, "intermediate_size")),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or RMS_NORM_EPS),
            sm_scale=float(scalar or head_dim) ** -0.5,
            final_logit_softcapping=float(cfg.get("final_logit_softcapping") or 0.0),
        )


class DecoderLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, quant: Quantization) -> None:
        super().__init__()
        hidden, eps = cfg.sizes.hidden_size, cfg.rms_norm_eps
        # Attribute order = packed parameter order, MLC's.
        self.self_attn = FusedQKVAttention(hidden, cfg.layout, quant, sm_scale=cfg.sm_scale)
        self.mlp = GatedMLP(hidden, cfg.intermediate_size, quant, "gelu_tanh")
        self.input_layernorm = rms_norm(hidden, eps, quant)
        self.post_attention_layernorm = rms_norm(hidden, eps, quant)
        self.gemma2 = cfg.gemma2
        if cfg.gemma2:
            self.pre_feedforward_layernorm = rms_norm(hidden, eps, quant)
            self.post_feedforward_layernorm = rms_norm(hidden, eps, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        attn = self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        if not self.gemma2:
            x = x + attn
            return x + self.mlp(self.post_attention_layernorm(x))
        x = x + self.post_attention_layernorm(attn)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class Backbone(nn.Module):
    def __init__(self, cfg: GemmaConfig, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.embed_tokens = Embedding("vocab_size", hidden, quant)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, quant) for _ in range(cfg.layout.num_hidden_layers)]
        )
        self.norm = rms_norm(hidden, cfg.rms_norm_eps, quant)
        self.embed_scale = hidden**0.5

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        x = x * self.embed_scale
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id)
        return self.norm(x)


class GemmaForCausalLM(CausalLM):
    def __init__(self, cfg: GemmaConfig, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.cfg = cfg
        self.model = Backbone(cfg, quant)

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.model(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        logits = self.model.embed_tokens.lm_head_forward(hidden)
        cap = self.cfg.final_logit_softcapping
        if cap:
            logits = op.tanh(logits / cap) * cap
        return logits


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> GemmaForCausalLM:
    return GemmaForCausalLM(GemmaConfig.from_model_config(model_type, model_config), quant, target)
