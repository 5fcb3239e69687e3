"""`HF://` repositories through huggingface_hub, with its cache, retries and messages that say what
to do.

huggingface_hub reads HF_ENDPOINT, HF_TOKEN, HF_HOME and HF_HUB_OFFLINE itself, so its cache is
shared with the user's other tools. Within one file it resumes a dropped connection where it
stopped (a Range request). A failure it gives up on, or a server error, is retried here with
backoff: files already complete are in the cache by then, so a retry fetches only the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.errors import PackagingError
from packaging_plugin.redaction import redact

RETRY_DELAYS = (1.0, 4.0, 16.0)  # seconds before the 2nd, 3rd and 4th attempt
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(PackagingError):
    """The repository could not be downloaded; the message says what to do."""

    def __init__(self, message: str) -> None:
        # The errors it is made from quote the URL they failed on, credentials and all.
        super().__init__(redact(message))


@dataclass(frozen=True)
class Download:
    path: Path  # the snapshot folder
    files: int  # files transferred by this call (0 when all came from the cache)
    bytes: int
    seconds: float


def _repo_cache(repo: str) -> Path:
    from huggingface_hub import constants

    # huggingface_hub's cache layout (stable across its majors): models--<org>--<name>/blobs/.
    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")) / "blobs"


def _blobs(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {
        p.name: p.stat().st_size
        for p in folder.iterdir()
        if p.is_file() and not p.name.endswith(".incomplete")
    }


def is_transient(error: BaseException) -> bool:
    """Whether trying again may help: server errors, timeouts and connections dropped during a
    transfer. Missing repositories, revisions and files are not, nor is a hub that cannot be
    reached at all (huggingface_hub already waited for it), nor a local disk error."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(error, LocalEntryNotFoundError):
        # huggingface_hub reports any failure of its metadata requests this way; an overloaded
        # hub (5xx, 429) is worth waiting for, a refused connection is not.
        cause = error.__cause__
        return isinstance(cause, HfHubHTTPError) and _status(cause) in _TRANSIENT_STATUS
    if isinstance(error, EntryNotFoundError | RepositoryNotFoundError | RevisionNotFoundError):
        return False
    if isinstance(error, HfHubHTTPError):
        return _status(error) in _TRANSIENT_STATUS
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    # The size check huggingface_hub makes after a transfer that ended early.
    if isinstance(error, OSError) and "Consistency check failed" in str(error):
        return True
    # httpx (huggingface_hub 1.x and 2.x) raises TransportError subclasses, requests (0.x)
    # ConnectionError and Timeout from requests.exceptions; neither is a builtin error here.
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "Timeout"}) and not (
        names & {"ProxyError", "UnsupportedProtocol", "InvalidURL", "LocalProtocolError"}
    )


def _status(error: BaseException) -> int | None:
    return getattr(getattr(error, "response", None), "status_code", None)


def _close_bars(progress_class: Any) -> None:
    # huggingface_hub 2.x leaves its snapshot bars open (closed whenever collected): close ours
    # now, so their last line is drawn at the end of this download.
    for bar in getattr(progress_class, "opened", ()):
        bar.close()


def redownload(repo: str, revision: str | None, filename: str) -> None:
    """Fetch one file of `repo` again, replacing what huggingface_hub's cache holds."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(repo, filename, revision=revision, force_download=True)
    except Exception as error:
        raise DownloadError(_message(repo, revision, error)) from None


def download(
    repo: str,
    revision: str | None,
    patterns: Sequence[str],
    *,
    offline: bool = False,
    progress: Callable[[], type] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Download:
    """Download the files of `repo` matching `patterns` into huggingface_hub's cache.

    `progress` makes the tqdm class for this download's bars (None: huggingface_hub's default).
    """
    # Imported here: huggingface_hub is slow to import and most runs never download.
    from huggingface_hub import snapshot_download

    blobs = _repo_cache(repo)
    before = _blobs(blobs)
    started = time.perf_counter()
    kwargs: dict[str, Any] = {"revision": revision, "allow_patterns": list(patterns)}
    for attempt in range(len(RETRY_DELAYS) + 1):
        bars = progress() if progress is not None else None
        if bars is not None:
            kwargs["tqdm_class"] = bars
        try:
            folder = snapshot_download(repo, local_files_only=offline, **kwargs)
            break
        except Exception as error:
            if attempt == len(RETRY_DELAYS) or not is_transient(error):
                raise DownloadError(_message(repo, revision, error)) from None
            sleep(RETRY_DELAYS[attempt])
        finally:
            _close_bars(bars)
    after = _blobs(blobs)
    new = {name: size for name, size in after.items() if name not in before}
    return Download(Path(folder), len(new), sum(new.values()), time.perf_counter() - started)


def _message(repo: str, revision: str | None, error: BaseException) -> str:
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # GatedRepoError is a RepositoryNotFoundError: test it first.
    if isinstance(error, GatedRepoError):
        return f"HF://{repo} is gated: accept its terms and set HF_TOKEN"
    if isinstance(error, RepositoryNotFoundError):
        return f"HF://{repo} was not found (or is private: set HF_TOKEN)"
    if isinstance(error, RevisionNotFoundError):
        return f"HF://{repo} has no revision {revision!r}"
    if isinstance(error, LocalEntryNotFoundError):
        from huggingface_hub import constants

        # The endpoint tried says which hub (HF_ENDPOINT) was unreachable; any credentials in it
        # are removed before the message is shown.
        return redact(
            f"HF://{repo} is not in the local Hugging Face cache and could not be downloaded "
            f"from {constants.ENDPOINT} (offline or unreachable); run once with network access, "
            "then HF_HUB_OFFLINE=1 packages from the cache"
        )
    attempts = len(RETRY_DELAYS) + 1
    if isinstance(error, HfHubHTTPError):
        detail = str(error).splitlines()[0]
    else:
        detail = f"{type(error).__name__}: {error}"
    tried = f" after {attempts} attempts" if is_transient(error) else ""
    return redact(f"downloading HF://{repo} failed{tried}: {detail}")
