"""What every decoder-only family shares: the exported function set, attention, the gated MLP.

A family module (llama.py, gemma.py, phi3.py) reads its MLC `model_config` into `ModelSizes`
and `AttentionLayout`, builds its layers from the pieces here, and subclasses `CausalLM`, which
turns three family hooks (`embed`, `hidden_states`, `logits`) into every function the MLC
runtime looks up (notes/mlc-model-lib-abi.md) with the signatures and symbolic sizes it expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax as rx
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from packaging_plugin.families.phi3 import rope
from packaging_plugin.quantization.packing import Linear, Quantization


@dataclass(frozen=True)
class ModelSizes:
    """The sizes `_metadata` reports and memory planning bounds."""

    hidden_size: int
    context_window_size: int  # -1: unbounded (the sliding window bounds the cache)
    prefill_chunk_size: int
    sliding_window_size: int  # -1: off
    attention_sink_size: int  # -1: off
    max_batch_size: int


@dataclass(frozen=True)
class AttentionLayout:
    """What the paged KV cache is built from (and `_metadata.kv_cache` reports)."""

    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float
    rope_scaling: dict[str, Any] = field(default_factory=dict)  # {} or TVM's scaling dict
    # longrope only: the long factors then the short ones, rotary_dim values in all.
    rope_ext_factors: tuple[float, ...] = ()
    rotary_dim: int = 0  # 0: all of head_dim
    rope: bool = True  # False: the cache applies no rotary embedding (learned positions)

    def metadata(self) -> dict[str, int]:
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
        }


def require(model_type: str, cfg: dict[str, Any], key: str) -> Any:
    """`cfg[key]`, or a ValueError naming the family and the missing key."""
    if cfg.get(key) is None:
        raise ValueError(f"{model_type} model_config lacks {key!r}")
    return cfg[key]


def read_sizes(
    model_type: str,
    cfg: dict[str, Any],
    *,
    prefill_cap: int,
    sliding_window: bool = False,
    context_cap: int | None = None,
) -> ModelSizes:
    """The sizes of an MLC model_config (overrides applied), with MLC's defaults.

    `sliding_window`: the family may have sliding-window attention (then an unset context
    window means unbounded). `context_cap`: an upper bound on the context window (Gemma-2's
    sliding window, which MLC uses as its context).
    """
    sliding = cfg.get("sliding_window_size")
    if sliding is None and sliding_window:
        sliding = cfg.get("sliding_window")
    sliding = -1 if sliding in (None, 0) else int(sliding)
    if sliding != -1 and not sliding_window:
        raise ValueError(f"{model_type} does not support sliding_window_size (got {sliding})")
    sink = cfg.get("attention_sink_size")
    if sink is None:
        sink = 4 if sliding != -1 else -1  # MLC's mistral default
    context = cfg.get("context_window_size") or cfg.get("max_position_embeddings")
    if context_cap:
        context = min(int(context), context_cap) if context else context_cap
    if not context:
        if sliding == -1:
            raise ValueError(f"{model_type} model_config lacks 'context_window_size'")
        context = -1
    prefill = cfg.get("prefill_chunk_size") or min(
        c for c in (int(context), sliding, prefill_cap) if c > 0
    )
    for key in ("tensor_parallel_shards", "pipeline_parallel_stages"):
        if int(cfg.get(key) or 1) != 1:
            raise ValueError(f"{key}={cfg[key]}: only 1 is supported on a single device")
    return ModelSizes(
        hidden_size=int(require(model_type, cfg, "hidden_size")),
        context_window_size=int(context),
        prefill_chunk_size=int(prefill),
        sliding_window_size=sliding,
        attention_sink_size=int(sink),
        max_batch_size=int(cfg.get("max_batch_size") or 1),
    )


def read_heads(model_type: str, cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(num_attention_heads, num_key_value_heads, head_dim), checked."""
    heads = int(require(model_type, cfg, "num_attention_heads"))
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or int(require(model_type, cfg, "hidden_size")) // heads)
    if heads % kv_heads:
        raise ValueError(
            f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads})"
        )
    return heads, kv_heads, head_dim


