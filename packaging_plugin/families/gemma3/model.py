"""Gemma-3's text model (`gemma3_text`, `gemma3`) in `tvm.relax.frontend.nn`, MLC's names and order.

As Gemma-2 (families/gemma): embeddings scaled by sqrt(hidden_size), a GELU-tanh gated MLP,
four norms per layer (post-attention and post-MLP norms before the residual adds), RMSNorm
weights stored + 1, attention scaled by `query_pre_attn_scalar ** -0.5`, tied lm_head, final
soft-capping where set. Gemma-3 adds:

- separate `q_proj`, `k_proj`, `v_proj` (MLC's names) and a per-head RMSNorm of q and k;
- sliding-window layers where `layer_types` says so (five of six in the released models): the KV
  cache gets a per-layer kind list ("mha_sliding" / "mha") and the window, which its kernels
  apply to those layers, while it keeps every page for the full-attention layers;
- a RoPE base per layer kind: `rope_local_base_freq` for the sliding layers, `rope_theta` with
  its linear scaling for the full ones. The cache has one base for all layers, so it applies
  none and each layer rotates its own q and k (`rotate_qk`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tvm
from tvm import tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache
from tvm.script import tirx as T
from tvm.target import Target

from packaging_plugin.families.base.config import LayerRope, ModelSizes, model_sizes, require
from packaging_plugin.families.base.model import (
    AttentionLayout,
    CausalLM,
    GatedMLP,
    rms_norm,
    rotate_qk,
)
from packaging_plugin.families.gemma3.config import (
    ACTIVATIONS,
    FULL,
    MODEL_TYPES,
    ROPE_LOCAL_THETA,
    ROPE_THETA,
    SLIDING,
    TEXT_DEFAULTS,
    layer_types,
)
from packaging_plugin.quantization.layers import Embedding, Linear
from packaging_plugin.quantization.schemes import Quantization


@dataclass(frozen=True)
class Gemma3Config:
    sizes: ModelSizes
    layout: AttentionLayout
    layer_ropes: tuple[LayerRope, ...]
    intermediate_size: int
    rms_norm_eps: float
    sm_scale: float
    final_logit_softcapping: float  # 0: none

    @classmethod
    def from_model_config(cls, model_type: str, cfg: dict[str, Any]) -> Gemma3Config:
        """MLC's nested model_config (or a flat one: the text settings at the top level)."""
        text = {**TEXT_DEFAULTS, **(cfg.get("text_config") or cfg)}
        act = text.get("hidden_activation") or text.get("hidden_act") or ACTIVATIONS[0]
        if act not in ACTIVATIONS:
            raise ValueError(f"{model_type}: activation {act!r} is not supported (GELU only)")
        for flag in ("attention_bias", "attn_logit_softcapping", "use_bidirectional_attention"):
            if text.get(flag):
                raise ValueError(f"{model_type}: {flag}={text[flag]!r} is not supported")
        layers = int(require(model_type, text, "num_hidden_layers"))
        kinds = layer_types(layers, text.get("layer_types"), text.get("sliding_window_pattern"), "")
        if FULL not in kinds:  # TVM 0.27's KV cache fails at run time without one
            raise ValueError(f"{model_type}: a model with no full-attention layer is not supported")
        window = int(text.get("sliding_window_size") or text["sliding_window"])
        heads = int(text["num_attention_heads"])
        head_dim = int(text["head_dim"])
        scaling = text.get("rope_scaling") or {}
        kind = scaling.get("rope_type", scaling.get("type")) if scaling else None
        if kind not in (None, "default", "linear"):
            raise ValueError(f"{model_type}: rope_scaling {kind!r} is not supported (linear only)")
        full = LayerRope(
            float(text.get("position_embedding_base") or text.get("rope_theta") or ROPE_THETA),
            float(scaling["factor"]) if kind == "linear" else 1.0,
        )
        local = LayerRope(float(text.get("rope_local_base_freq") or ROPE_LOCAL_THETA))
        hidden = int(require(model_type, text, "hidden_size"))
        return cls(
            sizes=model_sizes(MODEL_TYPES[model_type], cfg, hidden),
            layout=AttentionLayout(
                num_hidden_layers=layers,
                num_attention_heads=heads,
                num_key_value_heads=int(text["num_key_value_heads"]),
                head_dim=head_dim,
                rope_theta=full.theta,
                rope=False,  # each layer rotates q and k with its own base
                attn_kinds=tuple("mha_sliding" if k == SLIDING else "mha" for k in kinds),
                layer_sliding_window=window,
            ),
            layer_ropes=tuple(local if k == SLIDING else full for k in kinds),
            intermediate_size=int(require(model_type, text, "intermediate_size")),
            rms_norm_eps=float(text["rms_norm_eps"]),
            sm_scale=float(text["query_pre_attn_scalar"]) ** -0.5,
            final_logit_softcapping=float(text.get("final_logit_softcapping") or 0.0),
        )


