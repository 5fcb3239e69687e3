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
import warnings
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from filelock import FileLock

from packaging_plugin.atomic_files import exchange_paths
from packaging_plugin.cache_records import read_sealed, sha256_file, write_sealed
from packaging_plugin.code_closure import installed_closure_hash
from packaging_plugin.redaction import redact
from packaging_plugin.sources.model_files import (
    CHECKPOINT_PATTERNS,
    terms_files,
    tokenizer_files,
)
from packaging_plugin.sources.weights import DigestRecord, md5_file
from packaging_plugin.temporaries import make_temp_dir

# The converter's entry: the key covers every module of this package it imports.
_CONVERTER = "packaging_plugin.sources.convert"


@dataclass(frozen=True)
class ConvertedModel:
    path: Path
    key: str
    hit: bool  # taken from the cache
    seconds: float  # converting, 0.0 on a hit
    damage: str | None = None  # why the cached conversion was converted again


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


class ConversionRebuiltWarning(UserWarning):
    """A cached conversion did not match its manifest and was converted again."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))  # a cache path may sit under a folder named by a URL


def _is_shard(name: str) -> bool:
    return name.startswith("params_shard_") and name.endswith(".bin")


def _write_manifest(folder: Path) -> None:
    """Record every file of a finished conversion: its size, and a digest of its bytes.

    `files` maps each name to [size, sha256], sha256 None for shards; `shard_md5` holds the
    shards' md5. Versions that read only `files` (shards by size) still read this manifest, and
    a manifest without `shard_md5` (written by one of them) is converted again once.

    Shards are hashed with md5 because that is what DigestRecord keeps, keyed by each file's
    identity (device, inode, size, mtime): checking a warm conversion then reads no shard bytes,
    and the weights check of the fetch reuses the same entries. A changed size or mtime is a
    new identity and forces a re-hash, so a truncation, or a write that changes bytes, is always
    caught; only damage that keeps the size and the mtime (a bit flipped by the disk) passes,
    as it passes the weights check that follows. md5 is enough: the manifest guards against
    accidents, not against someone who could rewrite it too.
    """
    files: dict[str, list[Any]] = {}
    shard_md5: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name == MANIFEST:
            continue
        shard = _is_shard(path.name)
        files[path.name] = [path.stat().st_size, None if shard else sha256_file(path)]
        if shard:
            shard_md5[path.name] = md5_file(path)
    write_sealed(folder / MANIFEST, {"files": files, "shard_md5": shard_md5})


def _read_manifest(folder: Path) -> tuple[dict[str, list[Any]], dict[str, str]] | str:
    """(files, shard md5s) of a conversion's manifest, or why it cannot be used."""
    manifest = read_sealed(folder / MANIFEST)
    if manifest is None:
        return f"{folder} has no valid manifest ({MANIFEST})"
    files, shard_md5 = manifest.get("files"), manifest.get("shard_md5")
    if not isinstance(files, dict) or not all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], int) for e in files.values()
    ):
        return f"{folder / MANIFEST} is not a manifest this version reads"
    unhashed = {name for name, (_, digest) in files.items() if digest is None}
    if not isinstance(shard_md5, dict) or set(shard_md5) != unhashed:
        return f"{folder / MANIFEST} was written by an older version (shards by size alone)"
    return files, shard_md5


def conversion_damage(folder: Path, record: DigestRecord) -> str | None:
    """Why a cached conversion cannot be trusted, or None when it matches its manifest."""
    try:
        return _damage(folder, record)
    except OSError as error:  # a file gone while it was read: not trusted, checked again locked
        return f"{folder} could not be checked: {error}"


def _damage(folder: Path, record: DigestRecord) -> str | None:
    read = _read_manifest(folder)
    if isinstance(read, str):
        return read
    files, shard_md5 = read
    present = {p.name for p in folder.iterdir() if p.name != MANIFEST}
    if extra := sorted(present - set(files)):
        # A stray tokenizer or terms file would be bundled though no conversion wrote it.
        return f"{folder / extra[0]} is not listed in its manifest"
    for name, (size, digest) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing (listed in its manifest)"
        if path.stat().st_size != size:
            return f"{path} has {path.stat().st_size:,} bytes, its manifest says {size:,}"
        if digest is not None and (found := sha256_file(path)) != digest:
            return f"{path} has sha256 {found}, its manifest says {digest}"
    for name, found in record.digests(folder, list(shard_md5)).items():
        if found != shard_md5[name]:
            return f"{folder / name} has md5 {found}, its manifest says {shard_md5[name]}"
    return None


def converted_checkpoint(
    checkpoint: Path, quantization: str, cache_root: Path, record: DigestRecord
) -> ConvertedModel:
    """The MLC model directory of `checkpoint` at `quantization`, converting it when not cached.

    Parallel workers and concurrent runs convert a key once (a file lock); the conversion is
    written to a temporary folder renamed into place, so no one sees half a model. A cached
    conversion that does not match its manifest (a file lost, truncated, edited or added) is
    converted again, with a ConversionRebuiltWarning naming the file and what was wrong.
    """
    from packaging_plugin.sources.convert import (
        convert_checkpoint,  # numpy and safetensors: only when converting
    )

    key = conversion_key(checkpoint, quantization, record)
    folder = cache_root / "converted"
    target = folder / key
    damage = conversion_damage(target, record) if target.is_dir() else None
    if target.is_dir() and damage is None:
        return ConvertedModel(target, key, hit=True, seconds=0.0)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        # Another process may have converted it (or replaced a damaged one) meanwhile.
        damage = conversion_damage(target, record) if target.is_dir() else None
        if target.is_dir() and damage is None:
            return ConvertedModel(target, key, hit=True, seconds=0.0)
        started = time.perf_counter()
        tmp = make_temp_dir(f".{key}.", folder)
        try:
            convert_checkpoint(checkpoint, tmp, quantization)
            _write_manifest(tmp)  # before the folder is put in place: never one unrecorded
            _put_in_place(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if damage is not None:
        warnings.warn(ConversionRebuiltWarning(f"{damage}; converted it again"), stacklevel=2)
    return ConvertedModel(
        target, key, hit=False, seconds=time.perf_counter() - started, damage=damage
    )


def _put_in_place(tmp: Path, target: Path) -> None:
    """Move the finished conversion `tmp` to `target`; a damaged one there ends up at `tmp`.

    A folder cannot be renamed over a full one: swapping the two in one step leaves no moment
    without a conversion at `target` for readers that do not hold the lock.
    """
    if not target.exists():
        os.replace(tmp, target)
    elif not exchange_paths(tmp, target):
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