def rope_theta(cfg: dict[str, Any]) -> float:
    """MLC calls it position_embedding_base for some families and rope_theta for others."""
    params = cfg.get("rope_parameters") or {}
    return float(
        cfg.get("position_embedding_base")
        or cfg.get("rope_theta")
        or params.get("rope_theta")
        or 10000.0
    )


# ----------------------------------------------------------------------------------------------
# Layers


class FusedQKVAttention(nn.Module):
    """Self-attention on the paged KV cache from one fused `[q; k; v]` projection.

    `qkv_name` / `out_name` are the family's parameter names; the cache applies RoPE.
    `qk_norm`: a per-head RMSNorm of q and k before RoPE (qwen3), declared after the output
    projection, which is where MLC puts them in the packed parameter order.
    """

    def __init__(
        self,
        hidden_size: int,
        layout: AttentionLayout,
        quant: Quantization,
        *,
        sm_scale: float,
        qkv_name: str = "qkv_proj",
        out_name: str = "o_proj",
        qkv_bias: bool = False,
        out_bias: bool = False,
        qk_norm_eps: float | None = None,
    ) -> None:
        super().__init__()
        self.num_q_heads = layout.num_attention_heads
        self.num_kv_heads = layout.num_key_value_heads
        self.head_dim = layout.head_dim
        self.sm_scale = sm_scale
        self.qkv_name, self.out_name = qkv_name, out_name
        qkv_out = (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim
        # Attribute order = packed parameter order.
        setattr(self, qkv_name, Linear(hidden_size, qkv_out, quant, bias=qkv_bias))
        out = Linear(self.num_q_heads * self.head_dim, hidden_size, quant, bias=out_bias)
        setattr(self, out_name, out)
        self.qk_norm = qk_norm_eps is not None
        if qk_norm_eps is not None:
            dtype = quant.model_dtype
            self.q_norm = nn.RMSNorm(self.head_dim, -1, qk_norm_eps, bias=False, dtype=dtype)
            self.k_norm = nn.RMSNorm(self.head_dim, -1, qk_norm_eps, bias=False, dtype=dtype)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        b, s, _ = x.shape
        h_q, h_kv, d = self.num_q_heads, self.num_kv_heads, self.head_dim
        qkv = op.reshape(getattr(self, self.qkv_name)(x), (b, s, h_q + 2 * h_kv, d))
        if self.qk_norm:
            # Per head, over head_dim (the last axis), and before the cache applies RoPE.
            q, k, v = op.split(qkv, [h_q, h_q + h_kv], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, h_q, sm_scale=self.sm_scale)
        return getattr(self, self.out_name)(op.reshape(out, (b, s, h_q * d)))


ACTIVATIONS: dict[str, Callable[[nn.Tensor], nn.Tensor]] = {
    "silu": op.silu,
    "gelu_tanh": lambda x: op.gelu(x, approximate="tanh"),
}


class GatedMLP(nn.Module):
    """`down(act(gate) * up)` from one fused `gate_up_proj` ([gate; up] on the output axis)."""

    def __init__(
        self, hidden_size: int, intermediate_size: int, quant: Quantization, activation: str
    ) -> None:
        super().__init__()
        self.activation = ACTIVATIONS[activation]
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, quant)
        self.down_proj = Linear(intermediate_size, hidden_size, quant)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(self.activation(gate) * up)


def rms_norm(size: int, eps: float, quant: Quantization) -> nn.RMSNorm:
    return nn.RMSNorm(size, -1, eps, bias=False, dtype=quant.model_dtype)


# ----------------------------------------------------------------------------------------------
# The exported model


