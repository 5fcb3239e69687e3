"""The smoke runs of a package's models on linux: the packaged library generates, repeatably.

The work happens in `smoke_child` (TVM can crash); this side writes the request, runs the child
with a timeout and reads what it found, model by model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging_plugin.child_process import ChildFailed, run_child
from packaging_plugin.errors import PackagingError
from packaging_plugin.temporaries import temp_dir

DEFAULT_PROMPT = "What is the capital of France?"
DEFAULT_TOKENS = 16
DEFAULT_TIMEOUT = 600.0


class SmokeError(PackagingError):
    """The packaged model did not load or generate; the message says how it failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.partial: dict[str, Any] = {}  # for a crashed child: what the models before had


@dataclass(frozen=True)
class SmokeSettings:
    prompt: str = DEFAULT_PROMPT
    tokens: int = DEFAULT_TOKENS
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class SmokeJob:
    model_id: str
    system_lib_prefix: str
    weights_dir: Path


def run_smokes(
    library: Path, jobs: list[SmokeJob], settings: SmokeSettings
) -> dict[str, dict[str, Any] | SmokeError]:
    """Each job's findings (prompt and generated ids, text, prefill seconds, decode tokens/s, peak
    memory), or its SmokeError, from the models of the packaged `library`.

    One child runs them all, so TVM is imported and the library loaded once. If that child
    crashes or times out, the model it was running is blamed and the rest get a child each.
    """
    if not jobs:
        return {}
    found = _run_child(library, jobs, settings, len(jobs))
    if isinstance(found, SmokeError):
        done, failure = found.partial, found
        blamed = next((job for job in jobs if job.model_id not in done), None)
        for job in jobs:
            if job.model_id in done:
                continue
            if job is blamed:
                done[job.model_id] = failure
                continue
            alone = _run_child(library, [job], settings, 1)
            if isinstance(alone, SmokeError):
                done[job.model_id] = alone
            else:
                done[job.model_id] = alone.get(
                    job.model_id, SmokeError("the child reported nothing")
                )
        return done
    return found


def _run_child(
    library: Path, jobs: list[SmokeJob], settings: SmokeSettings, count: int
) -> dict[str, dict[str, Any] | SmokeError] | SmokeError:
    request = {
        "library": str(library),
        "prompt": settings.prompt,
        "tokens": settings.tokens,
        "models": [
            {"model_id": j.model_id, "prefix": j.system_lib_prefix, "weights": str(j.weights_dir)}
            for j in jobs
        ],
    }
    with temp_dir("mlc-smoke-") as work:
        request_file = Path(work) / "request.json"
        results_file = Path(work) / "results.jsonl"
        request_file.write_text(json.dumps(request))
        error: SmokeError | None = None
        try:
            run_child(
                "packaging_plugin.run.smoke_child",
                [str(request_file), str(results_file)],
                cwd=Path(work),
                timeout=settings.timeout * count,
                what="smoke",
                timeout_hint="--package-smoke-timeout, per model",
            )
        except ChildFailed as failure:
            error = SmokeError(str(failure))
        done: dict[str, dict[str, Any] | SmokeError] = {}
        if results_file.is_file():
            for line in results_file.read_text().splitlines():
                entry = json.loads(line)
                if "failure" in entry:
                    done[entry["model_id"]] = SmokeError(entry["failure"])
                else:
                    done[entry["model_id"]] = entry["result"]
    if error is not None:
        error.partial = done
        return error
    return done
