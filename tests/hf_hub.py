"""A Hugging Face hub on 127.0.0.1 serving repositories made in the test, with a request log.

It answers what huggingface_hub's `snapshot_download` asks (notes: hf-hub-offline.md): the
revision and tree APIs, and HEAD / GET of `/{repo}/resolve/{revision}/{path}` with the
`X-Repo-Commit` and `ETag` headers, plus the `X-Error-Code` headers of a missing or gated
repository, revision or file. Start it with `serve()`; point `HF_ENDPOINT` at `url`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = ""
    gated: bool = False

    def __post_init__(self) -> None:
        digest = hashlib.sha1(json.dumps(sorted(self.files)).encode())
        for name in sorted(self.files):
            digest.update(self.files[name])
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
    url: str = ""

    def file_requests(self) -> list[str]:
        """Paths of the files whose bytes were asked for (GET of resolve URLs)."""
        return [
            path.split("/resolve/", 1)[1].split("/", 1)[1]
            for method, path in self.requests
            if method == "GET" and "/resolve/" in path
        ]


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
                            "size": len(data),
                            "oid": hashlib.sha1(data).hexdigest(),
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
                data = repo.files[name]
                headers = {
                    "X-Repo-Commit": repo.commit,
                    "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                }
                return self._send(200, data, headers, head)
            self._error(404, "RepoNotFound", head)

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
