"""Records that make cache entries checkable: a digest written with each entry, checked on use.

A cache entry can be damaged after it was written whole: a disk error, a full disk during a
copy, a user's stray edit, a truncation by a tool. Taken as a hit, it would be shipped. Each
entry therefore has a record, written before the entry is put in place, that a reader checks
before trusting it. A record is itself sealed (its own content's sha256 is part of it), so a
damaged record is seen as damaged rather than read as a different truth.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from packaging_plugin.atomic_files import write_atomically

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _seal_of(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def write_sealed(path: Path, content: dict[str, Any]) -> None:
    """Write `content` to `path` (atomically) with the seal of its content."""
    write_atomically(path, json.dumps({"content": content, "seal": _seal_of(content)}) + "\n")


def read_sealed(path: Path) -> dict[str, Any] | None:
    """The content of a sealed record, or None when it is missing, unreadable or damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        content, seal = data["content"], data["seal"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(content, dict) or _seal_of(content) != seal:
        return None
    return content


def file_record_path(path: Path) -> Path:
    """Where the record of a cached file lives: beside it."""
    return path.with_name(path.name + ".sha256.json")


def record_file(path: Path, written: Path | None = None) -> None:
    """Record the size and sha256 of `written` (default `path`) as the record of `path`: a
    writer records its temporary before renaming it to `path`."""
    source = written or path
    content = {"file": path.name, "bytes": source.stat().st_size, "sha256": sha256_file(source)}
    write_sealed(file_record_path(path), content)


def file_damage(path: Path) -> str | None:
    """Why the cached file `path` cannot be trusted, or None when it matches its record."""
    record = read_sealed(file_record_path(path))
    if record is None:
        return f"{path} has no valid record of its digest ({file_record_path(path).name})"
    size = path.stat().st_size
    if size != record["bytes"]:
        return f"{path} has {size:,} bytes, its record says {record['bytes']:,} (truncated?)"
    found = sha256_file(path)
    if found != record["sha256"]:
        return f"{path} has sha256 {found}, its record says {record['sha256']}"
    return None