class Attention(nn.Module):
    def __init__(self, cfg: Gemma3Config, quant: Quantization, rope: LayerRope) -> None:
        super().__init__()
        layout, hidden = cfg.layout, cfg.sizes.hidden_size
        self.rope, self.sm_scale = rope, cfg.sm_scale
        self.h_q, self.h_kv, self.d = (
            layout.num_attention_heads,
            layout.num_key_value_heads,
            layout.head_dim,
        )
        # Attribute order = packed parameter order, MLC's.
        self.q_proj = Linear(hidden, self.h_q * self.d, quant)
        self.k_proj = Linear(hidden, self.h_kv * self.d, quant)
        self.v_proj = Linear(hidden, self.h_kv * self.d, quant)
        self.o_proj = Linear(self.h_q * self.d, hidden, quant)
        self.q_norm = rms_norm(self.d, cfg.rms_norm_eps, quant)
        self.k_norm = rms_norm(self.d, cfg.rms_norm_eps, quant)

    def forward(
        self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int, positions: nn.Tensor
    ) -> nn.Tensor:
        b, s, _ = x.shape
        q = self.q_norm(op.reshape(self.q_proj(x), (b, s, self.h_q, self.d)))
        k = self.k_norm(op.reshape(self.k_proj(x), (b, s, self.h_kv, self.d)))
        v = op.reshape(self.v_proj(x), (b, s, self.h_kv, self.d))
        qkv = rotate_qk(op.concat([q, k, v], dim=2), positions, self.rope, self.h_q, self.h_kv)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, self.h_q, sm_scale=self.sm_scale)
        return self.o_proj(op.reshape(out, (b, s, self.h_q * self.d)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Gemma3Config, quant: Quantization, layer_id: int) -> None:
        super().__init__()
        hidden, eps = cfg.sizes.hidden_size, cfg.rms_norm_eps
        self.self_attn = Attention(cfg, quant, cfg.layer_ropes[layer_id])
        self.mlp = GatedMLP(hidden, cfg.intermediate_size, quant, "gelu_tanh")
        self.input_layernorm = rms_norm(hidden, eps, quant)
        self.post_attention_layernorm = rms_norm(hidden, eps, quant)
        self.pre_feedforward_layernorm = rms_norm(hidden, eps, quant)
        self.post_feedforward_layernorm = rms_norm(hidden, eps, quant)

    def forward(
        self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int, positions: nn.Tensor
    ) -> nn.Tensor:
        attn = self.self_attn(self.input_layernorm(x), kv_cache, layer_id, positions)
        x = x + self.post_attention_layernorm(attn)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))


class TextModel(nn.Module):
    def __init__(self, cfg: Gemma3Config, quant: Quantization) -> None:
        super().__init__()
        hidden = cfg.sizes.hidden_size
        self.embed_tokens = Embedding("vocab_size", hidden, quant)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, quant, i) for i in range(cfg.layout.num_hidden_layers)]
        )
        self.norm = rms_norm(hidden, cfg.rms_norm_eps, quant)
        self.embed_scale = hidden**0.5

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        b, s, _ = x.shape
        positions = kv_cache.get_query_positions(b * s)  # shared by every layer's RoPE
        x = x * self.embed_scale
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id, positions)
        return self.norm(x)


