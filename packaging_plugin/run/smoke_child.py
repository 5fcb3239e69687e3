"""`python -m packaging_plugin.run.smoke_child REQUEST.json RESULTS.jsonl`: models' smoke runs.

Loads the PACKAGED shared library (every model of the package in it) once, and for each model of
the request opens it through `system_lib("<model_lib>_")`, loads its weights through the tensor
cache, and generates greedily twice from the same prompt, each time with a fresh KV cache. A
model fails when a logit is not finite or the two runs differ. One line per model is appended to
RESULTS.jsonl as soon as it is done (`{"model_id", "result"}` or `{"model_id", "failure"}`), so
when TVM crashes the process, the models before it keep their results and the parent knows which
one to blame. TVM runs only here, in a child.
"""

from __future__ import annotations

import contextlib
import gc
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from packaging_plugin.run.model_runtime import load_shared, new_sequence, open_model


class SmokeFailure(Exception):
    pass


def prompt_ids(prompt: str, tokenizer: Any, vocab_size: int) -> list[int]:
    """The prompt's tokens; without a tokenizer, its UTF-8 bytes folded into the vocabulary (a
    fixed function of the prompt, so runs stay comparable)."""
    if tokenizer is not None:
        return list(tokenizer.encode(prompt).ids) or [0]
    return [byte % vocab_size for byte in prompt.encode()] or [0]


def load_tokenizer(weights_dir: Path) -> Any:
    """The model's tokenizer.json through the `tokenizers` library, when both are there."""
    path = weights_dir / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    return Tokenizer.from_file(str(path))


def reset_peak_rss() -> None:
    """Start a new high-water mark of this process's memory (Linux: clear_refs 5), so each
    model's peak is its own; the previous model's weights are freed first."""
    gc.collect()
    with contextlib.suppress(OSError):  # else the peak covers the models before this one too
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    """The process's peak resident memory since the last reset: TVM, the library, the weights."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def generate(request: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    weights = Path(model["weights"])
    chat = json.loads((weights / "mlc-chat-config.json").read_text())
    lib = open_model(model["prefix"], weights)
    vocab = int(chat["model_config"]["vocab_size"])
    tokenizer = load_tokenizer(weights)
    prompt = prompt_ids(request["prompt"], tokenizer, vocab)
    steps = int(request["tokens"])
    # Past the context window the cache has no room: the prompt keeps its last tokens. A prompt
    # longer than a prefill chunk is prefilled chunk by chunk, as the runtime does.
    context = int(lib.metadata["context_window_size"])
    if context > 0 and len(prompt) + steps + 1 > context:
        prompt = prompt[-max(1, context - steps - 1) :]
    total = len(prompt) + steps + 1
    runs = []
    for _ in range(2):
        session = new_sequence(lib, chat, total)
        started = time.perf_counter()
        first = session.prefill(0, prompt)
        prefilled = time.perf_counter()
        tokens, rows = [], [first]
        for _ in range(steps):
            tokens.append(int(np.argmax(rows[-1])))
            rows.append(session.run("decode", 0, tokens[-1:]))
        runs.append((tokens, np.stack(rows), prefilled - started, time.perf_counter() - prefilled))
    (tokens, logits, prefill_s, decode_s), (again, _, _, _) = runs
    if not np.isfinite(logits).all():
        bad = int(np.argmax(~np.isfinite(logits).all(axis=-1)))
        where = "after the prompt" if bad == 0 else f"at decode step {bad}"
        raise SmokeFailure(f"logits are not finite {where}")
    if tokens != again:
        raise SmokeFailure(f"a second run generated other tokens: {tokens} then {again}")
    result = {
        "prompt": request["prompt"],
        "prompt_ids": prompt,
        "generated_ids": tokens,
        "text": tokenizer.decode(tokens) if tokenizer is not None else None,
        "prefill_seconds": round(prefill_s, 4),
        "decode_tokens_per_s": round(steps / decode_s, 1) if decode_s > 0 else None,
        "peak_rss_bytes": peak_rss_bytes(),
    }
    return result


def main(argv: list[str]) -> int:
    request_file, results_file = argv
    request = json.loads(Path(request_file).read_text())
    load_shared(Path(request["library"]))
    for model in request["models"]:
        reset_peak_rss()
        try:
            line = {"model_id": model["model_id"], "result": generate(request, model)}
        except SmokeFailure as failure:
            line = {"model_id": model["model_id"], "failure": str(failure)}
        with Path(results_file).open("a") as results:
            results.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