class CausalLM(nn.Module):
    """The exported model: every public method below is one function of the model library.

    Subclasses build their parameters (after calling this `__init__`) and implement `embed`
    (token ids -> embeddings), `hidden_states` (embeddings -> final hidden states, through the
    KV cache) and `logits` (hidden states -> float32 logits).
    """

    def __init__(
        self, sizes: ModelSizes, layout: AttentionLayout, quant: Quantization, target: Target
    ) -> None:
        super().__init__()
        self.sizes = sizes
        self.layout = layout
        self.quant = quant
        self.dtype = quant.model_dtype
        self.target = target  # TIRPagedKVCache picks its kernels (CPU or GPU) by target kind

    # -- family hooks --------------------------------------------------------------------------

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        raise NotImplementedError

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        raise NotImplementedError

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        raise NotImplementedError

    def finish_module(self, mod: tvm.IRModule) -> tvm.IRModule:
        """The exported module with the longrope split-rotary kernel in place (see rope.py)."""
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

    # -- exported functions --------------------------------------------------------------------

    def prefill(
        self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        hidden = self.hidden_states(input_embed, paged_kv_cache)

        def last_token(x: te.Tensor) -> te.Tensor:
            b, s, d = x.shape
            return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="index")

        # Only the last position's logits are needed: slice before the lm_head.
        hidden = op.tensor_expr_op(last_token, "index", [hidden])
        return self.logits(hidden), paged_kv_cache

    def decode(
        self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self.logits(self.hidden_states(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(
        self, input_embeds: nn.Tensor, logit_positions: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        hidden = self.hidden_states(input_embeds, paged_kv_cache)
        hidden = op.take(hidden, logit_positions, axis=1)
        return self.logits(hidden), paged_kv_cache

    def batch_decode(
        self, input_embeds: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self.logits(self.hidden_states(input_embeds, paged_kv_cache)), paged_kv_cache

    def batch_verify(
        self, input_embeds: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self.logits(self.hidden_states(input_embeds, paged_kv_cache)), paged_kv_cache

    def create_tir_paged_kv_cache(
        self,
        max_batch_size: Any,
        max_total_seq_len: Any,
        prefill_chunk_size: Any,
        page_size: Any,
        support_sliding_window: Any,
    ) -> PagedKVCache:
        layout = self.layout
        if layout.rope_ext_factors:
            ext_factors: rx.Expr = rx.const(np.asarray(layout.rope_ext_factors, "float32"))
        else:
            # Not a tensor: the runtime reads "no extension factors".
            ext_factors = rx.prim_value(0)
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, layout.num_hidden_layers]),
            num_hidden_layers=layout.num_hidden_layers,
            num_attention_heads=layout.num_attention_heads,
            num_key_value_heads=layout.num_key_value_heads,
            qk_head_dim=layout.head_dim,
            v_head_dim=layout.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL if layout.rope else RopeMode.NONE,
            rope_scale=1,
            rope_theta=layout.rope_theta,
            # TVM cannot build its own longrope kernel: plain RoPE here, replaced by ours in
            # `finish_module`.
            rope_scaling={} if layout.rope_ext_factors else layout.rope_scaling,
            rope_ext_factors=ext_factors,
            rotary_dim=layout.rotary_dim or layout.head_dim,
            enable_disaggregation=False,
            dtype=self.dtype,
            target=self.target,
        )

    def alloc_embedding_tensor(self) -> nn.Tensor:
        # The runtime allocates its embedding buffer through this and reads hidden_size from it.
        return op.empty([self.sizes.prefill_chunk_size, self.sizes.hidden_size], self.dtype)

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        hidden, dtype = self.sizes.hidden_size, self.dtype
        packed = {"param_mode": "packed", "effect_mode": "none"}
        no_params = {"param_mode": "none", "effect_mode": "none"}
        kv = nn.spec.Object(object_type=PagedKVCache)
        spec = {
            "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
            "prefill": {
                "input_embed": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "decode": {
                "input_embed": nn.spec.Tensor([1, 1, hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_prefill": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "logit_positions": nn.spec.Tensor(["batch_size"], "int32"),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_decode": {
                "input_embeds": nn.spec.Tensor(["batch_size", 1, hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "batch_verify": {
                "input_embeds": nn.spec.Tensor([1, "seq_len", hidden], dtype),
                "paged_kv_cache": kv,
                "$": packed,
            },
            "create_tir_paged_kv_cache": {
                "max_batch_size": int,
                "max_total_seq_len": int,
                "prefill_chunk_size": int,
                "page_size": int,
                "support_sliding_window": int,
                "$": no_params,
            },
            "alloc_embedding_tensor": {"$": no_params},
        }
        return nn.spec.ModuleSpec.from_raw(spec, self)