class LanguageModel(nn.Module):
    """Only a name level: MLC's parameters are `language_model.model.*`."""

    def __init__(self, cfg: Gemma3Config, quant: Quantization) -> None:
        super().__init__()
        self.model = TextModel(cfg, quant)


class Gemma3ForCausalLM(CausalLM):
    def __init__(self, cfg: Gemma3Config, quant: Quantization, target: Target) -> None:
        super().__init__(cfg.sizes, cfg.layout, quant, target)
        self.cfg = cfg
        self.language_model = LanguageModel(cfg, quant)

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.language_model.model.embed_tokens(input_ids)

    def hidden_states(self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache) -> nn.Tensor:
        return self.language_model.model(input_embed, paged_kv_cache)

    def finish_module(self, mod: tvm.IRModule) -> tvm.IRModule:
        """On CPUs, our sliding-layer prefill kernel in place of TVM's (`sliding_prefill_cpu`)."""
        if self.target.kind.name != "llvm" or CPU_SLIDING_PREFILL not in [
            gv.name_hint for gv in mod.get_global_vars()
        ]:
            return mod
        layout = self.layout
        kernel = sliding_prefill_cpu(
            num_q_heads=layout.num_attention_heads,
            num_kv_heads=layout.num_key_value_heads,
            head_dim=layout.head_dim,
            dtype=self.dtype,
            window=layout.layer_sliding_window,
        )
        mod.update_func(mod.get_global_var(CPU_SLIDING_PREFILL), kernel)
        return mod

    def logits(self, hidden: nn.Tensor) -> nn.Tensor:
        logits = self.language_model.model.embed_tokens.lm_head_forward(hidden)
        cap = self.cfg.final_logit_softcapping
        if cap:
            logits = op.tanh(logits / cap) * cap
        return logits


# ----------------------------------------------------------------------------------------------
# The sliding layers' paged prefill kernel on CPUs

# The name TVM 0.27's TIRPagedKVCache gives the kernel on llvm targets.
CPU_SLIDING_PREFILL = "tir_attention_prefill_cpu_sliding_window"
_LOG2E = 1.4426950408889634
_MASKED = -5e4  # the base-2 log-sum-exp of a row that sees no cached token


