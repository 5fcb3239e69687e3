"""Phi-2 and Phi-1.5 (`phi`, `phi-msft`) in `tvm.relax.frontend.nn`, with MLC's names and order.

Each block has one LayerNorm (`ln`) whose output feeds attention and the MLP in parallel, and
both are added to the residual: `x + attn(ln(x)) + mlp(ln(x))`. Attention is a biased fused
`mixer.Wqkv` and `mixer.out_proj`; RoPE covers the first `rotary_dim` of each head (rotate-half,
which the paged KV cache applies: 32 of Phi-2's 80). The MLP is `fc1`, GELU-tanh, `fc2`. The
lm_head has a LayerNorm of its own and a biased linear (`lm_head.ln`, `lm_head.linear`). Both
config spellings are read (config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import ModelSizes, model_sizes, rope_theta
from packaging_plugin.families.base.model import AttentionLayout, CausalLM, FusedQKVAttention
from packaging_plugin.families.phi.config import (
    ACTIVATIONS,
    DEFAULT_PARTIAL_ROTARY,
    LAYER_NORM_EPS,
    MODEL_TYPES,
    num_layers,
    read_key,
)
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class PhiConfig:
    sizes: ModelSizes
    layout: AttentionLayout
    vocab_size: int
    inner_size: int
    layer_norm_eps: float

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> PhiConfig:
        act = cfg.get("hidden_act") or cfg.get("activation_function")
        if act not in (None, *ACTIVATIONS):
            raise ValueError(f"{model_type}: activation {act!r} is not supported (GELU-tanh only)")
        hidden, heads = read_key(cfg, "hidden"), read_key(cfg, "heads")
        if hidden is None or heads is None:
            raise ValueError(f"{model_type} model_config lacks hidden_size or num_attention_heads")
        hidden, heads = int(hidden), int(heads)
        kv_heads = int(read_key(cfg, "kv_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        if heads % kv_heads:
            raise ValueError(f"{model_type}: {heads} heads are not a multiple of {kv_heads}")
        rotary_dim = cfg.get("rotary_dim") or int(
            float(cfg.get("partial_rotary_factor") or DEFAULT_PARTIAL_ROTARY) * head_dim
        )
        if not 0 < int(rotary_dim) <= head_dim or int(rotary_dim) % 2:
            raise ValueError(f"{model_type}: rotary_dim {rotary_dim} must be even and <= head_dim")
        return cls(
            sizes=model_sizes(MODEL_TYPES[model_type], cfg, hidden),
            layout=AttentionLayout(
                num_hidden_layers=num_layers(cfg),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=head_dim,
                rope_theta=rope_theta(cfg),
                rotary_dim=int(rotary_dim),
            ),
            vocab_size=int(cfg["vocab_size"]),
            inner_size=int(read_key(cfg, "inner") or 4 * hidden),
            layer_norm_eps=float(read_key(cfg, "eps") or LAYER_NORM_EPS),
        )


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int, quant: Quantization) -> None:
        super().__init__()
        self.fc1 = Linear(hidden, inner, quant, bias=True)
        self.fc2 = Linear(inner, hidden, quant, bias=True)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.fc2(op.gelu(self.fc1(x), approximate="tanh"))


class ParallelBlock(nn.Module):
    def __init__(self, cfg: PhiConfig, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        # Attribute order = packed parameter order, MLC's.
        self.ln = nn.LayerNorm(hidden, cfg.layer_norm_eps, dtype=quant.model_dtype)
        self.mixer = FusedQKVAttention(
            hidden,
            cfg.layout,
            quant,
            sm_scale=cfg.layout.head_dim**-0.5,
            qkv_name="Wqkv",
            out_name="out_proj",
            qkv_bias=True,
            out_bias=True,
        )
        self.mlp = MLP(hidden, cfg.inner_size, quant)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        normed = self.ln(x)
        return x + self.mixer(normed, kv_cache, layer_id) + self.mlp(normed)


class Backbone(nn.Module):
    def __init__(self, cfg: PhiConfig, quant: Quantization) -> None:
        super().__init__()
        # A numeric vocabulary, as MLC's phi declares it.
        self.embd = Embedding(cfg.vocab_size, cfg.sizes.hidden_size, quant)
        self.h = nn.ModuleList(
            [ParallelBlock(cfg, quant) for _ in range(cfg.layout.num_hidden_layers)]
        )

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.h):
            x = layer(x, kv_cache, layer_id)
        return x


class LMHead(nn.Module):
    def __init__(self, cfg: PhiConfig, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.ln = nn.LayerNorm(hidden, cfg.layer_norm_eps, dtype=quant.model_dtype)
        self.linear = Linear(hidden, "vocab_size", quant, bias=True, out_dtype="float32")

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        return self.linear(self.ln(x))


class PhiForCausalLM(CausalLM):
    def __init__(self, cfg: PhiConfig, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.transformer = Backbone(cfg, quant)
        self.lm_head = LMHead(cfg, quant)

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.transformer.embd(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.transformer(input_embed, paged_kv_cache)

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        return self.lm_head(hidden)


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> PhiForCausalLM:
    return PhiForCausalLM(PhiConfig.from_model_config(model_type, model_config), quant, target)
