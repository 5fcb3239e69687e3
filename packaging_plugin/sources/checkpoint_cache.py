"""Hugging Face checkpoints converted on the fly, cached by content.

A checkpoint entry (`config.json` + safetensors and a `"quantization"` key) is converted into an
MLC model directory under `<cache>/converted/<key>/`. The key hashes what the conversion reads
(the digests of the checkpoint's files, the quantization and the converter's own code), so an
edited checkpoint, a new quantization or a changed converter converts again, and an unchanged
one never does. File digests come from the DigestRecord, so a warm run reads no checkpoint bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from filelock import FileLock

from packaging_plugin.cache_records import read_sealed, sha256_file, write_sealed
from packaging_plugin.code_closure import installed_closure_hash
from packaging_plugin.sources.model_files import (
    CHECKPOINT_PATTERNS,
    terms_files,
    tokenizer_files,
)
from packaging_plugin.sources.weights import DigestRecord
from packaging_plugin.temporaries import make_temp_dir

# The converter's entry: the key covers every module of this package it imports.
_CONVERTER = "packaging_plugin.sources.convert"


@dataclass(frozen=True)
class ConvertedModel:
    path: Path
    key: str
    hit: bool  # taken from the cache
    seconds: float  # converting, 0.0 on a hit


def checkpoint_inputs(checkpoint: Path) -> list[str]:
    """The files of `checkpoint` a conversion reads (and whose contents make the key)."""
    names = [
        path.name
        for path in sorted(checkpoint.iterdir())
        if path.is_file() and any(fnmatch(path.name, p) for p in CHECKPOINT_PATTERNS)
    ]
    return names + tokenizer_files(checkpoint) + terms_files(checkpoint)


def conversion_key(checkpoint: Path, quantization: str, record: DigestRecord) -> str:
    digests = record.digests(checkpoint, checkpoint_inputs(checkpoint))
    payload = {
        "files": digests,
        "quantization": quantization,
        "converter": installed_closure_hash((_CONVERTER,)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


MANIFEST = ".mlc-package-converted.json"
# Shards are checked against tensor-cache.json's md5s whenever the weights are used (fetch), so
# the manifest holds only their sizes; every other file is small and is hashed on each use.
_SIZE_ONLY = ("params_shard_", ".bin")


def _write_manifest(folder: Path) -> None:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            shard = path.name.startswith(_SIZE_ONLY[0]) and path.name.endswith(_SIZE_ONLY[1])
            files[path.name] = [path.stat().st_size, None if shard else sha256_file(path)]
    write_sealed(folder / MANIFEST, {"files": files})


def conversion_damage(folder: Path) -> str | None:
    """Why a cached conversion cannot be trusted, or None when it matches its manifest."""
    manifest = read_sealed(folder / MANIFEST)
    if manifest is None:
        return f"{folder} has no valid manifest ({MANIFEST})"
    for name, (size, digest) in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing (listed in its manifest)"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size:,} bytes, its manifest says {size:,}"
        if digest is not None and sha256_file(path) != digest:
            return f"{path} differs from its manifest (sha256)"
    return None


def converted_checkpoint(
    checkpoint: Path, quantization: str, cache_root: Path, record: DigestRecord
) -> ConvertedModel:
    """The MLC model directory of `checkpoint` at `quantization`, converting it when not cached.

    Parallel workers and concurrent runs convert a key once (a file lock); the conversion is
    written to a temporary folder renamed into place, so no one sees half a model. A cached
    conversion that does not match its manifest (a file lost, truncated or edited) is converted
    again.
    """
    from packaging_plugin.sources.convert import (
        convert_checkpoint,  # numpy and safetensors: only when converting
    )

    key = conversion_key(checkpoint, quantization, record)
    folder = cache_root / "converted"
    target = folder / key
    if target.is_dir() and conversion_damage(target) is None:
        return ConvertedModel(target, key, hit=True, seconds=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_dir() and conversion_damage(target) is None:
            return ConvertedModel(target, key, hit=True, seconds=0.0)
        started = time.perf_counter()
        tmp = make_temp_dir(f".{key}.", folder)
        try:
            convert_checkpoint(checkpoint, tmp, quantization)
            _write_manifest(tmp)
            shutil.rmtree(target, ignore_errors=True)  # a damaged or unfinished conversion
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ConvertedModel(target, key, hit=False, seconds=time.perf_counter() - started)
