"""A model directory's weights: the tensor-cache.json index, and checking shards against it.

Every shard's size and md5 are checked after a download and before bundling, because a truncated
or corrupted shard otherwise shows up only on the phone. Hashing gigabytes on every run would
make warm runs slow, so each file found good is recorded with its identity on disk (device,
inode, size, modification time): a warm run re-hashes only files that changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.atomic_files import write_atomically
from packaging_plugin.errors import PackagingError

TENSOR_CACHE = "tensor-cache.json"
LEGACY_TENSOR_CACHE = "ndarray-cache.json"  # the name before 2025-09; current runtimes want the new
_CHUNK = 1 << 20


class WeightsError(PackagingError):
    """The weights are missing, malformed or do not match their index; the message says which.

    `shard` names the shard (its dataPath) when one file is at fault, so it can be fetched again.
    """

    def __init__(self, message: str, shard: str | None = None) -> None:
        super().__init__(message)
        self.shard = shard


def md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tensor_cache_path(model_dir: Path) -> Path:
    """The weight index of a model directory, under its current or legacy name."""
    for name in (TENSOR_CACHE, LEGACY_TENSOR_CACHE):
        if (model_dir / name).is_file():
            return model_dir / name
    raise WeightsError(
        f"{model_dir} has no {TENSOR_CACHE} (nor the older {LEGACY_TENSOR_CACHE}): the weights "
        "are not an MLC conversion"
    )


def read_tensor_cache(path: Path) -> dict[str, Any]:
    """The parsed index; raises WeightsError naming the file when it is not a usable index."""
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path} is not valid JSON: {error}") from None
    records = index.get("records") if isinstance(index, dict) else None
    if not isinstance(records, list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("dataPath"), str)
        and isinstance(r.get("nbytes"), int)
        for r in records
    ):
        raise WeightsError(
            f'{path}: expected an object whose "records" list gives each shard\'s dataPath and '
            "nbytes"
        )
    seen: set[str] = set()
    for record in records:
        name = record["dataPath"]
        # Shards live inside the model folder: bundling must never write outside it, nor write a
        # file twice (the second write would go through a link into the first one's source).
        if Path(name).is_absolute() or ".." in Path(name).parts or not name:
            raise WeightsError(f"{path}: dataPath {name!r} is not a file name inside the folder")
        if name in seen:
            raise WeightsError(f"{path}: dataPath {name!r} is listed twice")
        seen.add(name)
    return index


@dataclass(frozen=True)
class _Identity:
    """What says a file is unchanged without reading it."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _Identity:
        stat = path.stat()  # follows symlinks: huggingface_hub's snapshots link to blobs
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def as_list(self) -> list[int]:
        return [self.device, self.inode, self.size, self.mtime_ns]


class DigestRecord:
    """md5 digests of files, kept with each file's identity so unchanged files are not re-read.

    One small JSON file per folder of the cache's `verified/` directory. Parallel workers may
    write the same record: each write is atomic, and a lost update only costs a re-hash.
    """

    def __init__(self, root: Path) -> None:
        self.folder = root / "verified"
        self.hashed_bytes = 0
        self.hashed_files = 0

    def _record_path(self, scope: Path) -> Path:
        name = hashlib.sha256(str(scope.resolve()).encode()).hexdigest()[:32]
        return self.folder / f"{name}.json"

    def _load(self, scope: Path) -> dict[str, list[Any]]:
        try:
            data = json.loads(self._record_path(scope).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, scope: Path, data: dict[str, list[Any]]) -> None:
        """Best effort: a cache that cannot be written (read-only in CI) costs re-hashing only."""
        with contextlib.suppress(OSError):
            write_atomically(self._record_path(scope), json.dumps(data))

    def digests(self, scope: Path, names: Iterable[str]) -> dict[str, str]:
        """md5 of each named file of folder `scope`, reading only files changed since recorded."""
        known = self._load(scope)
        found: dict[str, str] = {}
        changed = False
        for name in names:
            path = scope / name
            identity = _Identity.of(path).as_list()
            entry = known.get(name)
            if entry is not None and entry[:4] == identity:
                found[name] = entry[4]
                continue
            found[name] = md5_file(path)
            self.hashed_bytes += identity[2]
            self.hashed_files += 1
            known[name] = [*identity, found[name]]
            changed = True
        if changed:
            self._save(scope, known)
        return found


def verify_weights(model_dir: Path, record: DigestRecord | None = None) -> int:
    """Check every shard listed in the index: present, the listed size, the listed md5.

    Returns the total shard bytes. With `record`, files unchanged since they were last found
    good are not read again. Raises WeightsError naming the file, what was expected and found.
    """
    index_path = tensor_cache_path(model_dir)
    index = read_tensor_cache(index_path)
    total = 0
    to_hash: list[str] = []
    for shard in index["records"]:
        name = shard["dataPath"]
        path = model_dir / name
        if not path.is_file():
            raise WeightsError(f"{path} is missing (listed in {index_path.name})", name)
        size = path.stat().st_size
        if size != shard["nbytes"]:
            raise WeightsError(
                f"{path} has {size:,} bytes, {index_path.name} says {shard['nbytes']:,} "
                "(truncated or replaced)",
                name,
            )
        total += size
        if shard.get("md5sum"):
            to_hash.append(name)
    expected = {r["dataPath"]: r.get("md5sum") for r in index["records"]}
    if record is not None:
        found = record.digests(model_dir, to_hash)
    else:
        found = {name: md5_file(model_dir / name) for name in to_hash}
    for name in to_hash:
        # A bad digest stays recorded: it is still compared with the index on the next run, and
        # a replaced file has a new identity, so it is read again.
        if found[name] != expected[name]:
            raise WeightsError(
                f"checksum mismatch: {model_dir / name} has md5 {found[name]}, "
                f"{index_path.name} says {expected[name]}",
                name,
            )
    return total
