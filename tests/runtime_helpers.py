"""Run a compiled linux model library the way the MLC runtime does (shared by runtime tests).

The tar's objects are linked into a shared object and loaded (`load_shared`), so their static
constructors register the system-lib prefix; `tvm.runtime.system_lib(prefix)` then opens it.
Weights come from the model directory's tensor cache through the runtime's own loader, and the
paged KV cache is driven with the same builtins the runtime calls around each step.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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


def load_shared(so: Path) -> None:
    """Load a linked model library into this process; its constructors register its prefix.

    RTLD_LOCAL: registration passes function pointers to the runtime, so nothing needs the
    library's symbols by name, and its weak `__extendhfsf2` / `__truncsfhf2` must not stand in
    front of the definitions of libraries loaded after it (a test process loads dozens).
    """
    ctypes.CDLL(str(so), ctypes.RTLD_LOCAL)


@dataclass
class LoadedLibrary:
    vm: Any  # relax.VirtualMachine
    params: Any  # the packed parameter array, in metadata order
    metadata: dict[str, Any]


def load_library(tar_path: Path, prefix: str, model_dir: Path, work: Path) -> LoadedLibrary:
    """Link and load a linux system-lib library; load `model_dir`'s weights by metadata name."""
    import tvm
    from tvm import relax

    load_shared(link_shared(tar_path, work))
    vm = relax.VirtualMachine(tvm.runtime.system_lib(prefix), tvm.cpu())
    metadata = json.loads(str(vm["_metadata"]()))
    # The tensor cache is process-global in the runtime: load, then take our params out of it.
    tvm.get_global_func("vm.builtin.tensor_cache.load")(str(model_dir), 1, 0)
    params = tvm.get_global_func("vm.builtin.param_array_from_cache_by_name")(
        [p["name"] for p in metadata["params"]]
    )
    tvm.get_global_func("vm.builtin.tensor_cache.clear")()
    return LoadedLibrary(vm, params, metadata)


class KVSession:
    """One paged KV cache, driven as the MLC runtime drives it around each model call."""

    def __init__(
        self,
        lib: LoadedLibrary,
        *,
        max_batch: int = 1,
        max_total_seq_len: int | None = None,
        page_size: int = 16,
        sliding_window: bool = False,
    ) -> None:
        import tvm

        self.tvm = tvm
        self.lib = lib
        meta = lib.metadata
        total = max_total_seq_len or meta["context_window_size"]
        shape = tvm.runtime.ShapeTuple
        self.kv = lib.vm["create_tir_paged_kv_cache"](
            shape([max_batch]),
            shape([total]),
            shape([meta["prefill_chunk_size"]]),
            shape([page_size]),
            shape([1 if sliding_window else 0]),
        )

    def builtin(self, name: str) -> Any:
        return self.tvm.get_global_func(f"vm.builtin.{name}")

    def add(self, seq_id: int) -> None:
        self.builtin("kv_state_add_sequence")(self.kv, seq_id)

    def enable_sliding_window(self, seq_id: int, window: int, sink: int) -> None:
        self.builtin("attention_kv_cache_enable_sliding_window_for_seq")(
            self.kv, seq_id, window, sink
        )

    def run(self, func: str, seq_id: int, tokens: list[int]) -> np.ndarray:
        """Embed `tokens` of one sequence and call `func` (prefill/decode): float32 [vocab]."""
        return self.run_batch(func, {seq_id: tokens}).reshape(-1)

    def run_batch(
        self, func: str, seqs: dict[int, list[int]], *, batch_rows: bool = False
    ) -> np.ndarray:
        """Embed the tokens of `seqs` (sequence id -> tokens) and call `func` on all of them.

        The tokens are concatenated in one row (`[1, n, h]`: prefill, batch_prefill, which is
        given the last position of each sequence), or one row per sequence (`batch_rows`:
        batch_decode). Returns the float32 logits as the function returns them.
        """
        tvm, shape = self.tvm, self.tvm.runtime.ShapeTuple
        ids = np.asarray([t for tokens in seqs.values() for t in tokens], dtype="int32")
        lengths = [len(tokens) for tokens in seqs.values()]
        self.builtin("kv_state_begin_forward")(self.kv, shape(list(seqs)), shape(lengths))
        embeds = self.lib.vm["embed"](tvm.runtime.tensor(ids), self.lib.params).numpy()
        embeds = embeds.reshape((len(ids), 1, -1) if batch_rows else (1, len(ids), -1))
        extra = []
        if func == "batch_prefill":
            ends = np.cumsum(lengths).astype("int32") - 1
            extra.append(tvm.runtime.tensor(ends))
        logits, _ = self.lib.vm[func](tvm.runtime.tensor(embeds), *extra, self.kv, self.lib.params)
        self.builtin("kv_state_end_forward")(self.kv)
        return logits.numpy()

    def greedy(self, seq_id: int, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
        """Prefill `prompt`, then `steps` greedy decodes: (generated tokens, logits [steps+1, V]).

        Row 0 is the prefill's last-token logits; row i the logits of decode step i.
        """
        rows = [self.run("prefill", seq_id, prompt)]
        tokens: list[int] = []
        for _ in range(steps):
            tokens.append(int(np.argmax(rows[-1])))
            rows.append(self.run("decode", seq_id, tokens[-1:]))
        return tokens, np.stack(rows)


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