def sliding_prefill_cpu(
    *, num_q_heads: int, num_kv_heads: int, head_dim: int, dtype: str, window: int
) -> tirx.PrimFunc:
    """Prefill attention of a sliding layer against its cached tokens, for llvm targets.

    TVM 0.27's own kernel returns NaN once a query of a multi-token chunk may not see the first
    cached token (its running maximum is read before it is set), which every prompt chunk past
    the window hits. Same signature and outputs: the rows' output and base-2 log-sum-exp, which
    the runtime merges with the chunk's own attention. Query row r of a chunk sees the last
    `window - r - 1` cached tokens (the chunk itself gives it r + 1 more). No RoPE is applied
    (the cache of this family has none); `length_info` is `[3, batch]`: the last page's length,
    the window's offset in the first page and the sink length, as the runtime fills it.
    """
    group = num_q_heads // num_kv_heads
    page_size = 16  # the runtime's page size, fixed in TVM's kernels too
    d = head_dim

    @T.prim_func(private=True, s_tir=True)
    def prefill(
        var_q: T.handle,
        var_q_indptr: T.handle,
        var_pages: T.handle,
        var_page_indptr: T.handle,
        var_page_values: T.handle,
        var_length_info: T.handle,
        var_k_rope_pos_offset: T.handle,
        var_q_rope_position: T.handle,
        var_output: T.handle,
        var_lse: T.handle,
        causal: T.int32,
        rotary_mode: T.int32,
        rope_scale: T.float32,
        rope_theta: T.float32,
        sm_scale: T.float32,
    ) -> None:
        T.func_attr({"tirx.noalias": True})
        batch, total, nnz, max_pages = T.int32(), T.int32(), T.int32(), T.int32()
        off_qi, off_pi, off_pv, off_li = T.int32(), T.int32(), T.int32(), T.int32()
        off_kr, off_qr = T.int32(), T.int32()
        q = T.match_buffer(var_q, (total, num_q_heads, d), dtype)
        q_indptr = T.match_buffer(var_q_indptr, (batch + 1,), "int32", elem_offset=off_qi)
        pages = T.match_buffer(var_pages, (max_pages, 2, num_kv_heads, page_size, d), dtype)
        page_indptr = T.match_buffer(var_page_indptr, (batch + 1,), "int32", elem_offset=off_pi)
        page_values = T.match_buffer(var_page_values, (nnz,), "int32", elem_offset=off_pv)
        length_info = T.match_buffer(var_length_info, (3, batch), "int32", elem_offset=off_li)
        _k_rope = T.match_buffer(var_k_rope_pos_offset, (batch,), "int32", elem_offset=off_kr)
        _q_rope = T.match_buffer(var_q_rope_position, (total,), "int32", elem_offset=off_qr)
        output = T.match_buffer(var_output, (total, num_q_heads, d), dtype)
        lse = T.match_buffer(var_lse, (total, num_q_heads), "float32")
        for b, h in T.grid(batch, num_q_heads):
            with T.sblock("attn"):
                vb, vh = T.axis.remap("SS", [b, h])
                acc = T.sblock_alloc_buffer((d,), "float32")
                state = T.sblock_alloc_buffer((4,), "float32")  # max, sum, score, rescale
                kv_len = T.sblock_alloc_buffer((1,), "int32")
                first = page_indptr[vb]
                num_pages = page_indptr[vb + 1] - first
                sink = length_info[2, vb]
                kv_len[0] = T.if_then_else(
                    num_pages > 0,
                    (num_pages - 1) * page_size + length_info[0, vb] - length_info[1, vb] + sink,
                    0,
                )
                for r in T.serial(q_indptr[vb + 1] - q_indptr[vb]):
                    row = q_indptr[vb] + r
                    start = T.if_then_else(
                        causal > 0, T.max(kv_len[0] - T.max(window - r - 1, 0), 0), 0
                    )
                    state[0] = T.float32(_MASKED)
                    state[1] = T.float32(0)
                    for i in T.serial(d):
                        acc[i] = T.float32(0)
                    for j in T.serial(kv_len[0] - start):
                        pos = start + j
                        slot = T.if_then_else(pos < sink, pos, pos - sink + length_info[1, vb])
                        page = page_values[first + slot // page_size]
                        state[2] = T.float32(0)
                        for i in T.serial(d):
                            state[2] += T.cast(q[row, vh, i], "float32") * T.cast(
                                pages[page, 0, vh // group, slot % page_size, i], "float32"
                            )
                        state[2] = state[2] * sm_scale * T.float32(_LOG2E)
                        state[3] = T.exp2(state[0] - T.max(state[0], state[2]))
                        state[0] = T.max(state[0], state[2])
                        state[2] = T.exp2(state[2] - state[0])
                        state[1] = state[1] * state[3] + state[2]
                        for i in T.serial(d):
                            acc[i] = acc[i] * state[3] + state[2] * T.cast(
                                pages[page, 1, vh // group, slot % page_size, i], "float32"
                            )
                    # A row that sees no cached token (the chunk's last of a full window) has
                    # sum 0: it gives 0 and the log-sum-exp of nothing, with no 0 / 0 or log 0
                    # computed even in the branch not taken (fast-math code may keep it).
                    state[3] = T.max(state[1], T.float32(1e-30))
                    for i in T.serial(d):
                        output[row, vh, i] = T.cast(acc[i] / state[3], dtype)
                    lse[row, vh] = T.if_then_else(
                        state[1] > 0, state[0] + T.log2(state[3]), T.float32(_MASKED)
                    )

    return prefill


def create(
    model_type: str, model_config: dict[str, Any], quant: Quantization, target: Target
) -> Gemma3ForCausalLM:
    cfg = Gemma3Config.from_model_config(model_type, model_config)
    return Gemma3ForCausalLM(cfg, quant, target)
