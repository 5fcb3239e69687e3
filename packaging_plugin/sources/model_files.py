"""Which files of a model directory matter, and to whom.

One list for the fetch (what to download), the converter (what to carry over from a checkpoint)
and the bundle (what an app ships).
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

CHAT_CONFIG = "mlc-chat-config.json"
HF_CONFIG = "config.json"
# MLC's runtime prefers tokenizer.json, then tokenizer.model, then vocab.json + merges.txt
# (+ added_tokens.json). The rest help other tools read the directory.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
# The model's terms travel with its weights: licences, notices, use policies, model cards.
TERMS_PATTERNS = ("LICENSE*", "LICENCE*", "NOTICE*", "README*", "USE_POLICY*")
MLC_WEIGHT_PATTERNS = ("tensor-cache.json", "ndarray-cache.json", "params_shard_*.bin")
SAFETENSORS_INDEX = "model.safetensors.index.json"
# What the converter reads from a Hugging Face checkpoint besides the tokenizer: the configs, and
# the weights (those the index lists, else every *.safetensors).
CHECKPOINT_CONFIGS = (HF_CONFIG, "generation_config.json", SAFETENSORS_INDEX)
CHECKPOINT_PATTERNS = (*CHECKPOINT_CONFIGS, "*.safetensors")


def terms_files(model_dir: Path) -> list[str]:
    """Names of the licence, notice and readme files at the top of `model_dir`."""
    return sorted(
        path.name
        for path in model_dir.iterdir()
        if path.is_file() and any(fnmatch(path.name.upper(), p) for p in TERMS_PATTERNS)
    )


def tokenizer_files(model_dir: Path) -> list[str]:
    return [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
