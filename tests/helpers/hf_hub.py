"""A Hugging Face hub on 127.0.0.1 serving repositories made in the test, with a request log.

It answers what huggingface_hub's `snapshot_download` asks (notes: hf-hub-offline.md): the
revision and tree APIs, and HEAD / GET of `/{repo}/resolve/{revision}/{path}` with the
`X-Repo-Commit` and `ETag` headers, plus the `X-Error-Code` headers of a missing or gated
repository, revision or file. Start it with `serve()`; point `HF_ENDPOINT` at `url`.

A GET of a file honours `Range: bytes=START-[END]` (206 and `Content-Range`), which is how
huggingface_hub resumes a download whose connection broke. Faults can be injected per file
(its path inside the repository): `drop_after` cuts the body of the first plain GET short and
closes the connection; `fail_times` answers the next GETs with 503.

A file may be `LazyFile(size, byte)` instead of bytes: a declared size whose bytes (all `byte`,
0 by default) are made as they are sent, in chunks, so a repository of real-size weight shards
(gigabytes) is served without holding them in memory; `lazy_md5(size, byte)` is the md5 its
index must list.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LazyFile:
    """A file of `size` bytes, each `byte`, generated in chunks as it is sent."""

    size: int
    byte: int = 0

    def chunks(self, first: int = 0, last: int | None = None) -> Iterator[bytes]:
        """Bytes `first` .. `last` (inclusive; default: to the end), at most a chunk at a time."""
        left = (self.size - 1 if last is None else last) - first + 1
        whole = bytes([self.byte]) * min(left, _CHUNK) if left > 0 else b""
        while left > 0:
            piece = whole if left >= len(whole) else whole[:left]
            left -= len(piece)
            yield piece


@cache
def lazy_md5(size: int, byte: int = 0) -> str:
    """The md5 of `LazyFile(size, byte)`, computed by streaming the bytes the hub sends (cached:
    real-size shards of one model mostly share a few sizes)."""
    digest = hashlib.md5()
    for piece in LazyFile(size, byte).chunks():
        digest.update(piece)
    return digest.hexdigest()


FileData = bytes | LazyFile


def _size(data: FileData) -> int:
    return data.size if isinstance(data, LazyFile) else len(data)


def _oid(data: FileData) -> str:
    """The git-style id the tree API and ETag give. A lazy file's names its size and byte, so
    two lazy files have the same id exactly when they have the same bytes, as on the real hub
    (huggingface_hub then keeps, and downloads, one blob for both)."""
    if isinstance(data, LazyFile):
        return hashlib.sha1(f"lazy:{data.size}:{data.byte}".encode()).hexdigest()
    return hashlib.sha1(data).hexdigest()


@dataclass
class Repo:
    files: dict[str, FileData]
    commit: str = ""
    gated: bool = False

    def __post_init__(self) -> None:
        digest = hashlib.sha1(json.dumps(sorted(self.files)).encode())
        for name in sorted(self.files):
            data = self.files[name]
            digest.update(_oid(data).encode() if isinstance(data, LazyFile) else data)
        self.commit = self.commit or digest.hexdigest()

    @classmethod
    def from_folder(cls, folder: Path, *, gated: bool = False) -> Repo:
        """A repository holding every file of `folder`."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        return cls({p.relative_to(folder).as_posix(): p.read_bytes() for p in files}, gated=gated)


