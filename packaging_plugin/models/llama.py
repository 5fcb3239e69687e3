"""The llama architecture family (llama, mistral, qwen2, qwen3) in `tvm.relax.frontend.nn`.

One module serves the four `model_type`s; they differ only in configuration:

| model_type | fused QKV            | QKV bias       | q/k norm | sliding window | rope key   |
|------------|----------------------|----------------|----------|----------------|------------|
| llama      | `self_attn.qkv_proj` | no             | no       | no             | pos_base * |
| mistral    | `self_attn.qkv_proj` | no             | no       | yes (runtime)  | pos_base * |
| qwen2      | `self_attn.c_attn`   | yes            | no       | no             | rope_theta |
| qwen3      | `self_attn.c_attn`   | attention_bias | yes      | no             | rope_theta |

(* position_embedding_base)

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

from tvm import relax as rx
from tvm import te
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, RopeMode, TIRPagedKVCache
from tvm.target import Target

from ..quantization import Embedding, Linear, Quantization


@dataclass(frozen=True)
class Variant:
    """What distinguishes one model_type of the family."""

    model_type: str
    qkv_name: str  # attribute (and parameter name part) of the fused QKV projection
    qkv_bias: bool  # always a QKV bias (qwen2); else only with model_config attention_bias
    sliding_window: bool  # whether sliding_window_size may be set
    default_prefill_chunk: int  # MLC's cap on the default prefill chunk
    default_rms_norm_eps: float
    qk_norm: bool = False  # per-head RMSNorm of q and k before RoPE (qwen3)
    attention_bias_key: bool = False  # model_config `attention_bias` adds c_attn and o_proj biases


VARIANTS: dict[str, Variant] = {
    "llama": Variant("llama", "qkv_proj", False, False, 8192, 1e-5),
    "mistral": Variant("mistral", "qkv_proj", False, True, 8192, 1e-5),
    "qwen2": Variant("qwen2", "c_attn", True, False, 2048, 1e-6),
    "qwen3": Variant(
        "qwen3", "c_attn", False, False, 2048, 1e-6, qk_norm=True, attention_bias_key=True
    ),
}


@dataclass(frozen=True)
class LlamaConfig:
    """The subset of an MLC `model_config` this architecture reads, normalized."""

    variant: Variant
    qkv_bias: bool
    o_proj_bias: bool
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    num_hidden_layers: int
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool
    rope_theta: float
    rope_scaling: dict[str, Any]  # {} or a llama3 rope_scaling dict
    context_window_size: int  # -1: unbounded (sliding-window models)
    prefill_chunk_size: int
    sliding_window_size: int  # -1: off
    attention_sink_size: int  # -1: off
    max_batch_size: int

    @classmethod
    def from_model_config(cls, variant: Variant, cfg: dict[str, Any]) -> LlamaConfig:
        """Read an MLC model_config (overrides applied); ValueError names what is wrong."""
        kind = variant.model_type

        def need(key: str) -> Any:
            if cfg.get(key) is None:
                raise ValueError(f"{kind} model_config lacks {key!r}")
            return cfg[key]

        hidden = int(need("hidden_size"))
        heads = int(need("num_attention_heads"))
        kv_heads = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
        if heads % kv_heads:
            raise ValueError(
                f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads "
                f"({kv_heads})"
            )
        if (hidden_act := cfg.get("hidden_act")) and hidden_act != "silu":
            raise ValueError(f"{kind}: hidden_act {hidden_act!r} is not supported (silu only)")
        for key in ("tensor_parallel_shards", "pipeline_parallel_stages"):
            if int(cfg.get(key) or 1) != 1:
                raise ValueError(f"{key}={cfg[key]}: only 1 is supported on a single device")

        # MLC calls it position_embedding_base for llama/mistral and rope_theta for qwen2.
        rope_theta = cfg.get("position_embedding_base") or cfg.get("rope_theta") or 10000.0

        sliding = cfg.get("sliding_window_size")
        if sliding is None and variant.sliding_window:
            sliding = cfg.get("sliding_window")
        sliding = -1 if sliding in (None, 0) else int(sliding)
        if sliding != -1 and not variant.sliding_window:
            raise ValueError(f"{kind} does not support sliding_window_size (got {sliding})")
        sink = cfg.get("attention_sink_size")
        if sink is None:
            sink = 4 if sliding != -1 else -1  # MLC's mistral default
        context = cfg.get("context_window_size") or cfg.get("max_position_embeddings")
        if not context:
            if sliding == -1:
                raise ValueError(f"{kind} model_config lacks 'context_window_size'")
            context = -1
        prefill = cfg.get("prefill_chunk_size") or min(
            c for c in (int(context), sliding, variant.default_prefill_chunk) if c > 0
        )
        attention_bias = variant.attention_bias_key and bool(cfg.get("attention_bias", False))
        return cls(
            variant=variant,
            qkv_bias=variant.qkv_bias or attention_bias,
            o_proj_bias=attention_bias,
            hidden_size=hidden,
            intermediate_size=int(need("intermediate_size")),
            num_attention_heads=heads,
            num_key_value_heads=kv_heads,
            head_dim=head_dim,
            num_hidden_layers=int(need("num_hidden_layers")),
            rms_norm_eps=float(cfg.get("rms_norm_eps") or variant.default_rms_norm_eps),
            vocab_size=int(need("vocab_size")),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope_theta=float(rope_theta),
            rope_scaling=_rope_scaling(cfg.get("rope_scaling")),
            context_window_size=int(context),
            prefill_chunk_size=int(prefill),
            sliding_window_size=sliding,
            attention_sink_size=int(sink),
            max_batch_size=int(cfg.get("max_batch_size") or 1),
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


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        self.num_q_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        qkv_out = (self.num_q_heads + 2 * self.num_kv_heads) * self.head_dim
        # [q; k; v] along the output axis, under the family's own parameter name.
        self.qkv_name = cfg.variant.qkv_name
        setattr(self, self.qkv_name, Linear(cfg.hidden_size, qkv_out, quant, bias=cfg.qkv_bias))
        self.o_proj = Linear(
            self.num_q_heads * self.head_dim, cfg.hidden_size, quant, bias=cfg.o_proj_bias
        )
        # Declared after o_proj: attribute order is the packed parameter order, MLC's.
        self.qk_norm = cfg.variant.qk_norm
        if self.qk_norm:
            dtype, eps = quant.model_dtype, cfg.rms_norm_eps
            self.q_norm = nn.RMSNorm(self.head_dim, -1, eps, bias=False, dtype=dtype)
            self.k_norm = nn.RMSNorm(self.head_dim, -1, eps, bias=False, dtype=dtype)

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        b, s, _ = x.shape
        h_q, h_kv, d = self.num_q_heads, self.num_kv_heads, self.head_dim
        qkv = op.reshape(getattr(self, self.qkv_name)(x), (b, s, h_q + 2 * h_kv, d))
        if self.qk_norm:
            # Per head, over head_dim (the last axis), and before the cache applies RoPE.
            q, k, v = op.split(qkv, [h_q, h_q + h_kv], axis=2)
            qkv = op.concat([self.q_norm(q), self.k_norm(k), v], dim=2)
        out = kv_cache.attention_with_fused_qkv(layer_id, qkv, h_q, sm_scale=d**-0.5)
        return self.o_proj(op.reshape(out, (b, s, h_q * d)))


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        self.gate_up_proj = Linear(cfg.hidden_size, 2 * cfg.intermediate_size, quant)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, quant)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        gate, up = op.split(self.gate_up_proj(x), 2, axis=-1)
        return self.down_proj(op.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        dtype, eps = quant.model_dtype, cfg.rms_norm_eps
        # Attribute order = packed parameter order; kept as MLC's.
        self.self_attn = Attention(cfg, quant)
        self.mlp = MLP(cfg, quant)
        self.input_layernorm = nn.RMSNorm(cfg.hidden_size, -1, eps, bias=False, dtype=dtype)
        self.post_attention_layernorm = nn.RMSNorm(
            cfg.hidden_size, -1, eps, bias=False, dtype=dtype
        )

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache, layer_id: int) -> nn.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), kv_cache, layer_id)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: LlamaConfig, quant: Quantization) -> None:
        super().__init__()
        # The vocabulary stays symbolic, as in MLC: metadata says "vocab_size" and the runtime
        # takes the real value from mlc-chat-config.json.
        self.embed_tokens = Embedding("vocab_size", cfg.hidden_size, quant)
        self.layers = nn.ModuleList(
            [DecoderLayer(cfg, quant) for _ in range(cfg.num_hidden_layers)]
        )
        self.norm = nn.RMSNorm(
            cfg.hidden_size, -1, cfg.rms_norm_eps, bias=False, dtype=quant.model_dtype
        )

    def forward(self, x: nn.Tensor, kv_cache: PagedKVCache) -> nn.Tensor:
        for layer_id, layer in enumerate(self.layers):
            x = layer(x, kv_cache, layer_id)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """The exported model: every method below is one function of the model library."""

    def __init__(self, cfg: LlamaConfig, quant: Quantization, target: Target) -> None:
        super().__init__()
        self.cfg = cfg
        self.quant = quant
        self.dtype = quant.model_dtype
        self.target = target  # TIRPagedKVCache picks its kernels (CPU or GPU) by target kind
        self.model = Backbone(cfg, quant)
        if not cfg.tie_word_embeddings:
            self.lm_head = Linear(cfg.hidden_size, "vocab_size", quant, out_dtype="float32")

    # -- helpers -------------------------------------------------------------------------------

    def _logits(self, hidden: nn.Tensor) -> nn.Tensor:
        """float32 logits `[b, s, vocab]`."""
        if self.cfg.tie_word_embeddings:
            return self.model.embed_tokens.lm_head_forward(hidden)
        return self.lm_head(hidden)

    # -- exported functions --------------------------------------------------------------------

    def embed(self, input_ids: nn.Tensor) -> nn.Tensor:
        return self.model.embed_tokens(input_ids)

    def prefill(
        self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        hidden = self.model(input_embed, paged_kv_cache)

        def last_token(x: te.Tensor) -> te.Tensor:
            b, s, d = x.shape
            return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="index")

        # Only the last position's logits are needed: slice before the lm_head.
        hidden = op.tensor_expr_op(last_token, "index", [hidden])
        return self._logits(hidden), paged_kv_cache

    def decode(
        self, input_embed: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

    def batch_prefill(
        self, input_embeds: nn.Tensor, logit_positions: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        hidden = self.model(input_embeds, paged_kv_cache)
        hidden = op.take(hidden, logit_positions, axis=1)
        return self._logits(hidden), paged_kv_cache

    def batch_decode(
        self, input_embeds: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self._logits(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def batch_verify(
        self, input_embeds: nn.Tensor, paged_kv_cache: PagedKVCache
    ) -> tuple[nn.Tensor, PagedKVCache]:
        return self._logits(self.model(input_embeds, paged_kv_cache)), paged_kv_cache

    def create_tir_paged_kv_cache(
        self,
        max_batch_size: Any,
        max_total_seq_len: Any,
        prefill_chunk_size: Any,
        page_size: Any,
        support_sliding_window: Any,
    ) -> PagedKVCache:
        cfg = self.cfg
        return TIRPagedKVCache(
            attn_kind="mha",
            max_batch_size=max_batch_size,
            max_total_seq_len=max_total_seq_len,
            prefill_chunk_size=prefill_chunk_size,
            page_size=page_size,
            support_sliding_window=support_sliding_window,
            layer_partition=rx.ShapeExpr([0, cfg.num_hidden_layers]),
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            num_key_value_heads=cfg.num_key_value_heads,
            qk_head_dim=cfg.head_dim,
            v_head_dim=cfg.head_dim,
            mla_original_qk_head_dim=0,
            mla_original_v_head_dim=0,
            rope_mode=RopeMode.NORMAL,
            rope_scale=1,
            rope_theta=cfg.rope_theta,
            rope_scaling=cfg.rope_scaling,
            # Not a tensor: the runtime reads "no extension factors" (only longrope has them).
            rope_ext_factors=rx.prim_value(0),
            rotary_dim=cfg.head_dim,
            enable_disaggregation=False,
            dtype=self.dtype,
            target=self.target,
        )

    def alloc_embedding_tensor(self) -> nn.Tensor:
        # The runtime allocates its embedding buffer through this and reads hidden_size from it.
        return op.empty([self.cfg.prefill_chunk_size, self.cfg.hidden_size], self.dtype)

    def get_default_spec(self) -> nn.spec.ModuleSpec:
        hidden, dtype = self.cfg.hidden_size, self.dtype
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
