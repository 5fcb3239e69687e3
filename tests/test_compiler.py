"""Compile demo models for linux and run the library the way an app does, against numpy.

The library is loaded through the system-lib route (the only one a prefixed build supports):
the tar's objects are linked into a shared object, loaded so that their static constructors
register the prefix, then opened with `tvm.runtime.system_lib(prefix)`.
Weights come from the demo model's tensor cache through the runtime's own loader.
"""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from packaging_plugin.families import SUPPORTED_MODEL_TYPES
from packaging_plugin.quantization.packing import dequantize_groups, quantize_groups
from packaging_plugin.quantization.schemes import Q4
from tests.helpers import runtime

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "configs" / "models"

# These linux builds ask for the GPU sampler, so that its numerics can be checked.
REQUIRED_FUNCTIONS = runtime.RUNTIME_FUNCTIONS | runtime.GPU_SAMPLER_FUNCTIONS

# (demo model, system-lib prefix). The second prefix is deliberately 3 bytes: TVM 0.27 crashes
# on prefixes of 7 bytes or fewer unless compile_library works around it.
BUILDS = [
    ("tiny-llama-q0f32", "tc_tiny_llama_q0f32_"),  # tied embeddings, llama3 RoPE scaling
    ("tiny-qwen2-q4f32_1", "qw_"),  # q4 dequantize-matmul, QKV bias, GQA, untied lm_head
]


def compile_request(model: str, prefix: str, device: str = "linux") -> dict[str, Any]:
    """The compile request for a demo model (top-level chat-config sizes folded in, as MLC)."""
    return runtime.compile_request(MODELS / model, prefix, device)


# ------------------------------------------------------------------------------------------------
# numpy reference


def read_tensor_cache(model_dir: Path) -> dict[str, np.ndarray]:
    index = json.loads((model_dir / "tensor-cache.json").read_text())
    out: dict[str, np.ndarray] = {}
    for shard in index["records"]:
        data = (model_dir / shard["dataPath"]).read_bytes()
        for rec in shard["records"]:
            assert rec["format"] == "raw"
            raw = data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]]
            out[rec["name"]] = np.frombuffer(raw, dtype=rec["dtype"]).reshape(rec["shape"])
    return out


def reference_weights(model_dir: Path) -> dict[str, np.ndarray]:
    """`<name>.weight` float64 arrays, dequantizing q4 pairs."""
    stored = read_tensor_cache(model_dir)
    weights: dict[str, np.ndarray] = {}
    for name, array in stored.items():
        if name.endswith(".q_weight"):
            base = name.removesuffix(".q_weight")
            weights[f"{base}.weight"] = dequantize_groups(
                array, stored[f"{base}.q_scale"], Q4, dtype=np.float64
            )
        elif not name.endswith(".q_scale"):
            weights[name] = array.astype(np.float64)
    return weights


