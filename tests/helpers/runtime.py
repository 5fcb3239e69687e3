"""Run a compiled linux model library the way the MLC runtime does (shared by runtime tests).

The tar's objects are linked into a shared object and loaded, so their static constructors
register the system-lib prefix; the plugin's `model_runtime` (which the smoke step uses on the
packaged library) opens it, loads the weights and drives the KV cache.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from packaging_plugin.run.model_runtime import KVSession, LoadedLibrary, load_shared, open_model

__all__ = ["KVSession", "LoadedLibrary", "load_library", "load_shared"]

# The runtime's contract, written out here (not taken from the plugin's own lists): what it
# looks up in every model library (cpp/serve/function_table.cc)...
RUNTIME_FUNCTIONS = frozenset(
    {
        "_metadata",
        "embed",
        "prefill",
        "decode",
        "batch_prefill",
        "batch_decode",
        "batch_verify",
        "create_tir_paged_kv_cache",
        "alloc_embedding_tensor",
        "softmax_with_temperature",
        # TIR functions, found through the library's imports
        "apply_logit_bias_inplace",
        "apply_penalty_inplace",
        "apply_bitmask_inplace",
    }
)
# ...and, where sampling runs on the GPU (Metal), the sampler kernels.
GPU_SAMPLER_FUNCTIONS = frozenset(
    {
        "multinomial_from_uniform",
        "argsort_probs",
        "sample_with_top_p",
        "sampler_take_probs",
        "renormalize_by_top_p",
    }
)

CHAT_KEYS_FOLDED = (
    "context_window_size",
    "prefill_chunk_size",
    "sliding_window_size",
    "attention_sink_size",
)


def compile_request(model_dir: Path, prefix: str, device: str = "linux") -> dict[str, Any]:
    """The compile request for an MLC model directory (top-level sizes folded in, as MLC does)."""
    chat = json.loads((Path(model_dir) / "mlc-chat-config.json").read_text())
    model_config = dict(chat["model_config"])
    for key in CHAT_KEYS_FOLDED:
        model_config[key] = chat[key]
    return {
        "model_type": chat["model_type"],
        "quantization": chat["quantization"],
        "device": device,
        "model_config": model_config,
        "system_lib_prefix": prefix,
    }


def link_shared(tar_path: Path, out_dir: Path) -> Path:
    """Link the library tar's objects into `out_dir/model.so`."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler to link the library objects into a shared object")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        names = tar.getnames()
        tar.extractall(out_dir, filter="data")
    so = out_dir / "model.so"
    subprocess.run(
        [cc, "-shared", "-o", str(so), *(str(out_dir / n) for n in names), "-lm"], check=True
    )
    return so


def load_library(tar_path: Path, prefix: str, model_dir: Path, work: Path) -> LoadedLibrary:
    """Link and load a linux system-lib library; load `model_dir`'s weights by metadata name."""
    load_shared(link_shared(tar_path, work))
    return open_model(prefix, model_dir)


def read_tensor_cache(model_dir: Path) -> dict[str, np.ndarray]:
    """Every record of an MLC model directory's tensor cache, by name (raw records only)."""
    index = json.loads((Path(model_dir) / "tensor-cache.json").read_text())
    out: dict[str, np.ndarray] = {}
    for shard in index["records"]:
        data = (Path(model_dir) / shard["dataPath"]).read_bytes()
        for rec in shard["records"]:
            assert rec["format"] == "raw", rec
            raw = data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]]
            out[rec["name"]] = np.frombuffer(raw, dtype=rec["dtype"]).reshape(rec["shape"])
    return out
