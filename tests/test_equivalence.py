"""Converted checkpoints, compiled for linux, give the logits transformers gives.

For each family a tiny random model is made by transformers from a config (no download), saved
with `save_pretrained`, converted with `convert_checkpoint`, compiled, and run through the Relax VM
with the paged KV cache the way the MLC runtime runs it: a prefill, then greedy decode steps.
transformers then runs the same tokens in one forward pass; every step's logits must agree.

- q0f32: against the checkpoint's own weights.
- q4f32_1: against transformers running the weights the converter stored, dequantized
  (quantization error is the converter's choice, not a runtime difference).
- q4f16_0 (MLC's "KN" layout, float16 activations and KV cache), q3f16_1 and q3f16_0 (3-bit
  codes in groups of 40, NK and KN): the same dequantized reference in float32, with a tolerance
  for float16 arithmetic.

The families cover what differs between them: llama (untied lm_head, GQA, large rope base),
mistral (sliding window, exceeded by the decode steps), qwen2 (QKV bias, tied embeddings), qwen3
(per-head q/k RMSNorm before RoPE, head_dim 32 != hidden / heads = 16, untied lm_head), gemma2
(norms stored + 1, extra feed-forward norms, GELU-tanh, query_pre_attn_scalar, final logit
soft-capping, scaled embeddings), gemma (the same without the Gemma-2 additions), phi3 (names
of its own, fused checkpoint tensors, longrope scaling, partial rotary embedding), gpt2
(learned positions, LayerNorm, Conv1D weights), phi (Phi-2: parallel attention and MLP from
one LayerNorm, partial rotary, biases, an lm_head with a LayerNorm), gpt_neox (parallel or
sequential residual, NeoX partial rotary embedding, per-head fused QKV rows reordered, exact or
tanh GELU, MLP in float32), gemma3_text (sliding and full layers in the checkpoint's pattern,
each kind with its own RoPE base, q/k norms, a prompt longer than the window) and smollm3 (RoPE
left out of some layers).

Compiles are the slow part (~6 s each, one core): each test converts and compiles one build, so
`pytest -n 2` spreads them over both cores whatever the distribution mode.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from packaging_plugin.sources.convert import convert_checkpoint
from tests.helpers.hf_models import TINY_CONFIG, make_random_model
from tests.helpers.reference import dequantized_model
from tests.helpers.runtime import (
    KVSession,
    LoadedLibrary,
    compile_request,
    load_library,
)

pytestmark = pytest.mark.slow  # a TVM compile per family and quantization

PROMPT = [1, 17, 42, 99, 3, 7]
# Two sequences of different lengths for the batched functions: 7 tokens in all, within every
# build's prefill chunk (mistral's is its window, 7), as the runtime never sends more per call.
BATCH_SEQS = {1: [1, 17, 42, 99], 2: [5, 9, 33]}
MAX_BATCH = 2
DECODE_STEPS = 8
SLIDING_WINDOW = 8  # < len(PROMPT) + DECODE_STEPS: the decode steps slide the window
# gemma3's per-layer window: its prefill chunks are 7 tokens, which BATCH_SEQS fit in.
GEMMA3_WINDOW = 8
REL_TOL = 1e-4  # of the largest |logit|
ABS_TOL = 1e-5
# float16 activations, sums and KV cache against a float32 reference: ~10 bits of mantissa.
REL_TOL_F16 = 1e-2


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str
    model_class: str
    extra: dict[str, Any]
    # Compare with transformers generating step by step from its own KV cache, not one forward
    # pass: where the two differ by design (longrope switching factors mid-generation).
    stepwise_reference: bool = False
    prompt: tuple[int, ...] = tuple(PROMPT)


# Special tokens inside the tiny vocabulary (some configs default to ids past 256).
SMALL_VOCAB_TOKENS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
PHI3_LONGROPE = {
    "original_max_position_embeddings": 64,
    "pad_token_id": 0,  # transformers' defaults (32000, 32000) lie outside the vocab
    "eos_token_id": 2,
}
FAMILIES = (
    Family("llama", "LlamaConfig", "LlamaForCausalLM", {"rope_theta": 500000.0}),
    Family("mistral", "MistralConfig", "MistralForCausalLM", {"sliding_window": SLIDING_WINDOW}),
    Family(
        "qwen2",
        "Qwen2Config",
        "Qwen2ForCausalLM",
        {"rope_theta": 1000000.0, "tie_word_embeddings": True},
    ),
    # head_dim 32 with hidden 64 and 4 heads: q/k/v widths differ from hidden_size, which a
    # hidden / heads assumption anywhere (model, converter, KV cache) would get wrong.
    Family(
        "qwen3",
        "Qwen3Config",
        "Qwen3ForCausalLM",
        {"head_dim": 32, "rope_theta": 1000000.0, "tie_word_embeddings": False},
    ),
    # head_dim 32 != 64 / 4, attention scaled by query_pre_attn_scalar (24, not head_dim), final
    # logits soft-capped at a cap the logits reach. Attention-score soft-capping is off: TVM's
    # attention kernels have none (MLC leaves it out too).
    Family(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "final_logit_softcapping": 5.0,
            "attn_logit_softcapping": None,
        },
    ),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM", {"head_dim": 32}),
    # Phi-3.5's longrope scaling (attention factor from 512 / 64 positions, short factors for
    # sequences within the original 64) and Phi-4-mini's partial rotary embedding (12 of 16).
    Family(
        "phi3",
        "Phi3Config",
        "Phi3ForCausalLM",
        {
            **PHI3_LONGROPE,
            "partial_rotary_factor": 0.75,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                "long_factor": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0],
            },
        },
    ),
    # The decode steps pass original_max_position_embeddings (8): from position 8 on, each token
    # is rotated with the long factors, as transformers does when it generates.
    Family(
        "phi3_long",
        "Phi3Config",
        "Phi3ForCausalLM",
        {
            **PHI3_LONGROPE,
            "original_max_position_embeddings": 8,
            "partial_rotary_factor": 1.0,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.0, 3.5],
                "long_factor": [1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0],
            },
        },
        stepwise_reference=True,
    ),
    # Learned positions (read from the KV cache's query positions), LayerNorm with biases,
    # Conv1D weights stored [in, out], GELU-tanh MLP of its own width.
    Family("gpt2", "GPT2Config", "GPT2LMHeadModel", {"n_inner": 96, "bos_token_id": 1}),
    # Phi-2's shape: one LayerNorm feeding attention and MLP in parallel, rotary on 6 of 16 head
    # dims (Phi-2's factor 0.4), biases everywhere, an lm_head with its own LayerNorm and bias;
    # GQA (2 KV heads), which Phi-2 does not use but the architecture allows.
    Family("phi", "PhiConfig", "PhiForCausalLM", {"partial_rotary_factor": 0.4}),
    # Pythia's shape: parallel residual, RoPE on the first quarter of each head (4 of 16 dims),
    # the checkpoint's per-head [q, k, v] rows reordered by the converter, exact GELU.
    Family("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", {"rotary_pct": 0.25}),
    # RedPajama-INCITE-3B's sequential residual and full rotary embedding, with what no other
    # build has: no attention biases, GELU-tanh (GPT-NeoX-20B's "gelu_fast"), another RoPE base.
    Family(
        "gpt_neox_seq",
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {
            "use_parallel_residual": False,
            "rotary_pct": 1.0,
            "rotary_emb_base": 50000.0,
            "attention_bias": False,
            "hidden_act": "gelu_fast",
        },
    ),
    # Layers sliding, full, sliding (pattern 2), a window the 12-token prompt and the decode
    # steps pass (so the prompt is prefilled in chunks, as the runtime does), each kind with its
    # own RoPE base and the full layers' linearly scaled.
    Family(
        "gemma3_text",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "num_hidden_layers": 3,
            "sliding_window_pattern": 2,
            "sliding_window": GEMMA3_WINDOW,
            "head_dim": 32,
            "query_pre_attn_scalar": 24,
            "rope_parameters": {
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 500.0},
            },
        },
        prompt=(1, 17, 42, 99, 3, 7, 11, 23, 5, 60, 81, 13),
    ),
    # RoPE left out of every second layer (layer 1 of 3), rotated in the model at the cache's
    # query positions; tied embeddings and GQA, as SmolLM3-3B.
    Family(
        "smollm3",
        "SmolLM3Config",
        "SmolLM3ForCausalLM",
        {
            "num_hidden_layers": 3,
            "no_rope_layer_interval": 2,
            "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0},
            **SMALL_VOCAB_TOKENS,
        },
    ),
)
(
    LLAMA,
    MISTRAL,
    QWEN2,
    QWEN3,
    GEMMA2,
    GEMMA,
    PHI3,
    PHI3_LONG,
    GPT2,
    PHI,
    NEOX,
    NEOX_SEQ,
    GEMMA3,
    SMOLLM3,
) = FAMILIES
# Every family at q0f32 (against the checkpoint) and q4f32_1 (against its dequantized weights).
BUILDS = [
    (LLAMA, "q0f32"),
    (LLAMA, "q4f32_1"),
    (LLAMA, "q4f16_0"),  # KN layout: transposed linear weights, NK embeddings
    # q3: groups of 40, so hidden 64 and intermediate 128 end in padded groups (q3f16_1 of phi
    # and q3f16_0 of gpt_neox, and every new family at q0f32 and q4f32_1, are also checked from a
    # packaged library: tests/test_packaged_generation.py).
    (LLAMA, "q3f16_0"),  # KN
    (QWEN2, "q3f16_1"),  # the tied q3 embedding as lm_head
    (MISTRAL, "q0f32"),
    (MISTRAL, "q4f32_1"),
    (QWEN2, "q0f32"),
    (QWEN2, "q4f32_1"),
    (QWEN3, "q0f32"),
    (QWEN3, "q4f32_1"),
    (GEMMA2, "q0f32"),
    (GEMMA2, "q4f32_1"),  # the tied q4 embedding as soft-capped lm_head
    (GEMMA, "q0f32"),
    (GEMMA, "q4f32_1"),
    (PHI3, "q0f32"),
    (PHI3, "q4f32_1"),  # fused qkv_proj / gate_up_proj straight from the checkpoint
    (PHI3_LONG, "q0f32"),
    (GPT2, "q0f32"),
    (GPT2, "q4f32_1"),  # the quantized position embedding, and lm_head copied from wte
    (PHI, "q4f32_1"),  # the biased lm_head.linear quantized
    (NEOX, "q4f32_1"),  # query_key_value quantized after its rows are reordered
    (NEOX_SEQ, "q0f32"),
    (GEMMA3, "q0f32"),
    (GEMMA3, "q4f32_1"),  # q, k and v quantized apart, as MLC stores them
    (SMOLLM3, "q4f32_1"),
]


def make_model(family: Family, seed: int) -> torch.nn.Module:
    return make_random_model(
        family.config_class, family.model_class, {**TINY_CONFIG, **family.extra}, seed
    )


@dataclass
class Build:
    """One family at one quantization: converted, compiled for linux and loaded."""

    family: Family
    quantization: str
    hf_model: torch.nn.Module
    model_dir: Path
    lib: LoadedLibrary

    @property
    def id(self) -> str:
        return f"{self.family.name}-{self.quantization}"


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, tuple[Any, Path]]:
    """Per family, made on first use: (transformers model, its save_pretrained folder)."""
    return {}


def make_build(family: Family, quant: str, cache: dict[str, tuple[Any, Path]], root: Path) -> Build:
    if family.name not in cache:
        model = make_model(family, seed=FAMILIES.index(family))
        model.save_pretrained(root / family.name / "hf")
        cache[family.name] = (model, root / family.name / "hf")
    model, checkpoint = cache[family.name]
    work = root / family.name / quant
    model_dir = convert_checkpoint(checkpoint, work / "mlc", quant)
    # Compiled in this process: one test per build, so under `pytest -n 2` each library is
    # compiled once, by the worker that runs its test, and two compile at a time.
    from packaging_plugin.compile.pipeline import compile_library

    prefix = f"eq_{family.name}_{quant}_"
    request = compile_request(model_dir, prefix)
    # Batching, as an app's overrides ask for it (the converter writes MLC's default of 1).
    request["model_config"]["max_batch_size"] = MAX_BATCH
    compile_library(request, work / "lib.tar")
    lib = load_library(work / "lib.tar", prefix, model_dir, work / "so")
    return Build(family, quant, model, model_dir, lib)


# Checkpoint tensors that transformers 5 loads under another name (and saves under the old one).
def reference_model(build: Build) -> torch.nn.Module:
    """transformers with the weights the converter stored (dequantized for q4 and q3)."""
    return dequantized_model(build.hf_model, build.model_dir, build.quantization)


@pytest.mark.parametrize(("family", "quant"), BUILDS, ids=[f"{f.name}-{q}" for f, q in BUILDS])
def test_converted_model_matches_transformers(
    family: Family,
    quant: str,
    checkpoints: dict[str, tuple[Any, Path]],
    tmp_path_factory: pytest.TempPathFactory,
    record_property: Callable[[str, object], None],
) -> None:
    build = make_build(family, quant, checkpoints, tmp_path_factory.mktemp("equivalence"))
    check_params_are_what_the_library_expects(build)
    check_prefill_and_greedy_decode(build, record_property)
    check_batches_equal_separate_sequences(build)


def check_params_are_what_the_library_expects(build: Build) -> None:
    meta = build.lib.metadata
    index = json.loads((build.model_dir / "tensor-cache.json").read_text())
    stored = [r for shard in index["records"] for r in shard["records"]]
    # Same names in the same order: the order of the packed parameter tuple.
    assert [p["name"] for p in meta["params"]] == [r["name"] for r in stored]
    vocab = build.hf_model.config.vocab_size
    for param, rec in zip(meta["params"], stored, strict=True):
        assert param["dtype"] == rec["dtype"], param["name"]
        shape = [vocab if dim == "vocab_size" else dim for dim in param["shape"]]
        assert shape == rec["shape"], param["name"]
    chat = json.loads((build.model_dir / "mlc-chat-config.json").read_text())
    assert meta["sliding_window_size"] == chat["sliding_window_size"]
    assert meta["attention_sink_size"] == chat["attention_sink_size"]


def reference_logits(
    model: torch.nn.Module, prompt: list[int], tokens: list[int], stepwise: bool
) -> np.ndarray:
    """transformers' logits after `prompt` and after each of `tokens`: `[len(tokens) + 1, V]`."""
    with torch.no_grad():
        if not stepwise:
            full = model(torch.tensor([prompt + tokens])).logits[0].numpy()
            return full[len(prompt) - 1 :]
        out = model(torch.tensor([prompt]), use_cache=True)
        rows = [out.logits[0, -1].numpy()]
        # transformers 5 renamed the argument (the old name warns from 5.2x on).
        cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else None
        for token in tokens:
            cache = {cache_arg or "past_key_values": out.past_key_values}
            out = model(torch.tensor([[token]]), **cache)
            rows.append(out.logits[0, -1].numpy())
    return np.stack(rows)


