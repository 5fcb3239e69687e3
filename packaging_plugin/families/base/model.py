"""What every decoder-only family shares: the exported function set, attention, the gated MLP.

A family's `model.py` reads its MLC `model_config` into `ModelSizes` (families/base/config.py)
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
from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from packaging_plugin.families.base.config import LayerRope, ModelSizes
from packaging_plugin.quantization.layers import Linear
from packaging_plugin.quantization.schemes import Quantization


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
    rope: bool = True  # False: the cache applies no rotary embedding (learned or own positions)
    # Per layer, "mha" or "mha_sliding" (gemma3); empty: "mha" everywhere.
    attn_kinds: tuple[str, ...] = ()
    # The window of the "mha_sliding" layers, compiled into the cache's kernels.
    layer_sliding_window: int = 0

    def metadata(self) -> dict[str, int]:
        return {
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
        }


# ----------------------------------------------------------------------------------------------
# Layers


def rotate_qk(
    qkv: nn.Tensor, positions: nn.Tensor, rope: LayerRope, num_q_heads: int, num_kv_heads: int
) -> nn.Tensor:
    """RoPE (rotate-half, all of head_dim) on the q and k heads of a fused `[b, s, heads, d]`.

    For a rotary embedding the paged KV cache cannot apply: it has one base for every layer,
    while gemma3 and smollm3 differ per layer. `positions` are the cache's query positions
    (`get_query_positions`, `[b * s]`); angles are computed in float32, as transformers does.
    """
    d = qkv.shape[-1]
    half = d // 2
    rotated_heads = num_q_heads + num_kv_heads

    def compute(x: te.Tensor, pos: te.Tensor) -> te.Tensor:
        seq_len = x.shape[1]
        theta = tirx.const(rope.theta, "float32")
        factor = tirx.const(rope.factor, "float32")

        def value(bi: Any, si: Any, h: Any, di: Any) -> Any:
            exponent = ((di % half) * 2).astype("float32") / tirx.const(d, "float32")
            inv_freq = tirx.const(1.0, "float32") / tirx.power(theta, exponent) / factor
            angle = pos[bi * seq_len + si].astype("float32") * inv_freq
            partner = tirx.if_then_else(
                di < half, -x[bi, si, h, di + half], x[bi, si, h, di - half]
            ).astype("float32")
            out = tirx.cos(angle) * x[bi, si, h, di].astype("float32")
            out = out + tirx.sin(angle) * partner
            return tirx.if_then_else(h < rotated_heads, out.astype(x.dtype), x[bi, si, h, di])

        return te.compute(x.shape, value, name="rotary")

    return op.tensor_expr_op(compute, "rotary_embedding", [qkv, positions])


class FusedQKVAttention(nn.Module):
    """Self-attention on the paged KV cache from one fused `[q; k; v]` projection.

    `qkv_name` / `out_name` are the family's parameter names; the cache applies RoPE, unless
    `layer_rope` is given (the layer's own, see `rotate_qk`; the cache then has none).
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
        layer_rope: LayerRope | None = None,
    ) -> None:
        super().__init__()
        self.layer_rope = layer_rope
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

    def forward(
        self,
        x: nn.Tensor,
        kv_cache: PagedKVCache,
        layer_id: int,
        positions: nn.Tensor | None = None,
    ) -> nn.Tensor:
        """`positions`: the cache's query positions, needed where the layer has `layer_rope`."""
        b, s, _ = x.shape
        h_q, h_kv, d = self.num_q_heads, self.num_kv_heads, self.head_dim
        qkv = op.reshape(getattr(self, self.qkv_name)(x), (b, s, h_q + 2 * h_kv, d))
        if self.qk_norm:
            # Per head, over head_dim (the last axis), and before the cache applies RoPE.
            q, k, v = op.split(qkv, [h_q, h_q + h_kv], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        if self.layer_rope is not None:
            assert positions is not None, "a layer with its own RoPE needs the query positions"
            qkv = rotate_qk(qkv, positions, self.layer_rope, h_q, h_kv)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, h_q, sm_scale=self.sm_scale)
        return getattr(self, self.out_name)(op.reshape(out, (b, s, h_q * d)))


ACTIVATIONS: dict[str, Callable[[nn.Tensor], nn.Tensor]] = {
    "silu": op.silu,
    "gelu": op.gelu,  # exact (erf), as torch's and transformers' "gelu"
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
        """The exported module, with any kernel the family replaces (phi3's longrope)."""
        return mod

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
        # A per-layer kind list, and the window of its sliding layers, only where they exist:
        # the runtime then keeps every page and windows those layers itself.
        kinds: dict[str, Any] = {"attn_kind": "mha"}
        if layout.attn_kinds:
            kinds = {
                "attn_kind": list(layout.attn_kinds),
                "layer_sliding_window_size": layout.layer_sliding_window,
            }
        return TIRPagedKVCache(
            **kinds,
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
