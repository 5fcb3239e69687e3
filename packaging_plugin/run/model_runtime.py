"""Run a linux model library as the MLC runtime does: open it, load weights, drive the KV cache.

Used by the smoke step's child process on the packaged shared library, and by the tests on single
libraries. A system library registers itself when loaded (its static constructors); the runtime
then opens it by prefix with `tvm.runtime.system_lib(prefix)`. Weights come from the model
directory's tensor cache through the runtime's own loader, and the paged KV cache is driven with
the builtins the runtime calls around each step (cpp/serve/model.cc).
"""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_KDL_CPU = 1


def load_shared(so: Path) -> None:
    """Load a linked model library into this process; its constructors register its prefixes.

    RTLD_LOCAL: registration passes function pointers to the runtime, so nothing needs the
    library's symbols by name, and its weak `__extendhfsf2` / `__truncsfhf2` must not stand in
    front of the definitions of libraries loaded after it (a test process loads dozens).
    """
    import tvm  # noqa: F401  (the library's undefined TVM FFI symbols resolve against it)

    ctypes.CDLL(str(so), ctypes.RTLD_LOCAL)


@dataclass
class LoadedLibrary:
    vm: Any  # relax.VirtualMachine
    params: Any  # the packed parameter array, in metadata order
    metadata: dict[str, Any]


def open_model(prefix: str, weights_dir: Path) -> LoadedLibrary:
    """The loaded system library `prefix` on the CPU, with `weights_dir`'s weights by name."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.system_lib(prefix), tvm.cpu())
    metadata = json.loads(str(vm["_metadata"]()))
    # The tensor cache is process-global in the runtime: load, then take our params out of it.
    tvm.get_global_func("vm.builtin.tensor_cache.load")(str(weights_dir), _KDL_CPU, 0)
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

    def prefill(self, seq_id: int, prompt: list[int]) -> np.ndarray:
        """Prefill `prompt` in chunks of at most the library's `prefill_chunk_size`, as the MLC
        runtime does with a long prompt: the logits after its last token."""
        chunk = int(self.lib.metadata["prefill_chunk_size"])
        if not prompt:
            raise ValueError("an empty prompt")
        for start in range(0, len(prompt), chunk):
            logits = self.run("prefill", seq_id, prompt[start : start + chunk])
        return logits

    def greedy(self, seq_id: int, prompt: list[int], steps: int) -> tuple[list[int], np.ndarray]:
        """Prefill `prompt`, then `steps` greedy decodes: (generated tokens, logits [steps+1, V]).

        Row 0 is the prefill's last-token logits; row i the logits of decode step i.
        """
        rows = [self.prefill(seq_id, prompt)]
        tokens: list[int] = []
        for _ in range(steps):
            tokens.append(int(np.argmax(rows[-1])))
            rows.append(self.run("decode", seq_id, tokens[-1:]))
        return tokens, np.stack(rows)


def new_sequence(lib: LoadedLibrary, chat: dict[str, Any], total: int) -> KVSession:
    """A KV cache holding sequence 0, set up as the runtime sets it up for this model's config."""
    window = chat.get("sliding_window_size", -1)
    session = KVSession(lib, max_total_seq_len=total, sliding_window=window not in (-1, None))
    session.add(0)
    if window not in (-1, None):
        session.enable_sliding_window(0, window, chat.get("attention_sink_size", 0))
    return session