def check_prefill_and_greedy_decode(
    build: Build, record_property: Callable[[str, object], None]
) -> None:
    chat = json.loads((build.model_dir / "mlc-chat-config.json").read_text())
    window = chat["sliding_window_size"]
    prompt = list(build.family.prompt)
    session = KVSession(build.lib, max_total_seq_len=64, sliding_window=window != -1)
    session.add(0)
    if window != -1:
        # What the MLC runtime does for a sequence of a sliding-window model.
        assert len(prompt) + DECODE_STEPS > SLIDING_WINDOW
        session.enable_sliding_window(0, window, chat["attention_sink_size"])
    layer_window = (chat["model_config"].get("text_config") or {}).get("sliding_window_size")
    if layer_window:  # gemma3: the prompt alone passes its sliding layers' window
        assert len(prompt) > layer_window
    tokens, logits = greedy(session, prompt, chat["prefill_chunk_size"])

    # The logits after the prompt and after each decode step.
    expected = reference_logits(
        reference_model(build), prompt, tokens, build.family.stepwise_reference
    )
    diff = float(np.abs(logits - expected).max())
    scale = float(np.abs(expected).max())
    # Kept in the JUnit report and printed (pytest -s / -rP) for the figures in the docs.
    record_property("max_abs_logit_diff", diff)
    record_property("max_abs_logit", scale)
    print(f"{build.id}: max |logit diff| {diff:.2e}, max |logit| {scale:.2f}")
    rel_tol = REL_TOL_F16 if "f16" in build.quantization else REL_TOL
    assert diff <= rel_tol * scale + ABS_TOL, f"max |diff| {diff:.3g} at logit scale {scale:.3g}"
    # Greedy choices agree at every step (transformers' argmax on the same prefix). In float16
    # a step may differ only at a near-tie: transformers' best two logits closer than twice that
    # step's error, where either choice is within float16's reach.
    chosen = expected[:-1].argmax(axis=-1)
    decided = np.ones(len(tokens), bool)
    if "f16" in build.quantization:
        top_two = np.sort(expected[:-1], axis=-1)[:, -2:]
        step_error = np.abs(logits - expected).max(axis=-1)[:-1]
        decided = top_two[:, 1] - top_two[:, 0] > 2 * step_error
    record_property("near_ties", int((~decided).sum()))
    assert np.asarray(tokens)[decided].tolist() == chosen[decided].tolist()