@dataclass
class Hub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    # (file path inside the repository, `Range` header) of every GET of a file that sent one
    ranges: list[tuple[str, str]] = field(default_factory=list)
    # file -> bytes of body sent before the connection is dropped; used up by the first plain GET
    drop_after: dict[str, int] = field(default_factory=dict)
    # file -> how many more GETs of it answer 503
    fail_times: dict[str, int] = field(default_factory=dict)
    url: str = ""
    # the handler threads run concurrently (snapshot_download fetches files in parallel), and
    # consuming a fault is a read-modify-write of the dicts above
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def file_requests(self) -> list[str]:
        """Paths of the files whose bytes were asked for (GET of resolve URLs)."""
        return [
            path.split("/resolve/", 1)[1].split("/", 1)[1]
            for method, path in self.requests
            if method == "GET" and "/resolve/" in path
        ]


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def _byte_range(header: str, total: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte of `total` that `header` asks for; None if unsatisfiable.

    One range only (`bytes=START-`, `bytes=START-END`, `bytes=-SUFFIX`): huggingface_hub sends
    nothing else, and a header we do not understand is unsatisfiable rather than ignored, so a
    test sees it instead of silently getting the whole file.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    start, end = match.groups()
    if not start:  # the last SUFFIX bytes
        first, last = max(total - int(end), 0), total - 1
    else:
        first, last = int(start), min(int(end), total - 1) if end else total - 1
    if first > last or first >= total:
        return None
    return first, last


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _send(
            self, status: int, body: bytes, headers: dict[str, str], head: bool = False
        ) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _error(self, status: int, code: str, head: bool) -> None:
            body = json.dumps({"error": code}).encode()
            headers = {"X-Error-Code": code, "Content-Type": "application/json"}
            self._send(status, body, headers, head)

        def _answer(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append((self.command, path))
            if path.startswith("/api/models/"):
                rest = path.removeprefix("/api/models/")
                repo_id, _, tail = rest.partition("/revision/")
                kind = "revision"
                if not tail:
                    repo_id, _, tail = rest.partition("/tree/")
                    kind = "tree"
                repo = self._repo(repo_id, head)
                if repo is None:
                    return
                revision = tail.split("/", 1)[0]
                if revision not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", head)
                if kind == "revision":
                    info = {
                        "id": repo_id,
                        "sha": repo.commit,
                        "siblings": [{"rfilename": name} for name in sorted(repo.files)],
                    }
                else:
                    info = [
                        {
                            "type": "file",
                            "path": name,
                            "size": _size(data),
                            "oid": _oid(data),
                        }
                        for name, data in sorted(repo.files.items())
                    ]
                body = json.dumps(info).encode()
                return self._send(200, body, {"Content-Type": "application/json"}, head)
            if "/resolve/" in path:
                repo_id, _, tail = path.lstrip("/").partition("/resolve/")
                repo = self._repo(repo_id, head)
                if repo is None:
                    return
                revision, _, name = tail.partition("/")
                if revision not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", head)
                if name not in repo.files:
                    return self._error(404, "EntryNotFound", head)
                return self._file(repo, name, head)
            self._error(404, "RepoNotFound", head)

        def _file(self, repo: Repo, name: str, head: bool) -> None:
            data = repo.files[name]
            headers = {
                "X-Repo-Commit": repo.commit,
                "ETag": f'"{_oid(data)}"',
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }
            if head:  # the metadata call: full size, no faults, Range not applied
                return self._send_file(200, data, headers, 0, _size(data) - 1, head)
            range_header = self.headers.get("Range")
            if range_header is not None:
                hub.ranges.append((name, range_header))
            with hub.lock:
                failing = hub.fail_times.get(name, 0) > 0
                if failing:
                    hub.fail_times[name] -= 1
                drop = None
                if not failing and range_header is None:
                    drop = hub.drop_after.pop(name, None)
            if failing:
                # no X-Error-Code: a bare server-side failure, not a hub answer about the repo
                body = json.dumps({"error": "Service Unavailable"}).encode()
                return self._send(503, body, {"Content-Type": "application/json"})
            size = _size(data)
            if drop is not None:
                return self._drop(data, headers, drop)
            if range_header is None:
                return self._send_file(200, data, headers, 0, size - 1)
            span = _byte_range(range_header, size)
            if span is None:
                headers = {"Content-Range": f"bytes */{size}"}
                return self._send(416, b"", headers)
            first, last = span
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            self._send_file(206, data, headers, first, last)

        def _send_file(
            self,
            status: int,
            data: FileData,
            headers: dict[str, str],
            first: int,
            last: int,
            head: bool = False,
        ) -> None:
            """Bytes `first` .. `last` of a file; a lazy file's are streamed chunk by chunk."""
            if not isinstance(data, LazyFile):
                return self._send(status, data[first : last + 1], headers, head)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(last - first + 1))
            self.end_headers()
            if not head:
                for piece in data.chunks(first, last):
                    self.wfile.write(piece)

        def _drop(self, data: FileData, headers: dict[str, str], keep: int) -> None:
            """Promise all of `data` but send its first `keep` bytes, then hang up.

            The client then meets a peer that closed before the complete body, as over a broken
            network. `close_connection` keeps the handler from waiting on this socket for another
            request (which it would if it spoke HTTP/1.1 keep-alive), and the shutdown ends the
            stream here and now rather than whenever the server thread gets to closing it.
            """
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(_size(data)))
            self.end_headers()
            if isinstance(data, LazyFile):
                for piece in data.chunks(0, min(keep, data.size) - 1):
                    self.wfile.write(piece)
            else:
                self.wfile.write(data[:keep])
            self.wfile.flush()
            self.close_connection = True
            with suppress(OSError):  # the client may have gone already
                self.connection.shutdown(socket.SHUT_RDWR)

        def _repo(self, repo_id: str, head: bool) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", head)
            elif repo.gated:
                self._error(403, "GatedRepo", head)
                return None
            return repo

    return Handler


@contextmanager
def serve(hub: Hub) -> Iterator[Hub]:
    """Run `hub` on 127.0.0.1 (a free port) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
