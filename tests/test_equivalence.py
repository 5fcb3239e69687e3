"""Converted checkpoints, compiled for linux, give the logits transformers gives.

For each family a tiny random model is made by transformers from a config (no download), saved
with `save_pretrained`, converted with `convert_checkpoint`, compiled, and run through the Relax VM
with the paged KV cache the way the MLC runtime runs it: a prefill, then greedy decode steps.
transformers then runs the same tokens in one forward pass; every step's logits must agree.

- q0f32: against the checkpoint's own weights.
- q4f32_1: against transformers running the weights the converter stored, dequantized
  (quantization error is the converter's choice, not a runtime difference).
- q4f16_0 (MLC's "KN" layout, float16 activations and KV cache): the same dequantized reference
  in float32, with a tolerance for float16 arithmetic.

The families cover what differs between them: llama (untied lm_head, GQA, large rope base),
mistral (sliding window, exceeded by the decode steps), qwen2 (QKV bias, tied embeddings), qwen3
(per-head q/k RMSNorm before RoPE, head_dim 32 != hidden / heads = 16, untied lm_head).

Compiles are the slow part (~6 s each, one core): each test converts and compiles one build, so
`pytest -n 2` spreads them over both cores whatever the distribution mode.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from packaging_plugin.convert import convert_checkpoint
from packaging_plugin.quantization import dequantize_q4

from .runtime_helpers import (
    KVSession,
    LoadedLibrary,
    compile_request,
    load_library,
    read_tensor_cache,
)

PROMPT = [1, 17, 42, 99, 3, 7]
DECODE_STEPS = 8
SLIDING_WINDOW = 8  # < len(PROMPT) + DECODE_STEPS: the decode steps slide the window
REL_TOL = 1e-4  # of the largest |logit|
ABS_TOL = 1e-5
# float16 activations, sums and KV cache against a float32 reference: ~10 bits of mantissa.
REL_TOL_F16 = 1e-2

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "max_position_embeddings": 512,
}


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str
    model_class: str
    extra: dict[str, Any]


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
)
LLAMA, MISTRAL, QWEN2, QWEN3 = FAMILIES
# q4 paths: llama covers the dequantize-matmul lm_head, qwen2 the tied q4 embedding as lm_head
# and the bias; mistral's q4 adds nothing but a ~7 s compile (it passes, 2.8e-6 at scale 3.7).
BUILDS = [
    (LLAMA, "q0f32"),
    (LLAMA, "q4f32_1"),
    (LLAMA, "q4f16_0"),  # KN layout: transposed linear weights, NK embeddings
    (MISTRAL, "q0f32"),
    (QWEN2, "q0f32"),
    (QWEN2, "q4f32_1"),
    (QWEN3, "q0f32"),
    (QWEN3, "q4f32_1"),
]


def make_model(family: Family, seed: int) -> torch.nn.Module:
    """A transformers model with random weights scaled so logits are O(1..10), not ~0."""
    config = getattr(transformers, family.config_class)(**TINY, **family.extra)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, family.model_class)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.3 * torch.randn_like(p))
            else:  # fan-in scaled, so activations stay O(1) through the layers
                p.copy_(torch.randn_like(p) / p.shape[1] ** 0.5)
    return model


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
    from packaging_plugin.compiler import compile_library

    prefix = f"eq_{family.name}_{quant}_"
    compile_library(compile_request(model_dir, prefix), work / "lib.tar")
    lib = load_library(work / "lib.tar", prefix, model_dir, work / "so")
    return Build(family, quant, model, model_dir, lib)


def reference_model(build: Build) -> torch.nn.Module:
    """transformers with the weights the converter stored (dequantized for q4)."""
    if build.quantization == "q0f32":
        return build.hf_model
    kn_layout = build.quantization == "q4f16_0"
    stored = read_tensor_cache(build.model_dir)
    cfg = build.hf_model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    q_rows = cfg.num_attention_heads * head_dim
    kv_rows = cfg.num_key_value_heads * head_dim
    state: dict[str, torch.Tensor] = {}
    for name in stored:
        if not name.endswith(".q_weight"):
            continue
        base = name.removesuffix(".q_weight")
        weight = dequantize_q4(
            stored[name],
            stored[f"{base}.q_scale"],
            dtype=np.float32,
            transposed=kn_layout and base != "model.embed_tokens",  # embeddings stay NK
        )
        # Split MLC's fused parameters back into transformers' ones (concatenated on axis 0).
        if base.endswith((".qkv_proj", ".c_attn")):
            attn = base.rsplit(".", 1)[0]
            parts = np.split(weight, [q_rows, q_rows + kv_rows])
            names = [f"{attn}.{p}_proj.weight" for p in "qkv"]
        elif base.endswith(".gate_up_proj"):
            mlp = base.rsplit(".", 1)[0]
            parts = np.split(weight, 2)
            names = [f"{mlp}.gate_proj.weight", f"{mlp}.up_proj.weight"]
        else:
            parts, names = [weight], [f"{base}.weight"]
        state.update({n: torch.from_numpy(p.copy()) for n, p in zip(names, parts, strict=True)})
    model = copy.deepcopy(build.hf_model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    quantized = {n for n, _ in model.named_parameters()} - set(missing)
    assert len(quantized) == len(state)  # every quantized weight replaced one parameter
    return model


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


def check_prefill_and_greedy_decode(
    build: Build, record_property: Callable[[str, object], None]
) -> None:
    chat = json.loads((build.model_dir / "mlc-chat-config.json").read_text())
    window = chat["sliding_window_size"]
    session = KVSession(build.lib, max_total_seq_len=64, sliding_window=window != -1)
    session.add(0)
    if window != -1:
        # What the MLC runtime does for a sequence of a sliding-window model.
        assert len(PROMPT) + DECODE_STEPS > SLIDING_WINDOW
        session.enable_sliding_window(0, window, chat["attention_sink_size"])
    tokens, logits = session.greedy(0, PROMPT, DECODE_STEPS)

    with torch.no_grad():
        full = reference_model(build)(torch.tensor([PROMPT + tokens])).logits[0].numpy()
    expected = full[len(PROMPT) - 1 :]  # the logits after the prompt and after each decode
    diff = float(np.abs(logits - expected).max())
    scale = float(np.abs(expected).max())
    # Kept in the JUnit report and printed (pytest -s / -rP) for the figures in the docs.
    record_property("max_abs_logit_diff", diff)
    record_property("max_abs_logit", scale)
    print(f"{build.id}: max |logit diff| {diff:.2e}, max |logit| {scale:.2f}")
    rel_tol = REL_TOL_F16 if "f16" in build.quantization else REL_TOL
    assert diff <= rel_tol * scale + ABS_TOL, f"max |diff| {diff:.3g} at logit scale {scale:.3g}"
    # Greedy choices agree at every step (transformers' argmax on the same prefix).
    assert tokens == expected[:-1].argmax(axis=-1).tolist()