def greedy(session: KVSession, prompt: list[int], chunk: int) -> tuple[list[int], np.ndarray]:
    """The prompt prefilled `chunk` tokens at a time, as the runtime does, then DECODE_STEPS
    greedy decodes: (generated tokens, logits `[DECODE_STEPS + 1, V]`)."""
    for start in range(0, len(prompt), chunk):
        last = session.run("prefill", 0, prompt[start : start + chunk])
    rows = [last]
    tokens: list[int] = []
    for _ in range(DECODE_STEPS):
        tokens.append(int(np.argmax(rows[-1])))
        rows.append(session.run("decode", 0, tokens[-1:]))
    return tokens, np.stack(rows)


def check_batches_equal_separate_sequences(build: Build) -> None:
    """batch_prefill of two sequences of different lengths gives each one's own prefill logits,
    and batch_decode each one's own decode logits."""
    chat = json.loads((build.model_dir / "mlc-chat-config.json").read_text())
    window = chat["sliding_window_size"]
    seqs = BATCH_SEQS
    assert sum(map(len, seqs.values())) <= chat["prefill_chunk_size"]

    def session() -> KVSession:
        s = KVSession(
            build.lib, max_batch=MAX_BATCH, max_total_seq_len=64, sliding_window=window != -1
        )
        for seq_id in seqs:
            s.add(seq_id)
            if window != -1:
                s.enable_sliding_window(seq_id, window, chat["attention_sink_size"])
        return s

    alone = session()
    prefills = {i: alone.run("prefill", i, tokens) for i, tokens in seqs.items()}
    nexts = {i: int(np.argmax(logits)) for i, logits in prefills.items()}
    decodes = {i: alone.run("decode", i, [nexts[i]]) for i in seqs}

    together = session()
    batch_prefill = together.run_batch("batch_prefill", seqs)
    batch_decode = together.run_batch(
        "batch_decode", {i: [nexts[i]] for i in seqs}, batch_rows=True
    )
    assert batch_prefill.shape == (1, 2, prefills[1].size)
    assert batch_decode.shape == (2, 1, prefills[1].size)
    scale = max(float(np.abs(x).max()) for x in prefills.values())
    rel_tol = REL_TOL_F16 if "f16" in build.quantization else REL_TOL
    for row, seq_id in enumerate(seqs):
        np.testing.assert_allclose(
            batch_prefill[0, row], prefills[seq_id], rtol=0, atol=rel_tol * scale + ABS_TOL
        )
        np.testing.assert_allclose(
            batch_decode[row, 0], decodes[seq_id], rtol=0, atol=rel_tol * scale + ABS_TOL
        )