def inverse_frequencies(cfg: dict[str, Any], head_dim: int) -> np.ndarray:
    theta = cfg.get("position_embedding_base") or cfg.get("rope_theta")
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaling = cfg.get("rope_scaling") or {}
    if scaling.get("rope_type") == "llama3":  # Llama 3.1's wavelength-banded rescaling
        factor, low, high = (
            scaling["factor"],
            scaling["low_freq_factor"],
            scaling["high_freq_factor"],
        )
        original = scaling["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv
        smooth = (original / wavelen - low) / (high - low)
        blended = (1 - smooth) * inv / factor + smooth * inv
        inv = np.where(
            wavelen < original / high,
            inv,
            np.where(wavelen > original / low, inv / factor, blended),
        )
    return inv


def reference_logits(model: str, ids: list[int]) -> np.ndarray:
    """float64 logits `[len(ids), vocab]` of the llama-family forward on the demo weights."""
    model_dir = MODELS / model
    chat = json.loads((model_dir / "mlc-chat-config.json").read_text())
    cfg = chat["model_config"]
    w = reference_weights(model_dir)
    hq, hkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = cfg["head_dim"]
    eps = cfg["rms_norm_eps"]
    qkv_name = "c_attn" if chat["model_type"] == "qwen2" else "qkv_proj"
    n = len(ids)

    def rms_norm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight

    angles = np.arange(n)[:, None] * inverse_frequencies(cfg, d)[None, :]  # [n, d/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]

    def rope(x: np.ndarray) -> np.ndarray:  # rotate-half convention, x: [n, heads, d]
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    x = w["model.embed_tokens.weight"][ids]
    causal = np.tril(np.ones((n, n), dtype=bool))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        h = rms_norm(x, w[f"{p}.input_layernorm.weight"])
        qkv = h @ w[f"{p}.self_attn.{qkv_name}.weight"].T
        if f"{p}.self_attn.{qkv_name}.bias" in w:
            qkv = qkv + w[f"{p}.self_attn.{qkv_name}.bias"]
        qkv = qkv.reshape(n, hq + 2 * hkv, d)
        q, k, v = rope(qkv[:, :hq]), rope(qkv[:, hq : hq + hkv]), qkv[:, hq + hkv :]
        k, v = np.repeat(k, hq // hkv, axis=1), np.repeat(v, hq // hkv, axis=1)  # GQA
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", probs, v).reshape(n, hq * d)
        x = x + attn @ w[f"{p}.self_attn.o_proj.weight"].T
        h = rms_norm(x, w[f"{p}.post_attention_layernorm.weight"])
        gate, up = np.split(h @ w[f"{p}.mlp.gate_up_proj.weight"].T, 2, axis=-1)
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[f"{p}.mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


# ------------------------------------------------------------------------------------------------
# Built libraries


@dataclass
class Built:
    model: str
    prefix: str
    request: dict[str, Any]
    tar: Path
    vm: Any
    params: Any
    metadata: dict[str, Any]


@pytest.fixture(scope="module", params=BUILDS, ids=[b[0] for b in BUILDS])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    import tvm
    from tvm import relax

    from packaging_plugin.compile.pipeline import compile_library

    model, prefix = request.param
    work = tmp_path_factory.mktemp(model)
    # The sampler is asked for so that its numerics can be checked on the CPU.
    req = {**compile_request(model, prefix), "gpu_sampler": True}
    tar_path = work / "lib.tar"
    compile_library(req, tar_path)
    runtime.load_shared(runtime.link_shared(tar_path, work))
    vm = relax.VirtualMachine(tvm.runtime.system_lib(prefix), tvm.cpu())
    metadata = json.loads(str(vm["_metadata"]()))
    tvm.get_global_func("vm.builtin.tensor_cache.load")(str(MODELS / model), 1, 0)
    params = tvm.get_global_func("vm.builtin.param_array_from_cache_by_name")(
        [p["name"] for p in metadata["params"]]
    )
    return Built(model, prefix, req, tar_path, vm, params, metadata)


class KVSession:
    """Drives the paged KV cache the way the MLC runtime does around each model call."""

    def __init__(self, b: Built) -> None:
        import tvm

        self.tvm = tvm
        self.b = b
        shape = tvm.runtime.ShapeTuple
        meta = b.metadata
        self.kv = b.vm["create_tir_paged_kv_cache"](
            shape([4]),
            shape([meta["context_window_size"]]),
            shape([meta["prefill_chunk_size"]]),
            shape([16]),
            shape([0]),
        )

    def _fn(self, name: str) -> Any:
        return self.tvm.get_global_func(f"vm.builtin.{name}")

    def add(self, seq_id: int) -> None:
        self._fn("kv_state_add_sequence")(self.kv, seq_id)

    def run(
        self, func: str, seqs: dict[int, list[int]], *extra: Any, batch_rows: bool = False
    ) -> np.ndarray:
        """Embed the tokens of `seqs` and call `func` on them; returns the logits as numpy."""
        tvm, shape = self.tvm, self.tvm.runtime.ShapeTuple
        ids = np.array([t for toks in seqs.values() for t in toks], dtype="int32")
        self._fn("kv_state_begin_forward")(
            self.kv, shape(list(seqs)), shape([len(t) for t in seqs.values()])
        )
        embeds = self.b.vm["embed"](tvm.runtime.tensor(ids), self.b.params).numpy()
        embeds = embeds.reshape((len(ids), 1, -1) if batch_rows else (1, len(ids), -1))
        args = [tvm.runtime.tensor(embeds), *extra, self.kv, self.b.params]
        logits, _ = self.b.vm[func](*args)
        self._fn("kv_state_end_forward")(self.kv)
        return logits.numpy()


TOKENS_A = [1, 17, 42, 99, 3, 7, 250]
TOKENS_B = [1, 8, 200, 64]


# ------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.slow
def test_library_exports_the_runtime_functions(built: Built) -> None:
    for name in REQUIRED_FUNCTIONS:
        assert built.vm.module.implements_function(name, True), name
    emb = built.vm["alloc_embedding_tensor"]()
    assert tuple(emb.shape) == (built.metadata["prefill_chunk_size"], 64)


@pytest.mark.slow
def test_metadata_matches_the_weights(built: Built) -> None:
    meta = built.metadata
    assert meta["model_type"] == built.request["model_type"]
    assert meta["quantization"] == built.request["quantization"]
    assert meta["tensor_parallel_shards"] == 1
    assert meta["sliding_window_size"] == -1 and meta["attention_sink_size"] == -1
    assert meta["kv_cache"] == {
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "head_dim": 16,
        "num_key_value_heads": built.request["model_config"]["num_key_value_heads"],
    }
    # Names and order are those of the converted weights (MLC's order); vocab dim symbolic.
    index = json.loads((MODELS / built.model / "tensor-cache.json").read_text())
    stored = [r for shard in index["records"] for r in shard["records"]]
    assert [p["name"] for p in meta["params"]] == [r["name"] for r in stored]
    for param, rec in zip(meta["params"], stored, strict=True):
        assert param["dtype"] == rec["dtype"]
        assert param["preprocs"] == [] and param["pipeline_stages"] == [0]
        if param["name"].startswith(("model.embed_tokens.", "lm_head.")):
            assert param["shape"][0] == "vocab_size"
            assert param["shape"][1:] == rec["shape"][1:]
        else:
            assert param["shape"] == rec["shape"]


@pytest.mark.slow
def test_prefill_and_decode_match_numpy(built: Built) -> None:
    session = KVSession(built)
    session.add(0)
    prompt, next_token = TOKENS_A[:-1], TOKENS_A[-1]
    expected = reference_logits(built.model, TOKENS_A)

    logits = session.run("prefill", {0: prompt})
    assert logits.shape == (1, 1, expected.shape[1]) and logits.dtype == np.float32
    np.testing.assert_allclose(logits[0, 0], expected[len(prompt) - 1], atol=1e-4, rtol=0)

    logits = session.run("decode", {0: [next_token]})
    np.testing.assert_allclose(logits[0, 0], expected[-1], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_batch_prefill_and_batch_decode_match_numpy(built: Built) -> None:
    import tvm

    session = KVSession(built)
    session.add(1)
    session.add(2)
    a, b = TOKENS_A, TOKENS_B
    ref_a, ref_b = reference_logits(built.model, a), reference_logits(built.model, b)

    # The two prompts are concatenated; logits are wanted at the last token of each.
    prompts = {1: a[:-1], 2: b[:-1]}
    ends = np.cumsum([len(p) for p in prompts.values()]) - 1
    positions = tvm.runtime.tensor(ends.astype("int32"))
    logits = session.run("batch_prefill", prompts, positions)
    assert logits.shape == (1, 2, ref_a.shape[1])
    np.testing.assert_allclose(logits[0, 0], ref_a[-2], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[0, 1], ref_b[-2], atol=1e-4, rtol=0)

    logits = session.run("batch_decode", {1: a[-1:], 2: b[-1:]}, batch_rows=True)
    assert logits.shape == (2, 1, ref_a.shape[1])
    np.testing.assert_allclose(logits[0, 0], ref_a[-1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits[1, 0], ref_b[-1], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_logit_functions_match_numpy(built: Built) -> None:
    import tvm

    def fn(name: str) -> Any:
        return built.vm.module.get_function(name, query_imports=True)

    def arr(values: Any, dtype: str) -> Any:
        return tvm.runtime.tensor(np.asarray(values, dtype=dtype))

    rng = np.random.default_rng(7)
    vocab = 40
    logits = rng.standard_normal((3, vocab)).astype("float32")
    logits[2, [5, 9]] = logits[2].max() + 1.0  # a tie for the greedy row

    # softmax_with_temperature: [B, 1, V]; T <= 1e-5 is greedy (uniform over tied maxima).
    temps = np.array([0.7, 1.0, 0.0], "float32")
    probs = built.vm["softmax_with_temperature"](
        arr(logits[:, None], "float32"), arr(temps, "float32")
    )
    expected = np.exp(
        logits[:2] / temps[:2, None] - (logits[:2] / temps[:2, None]).max(-1, keepdims=True)
    )
    expected /= expected.sum(-1, keepdims=True)
    greedy = np.zeros(vocab, "float32")
    greedy[[5, 9]] = 0.5
    np.testing.assert_allclose(probs.numpy()[:, 0], np.vstack([expected, greedy]), atol=1e-6)

    # logits[pos2seq[i], token_ids[i]] += bias[i]
    out = arr(logits, "float32")
    fn("apply_logit_bias_inplace")(
        out, arr([1, 0, 1], "int32"), arr([3, 4, 7], "int32"), arr([1.5, -2.0, 0.25], "float32")
    )
    want = logits.copy()
    want[1, 3] += 1.5
    want[0, 4] -= 2.0
    want[1, 7] += 0.25
    np.testing.assert_array_equal(out.numpy(), want)

    # penalties[s] = (presence, frequency, repetition) for logits row seq_ids[s]
    out = arr(logits, "float32")
    seq_ids, pos2seq, token_ids, counts = [2, 0], [0, 1, 1], [1, 6, 8], [1, 3, 2]
    penalties = np.array([[0.5, 0.1, 1.2], [0.0, 0.2, 2.0]], "float32")
    fn("apply_penalty_inplace")(
        out,
        arr(seq_ids, "int32"),
        arr(pos2seq, "int32"),
        arr(token_ids, "int32"),
        arr(counts, "int32"),
        arr(penalties, "float32"),
    )
    want = logits.copy()
    for s, tok, cnt in zip(pos2seq, token_ids, counts, strict=True):
        row = seq_ids[s]
        value = want[row, tok] - (penalties[s, 0] + cnt * penalties[s, 1])
        want[row, tok] = value * penalties[s, 2] if value < 0 else value / penalties[s, 2]
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)

    # bitmask: token v of row seq_ids[s] kept iff bit v % 32 of word v // 32 is set
    out = arr(logits, "float32")
    keep = rng.random((3, vocab)) < 0.5
    bits = np.zeros((3, 2), np.uint32)
    for r, v in zip(*np.nonzero(keep), strict=True):
        bits[r, v // 32] |= np.uint32(1 << (v % 32))
    fn("apply_bitmask_inplace")(out, arr([0, 2], "int32"), arr(bits.view(np.int32), "int32"))
    want = logits.copy()
    for r in (0, 2):
        want[r, ~keep[r]] = np.finfo(np.float32).min
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.slow
def test_metadata_reports_planned_memory(built: Built) -> None:
    usage = built.metadata["memory_usage"]
    relax_functions = [n for n in REQUIRED_FUNCTIONS if not n.startswith(("_", "apply_"))]
    assert set(usage) == set(relax_functions)  # every Relax function but _metadata itself
    assert all(isinstance(v, int) and v >= 0 for v in usage.values())
    for name in ("prefill", "decode", "batch_prefill", "batch_decode"):
        assert usage[name] > 0, name
    # Planned with the upper bounds: a prefill holds at least one [prefill_chunk, hidden] f32
    # activation, a decode far less.
    chunk_bytes = built.metadata["prefill_chunk_size"] * 64 * 4
    assert usage["prefill"] >= chunk_bytes and usage["batch_prefill"] >= chunk_bytes
    assert usage["decode"] < usage["prefill"]


def _uniform_away_from(edges: np.ndarray, rng: np.random.Generator) -> float:
    """A uniform sample at least 1e-4 from every edge: float32 sums on either side must agree."""
    while True:
        u = float(rng.random(dtype=np.float32))
        if np.min(np.abs(edges - u)) > 1e-4:
            return u


@pytest.mark.parametrize("batch", [1, 3, 8])  # 8 = the demo models' max_batch_size
@pytest.mark.slow
def test_sampler_functions_match_numpy(built: Built, batch: int) -> None:
    import tvm

    def arr(values: Any, dtype: str) -> Any:
        return tvm.runtime.tensor(np.asarray(values, dtype=dtype))

    rng = np.random.default_rng(batch)
    vocab = 97 + batch  # odd sizes: the merge sort's last run is short
    probs = rng.dirichlet(np.full(vocab, 0.3), size=batch)
    probs[:, -4:] = 0.0  # tied zeros, which no sampler may pick
    probs = (probs / probs.sum(-1, keepdims=True)).astype("float32")
    sample_idx = rng.integers(0, batch, size=batch).astype("int32")  # rows may repeat
    cumsum = np.cumsum(probs.astype(np.float64), axis=1)

    # multinomial: the first token whose cumulative probability exceeds u
    uniform = np.array([_uniform_away_from(cumsum[r], rng) for r in sample_idx], "float32")
    got = built.vm["multinomial_from_uniform"](
        arr(probs, "float32"), arr(uniform, "float32"), arr(sample_idx, "int32")
    ).numpy()
    expected = [int(np.argmax(cumsum[r] > u)) for r, u in zip(sample_idx, uniform, strict=True)]
    assert got.dtype == np.int32 and got.tolist() == expected

    # argsort_probs: descending values and the tokens they belong to (ties in any order)
    sorted_probs, sorted_idx = (x.numpy() for x in built.vm["argsort_probs"](arr(probs, "float32")))
    assert sorted_probs.dtype == np.float32 and sorted_idx.dtype == np.int32
    np.testing.assert_array_equal(sorted_probs, -np.sort(-probs, axis=1))
    np.testing.assert_array_equal(
        np.sort(sorted_idx, axis=1), np.tile(np.arange(vocab), (batch, 1))
    )
    np.testing.assert_array_equal(np.take_along_axis(probs, sorted_idx, axis=1), sorted_probs)

    # sample_with_top_p: keep the sorted prefix up to the first token whose cumulative
    # probability reaches top_p, renormalise, then sample from it as above.
    sorted_cumsum = np.cumsum(sorted_probs.astype(np.float64), axis=1)
    top_p = np.array([_uniform_away_from(sorted_cumsum[r], rng) for r in range(batch)], "float32")
    top_p[0] = min(top_p[0], sorted_probs[0, 0] / 2)  # below the top token: greedy
    kept_end = [int(np.argmax(sorted_cumsum[r] >= top_p[r])) for r in range(batch)]
    uniform = np.array(
        [
            _uniform_away_from(sorted_cumsum[r] / sorted_cumsum[r, kept_end[r]], rng)
            for r in sample_idx
        ],
        "float32",
    )
    got = built.vm["sample_with_top_p"](
        arr(sorted_probs, "float32"),
        arr(sorted_idx, "int32"),
        arr(uniform, "float32"),
        arr(sample_idx, "int32"),
        arr(top_p, "float32"),
    ).numpy()
    expected = []
    for r, u in zip(sample_idx, uniform, strict=True):
        renormed = sorted_cumsum[r] / sorted_cumsum[r, kept_end[r]]
        expected.append(int(sorted_idx[r, np.argmax(u < renormed)]))
    assert got.dtype == np.int32 and got.tolist() == expected
    if 0 in sample_idx:
        assert got[sample_idx == 0].tolist() == [sorted_idx[0, 0]] * int((sample_idx == 0).sum())

    # sampler_take_probs: the sampled tokens' probabilities, and (token, prob) at flattened
    # offsets row * V + rank into the sorted arrays (the runtime asks for ranks 0..4).
    sampled = np.asarray(got, "int32")
    offsets = np.array([r * vocab + k for r in sample_idx for k in range(5)], "int32")
    sampled_probs, top_probs, top_tokens = (
        x.numpy()
        for x in built.vm["sampler_take_probs"](
            arr(probs, "float32"),
            arr(sorted_idx, "int32"),
            arr(sample_idx, "int32"),
            arr(sampled, "int32"),
            arr(offsets, "int32"),
        )
    )
    np.testing.assert_array_equal(sampled_probs, probs[sample_idx, sampled])
    np.testing.assert_array_equal(top_tokens, sorted_idx.reshape(-1)[offsets])
    np.testing.assert_array_equal(top_probs, sorted_probs.reshape(-1)[offsets])

    # renormalize_by_top_p (MLC's pivot contract): keep every token >= the pivot, the value at
    # the first sorted rank whose cumulative mass reaches top_p, ties included; divide by the
    # kept mass. Row 1 gets a tie at its pivot: both tied tokens must be kept.
    tied = probs.copy()
    if batch > 1:
        tied[1, sorted_idx[1, 3]] = tied[1, sorted_idx[1, 2]]
        tied[1] /= tied[1].sum()
    tied_sorted = -np.sort(-tied, axis=1)
    tied_cumsum = np.cumsum(tied_sorted.astype(np.float64), axis=1)
    top_p = np.array([_uniform_away_from(tied_cumsum[r], rng) for r in range(batch)], "float32")
    if batch > 1:
        top_p[1] = (tied_cumsum[1, 1] + tied_cumsum[1, 2]) / 2  # the pivot lands on the tie
    got = built.vm["renormalize_by_top_p"](
        arr(tied, "float32"), arr(top_p, "float32"), arr(np.zeros((batch, 3)), "float32")
    ).numpy()
    expected = np.zeros_like(tied, dtype=np.float64)
    for r in range(batch):
        pivot = tied_sorted[r, np.argmax(tied_cumsum[r] >= top_p[r])]
        keep = tied[r] >= pivot
        expected[r, keep] = tied[r, keep] / tied[r, keep].astype(np.float64).sum()
    if batch > 1:
        assert (expected[1] > 0).sum() == 4
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_tar_is_reproducible_and_normalized(tmp_path: Path) -> None:
    # A package's library (no test-only sampler): the same request must give the same bytes,
    # also from separate processes, as the compile child runs it.
    from packaging_plugin.compile.runner import run_compile

    request = compile_request("tiny-qwen2-q4f32_1", "repro_")
    first, again = tmp_path / "first.tar", tmp_path / "again.tar"
    run_compile(request, first, timeout=600)
    run_compile(request, again, timeout=600)
    assert again.read_bytes() == first.read_bytes()
    with tarfile.open(first, mode="r:") as tar:  # plain tar, not gzip
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(["lib0.o", "repro_devc.o"])
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")


@pytest.mark.slow
def test_short_prefix_objects_carry_the_prefix(built: Built) -> None:
    with tarfile.open(built.tar) as tar:
        devc = tar.extractfile(f"{built.prefix}devc.o")
        assert devc is not None
        assert f"{built.prefix}__tvm_ffi__library_bin".encode() in devc.read()


def test_compile_child_reports_a_bad_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from packaging_plugin.compile import child as compile_child

    req = compile_request(BUILDS[0][0], "x_")
    req["model_type"] = "mamba"
    path = tmp_path / "req.json"
    path.write_text(json.dumps(req))
    assert compile_child.main([str(path), str(tmp_path / "out.tar")]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == (
        "compile failed: ValueError: unsupported model_type 'mamba'; "
        f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )
    assert "Traceback" in err
    assert not (tmp_path / "out.tar").exists()


# ------------------------------------------------------------------------------------------------
# q4 packing (no TVM)


def test_q4_packs_nibbles_lowest_first() -> None:
    # One group with max |w| = 3.5, so scale = 0.5 exactly and w = (code - 7) * 0.5.
    codes = [*range(15), *([7] * 17)]
    row = (np.array(codes, dtype=np.float32) - 7) * 0.5
    zero_row = np.zeros(32, dtype=np.float32)
    q_weight, q_scale = quantize_groups(np.stack([row, zero_row]), np.float16, Q4)
    assert q_weight.dtype == np.uint32 and q_weight.shape == (2, 4)
    assert q_scale.dtype == np.float16 and q_scale.shape == (2, 1)
    # Element r of each run of 8 sits at bits 4r: codes 0..7 read 0x76543210 as a word.
    assert [hex(x) for x in q_weight[0]] == ["0x76543210", "0x7edcba98", "0x77777777", "0x77777777"]
    assert q_scale[0, 0] == 0.5
    # An all-zero group: scale 0 and code 0 everywhere (as MLC packs it), dequantizing to
    # zeros (no NaN).
    assert q_scale[1, 0] == 0 and all(x == 0 for x in q_weight[1])
    back = dequantize_groups(q_weight, q_scale, Q4, dtype=np.float32)
    np.testing.assert_array_equal(back, np.stack([row, zero_row]))


def test_q4_pads_the_last_group_and_bounds_the_error() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 40)).astype(np.float32)  # 40 = one group + 8 padded columns
    q_weight, q_scale = quantize_groups(w, np.float32, Q4)
    assert q_weight.shape == (3, 8) and q_scale.shape == (3, 2)
    back = dequantize_groups(q_weight, q_scale, Q4, in_features=40)
    assert back.shape == w.shape
    scale_per_col = np.repeat(q_scale, 32, axis=1)[:, :40]
    assert np.all(np.abs(back - w) <= scale_per_col / 2 + 1e-6)


def test_q4_kn_layout_is_the_nk_packing_transposed() -> None:
    # q4f16_0 ("KN"): a [N=2, K=64] weight is grouped along K as in NK, then the words and the
    # scales are stored transposed: q_weight [K/8 = 8, N], q_scale [K/32 = 2, N].
    w = np.zeros((2, 64), dtype=np.float32)
    w[0, :4] = [7, -7, 0, 1]  # group (row 0, k 0..31): max 7, scale 1, codes 14, 0, 7, 8
    w[1, 32] = -3.5  # group (row 1, k 32..63): scale 0.5, code 0 at k 32
    q_weight, q_scale = quantize_groups(w, np.float16, Q4, transposed=True)
    assert q_weight.shape == (8, 2) and q_scale.shape == (2, 2)
    assert q_weight.flags.c_contiguous and q_scale.flags.c_contiguous
    # Word [0, 0] holds k 0..7 of output 0, lowest nibble first: 14, 0, 7, 8, then 7s.
    assert hex(q_weight[0, 0]) == "0x7777870e"
    assert hex(q_weight[4, 1]) == "0x77777770"  # k 32..39 of output 1
    # The other words of those two groups hold zeros (code 7); the two all-zero groups (scale
    # 0) hold code 0.
    assert [hex(q_weight[i, 0]) for i in range(1, 4)] == ["0x77777777"] * 3
    assert [hex(q_weight[i, 1]) for i in range(5, 8)] == ["0x77777777"] * 3
    assert q_weight[4:, 0].tolist() == [0] * 4 and q_weight[:4, 1].tolist() == [0] * 4
    assert q_scale.tolist() == [[1.0, 0.0], [0.0, 0.5]]  # [group, output]
    back = dequantize_groups(q_weight, q_scale, Q4, dtype=np.float32, transposed=True)
    np.testing.assert_array_equal(back, w)
    with pytest.raises(ValueError, match="KN layout needs a 2-D weight"):
        quantize_groups(np.zeros((2, 2, 32), np.float32), np.float16, Q4, transposed=True)
