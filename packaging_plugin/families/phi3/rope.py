"""The paged KV cache's q/k/v split with "longrope" RoPE (Phi-3.5, Phi-4-mini), our own kernel.

TVM 0.27's own longrope kernel cannot be built: its RoPE helper tests a buffer's truthiness
(`if ext_factors:`), which TVMScript refuses ("Cannot use and / or / not operator to Expr"), so
any KV cache with longrope scaling fails to construct. The KV cache is therefore created with
plain RoPE and its split-rotary function (`fused_rope`) replaced by this one, which has the
signature the runtime calls when the cache holds extension factors:
`(qkv, position_map, q, k, v, factors)`, `factors` = the long factors then the short ones
(rotary_dim / 2 each).

Which factors a token uses is decided by its own position (long from
`original_max_position_embeddings` on), where TVM's kernel looks at the number of tokens in the
call: decoding past the original length then rotates like transformers does (which decides per
forward call from the largest position in it).
"""

from __future__ import annotations

import math
from typing import Any

import tvm
from tvm import tirx
from tvm.script import tirx as T

SPLIT_ROTARY = "fused_rope"  # the name TVM 0.27's TIRPagedKVCache gives its plain RoPE kernel


def longrope_attention_factor(scaling: dict[str, Any]) -> float:
    """The cos/sin scale: given, or sqrt(1 + ln(factor) / ln(original)) as in the paper."""
    if scaling.get("attention_factor"):
        return float(scaling["attention_factor"])
    original = scaling["original_max_position_embeddings"]
    factor = scaling.get("factor") or scaling["max_position_embeddings"] / original
    return math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0


def longrope_split_rotary(
    *,
    head_dim: int,
    num_q_heads: int,
    num_kv_heads: int,
    dtype: str,
    rotary_dim: int,
    theta: float,
    original_max_position_embeddings: int,
    attention_factor: float,
) -> tirx.PrimFunc:
    """The split-and-rotate PrimFunc (unscheduled: dlight schedules it for GPUs)."""
    fused_heads = num_q_heads + 2 * num_kv_heads
    half = rotary_dim // 2
    original = original_max_position_embeddings

    def rotated(x: Any, s: Any, h: Any, d: Any, pos: Any, factors: Any) -> Any:
        pair = d % half
        factor = tirx.if_then_else(pos >= original, factors[pair], factors[pair + half])
        exponent = (pair * 2).astype("float32") / tirx.const(rotary_dim, "float32")
        freq = pos.astype("float32") / (factor * tirx.power(tirx.const(theta, "float32"), exponent))
        partner = tirx.if_then_else(d < half, -x[s, h, d + half], x[s, h, d - half])
        scale = tirx.const(attention_factor, "float32")
        value = tirx.cos(freq) * scale * x[s, h, d].astype("float32") + tirx.sin(
            freq
        ) * scale * partner.astype("float32")
        return value.astype(dtype)

    @T.prim_func(private=True, s_tir=True)
    def split_rotary(
        var_qkv: T.handle,
        var_position_map: T.handle,
        var_q: T.handle,
        var_k: T.handle,
        var_v: T.handle,
        factors: T.Buffer((rotary_dim,), "float32"),
    ) -> None:
        T.func_attr({"op_pattern": 8, "tirx.noalias": True})
        seq_len = T.int64()
        position_offset = T.int64()
        qkv = T.match_buffer(var_qkv, (seq_len, fused_heads, head_dim), dtype)
        q = T.match_buffer(var_q, (seq_len, num_q_heads, head_dim), dtype)
        k = T.match_buffer(var_k, (seq_len, num_kv_heads, head_dim), dtype)
        v = T.match_buffer(var_v, (seq_len, num_kv_heads, head_dim), dtype)
        position_map = T.match_buffer(
            var_position_map, (seq_len,), "int32", elem_offset=position_offset
        )
        for iters in T.grid(seq_len, fused_heads, head_dim):
            with T.sblock("longrope_split_rotary"):
                s, h, d = T.axis.remap("SSS", iters)
                if h < num_q_heads:
                    q[s, h, d] = T.if_then_else(
                        d < rotary_dim,
                        rotated(qkv, s, h, d, position_map[s], factors),
                        qkv[s, h, d],
                    )
                elif h < num_q_heads + num_kv_heads:
                    k[s, h - num_q_heads, d] = T.if_then_else(
                        d < rotary_dim,
                        rotated(qkv, s, h, d, position_map[s], factors),
                        qkv[s, h, d],
                    )
                else:
                    v[s, h - (num_q_heads + num_kv_heads), d] = qkv[s, h, d]

    return split_rotary


def replace_split_rotary(mod: tvm.IRModule, func: tirx.PrimFunc) -> tvm.IRModule:
    """`mod` (updated in place) with the KV cache's split-rotary function replaced by `func`."""
    mod.update_func(mod.get_global_var(SPLIT_ROTARY), func)
    return mod
