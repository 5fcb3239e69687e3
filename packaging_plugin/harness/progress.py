"""Download progress: live on the terminal in a single process, silent under xdist and with -q.

pytest captures a test's output, so huggingface_hub's bars would appear only in a failure's
captured stderr. In a single process they are written to the real terminal instead, with pytest's
capture suspended for each write. xdist workers' output never reaches the terminal while they
run, so there the bars are off and the summary reports each model's bytes, files and seconds.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest


class _TerminalStream:
    """A file-like object writing to the real stderr past pytest's capture."""

    def __init__(self, capture: Any) -> None:
        self._capture = capture
        self._lock = threading.Lock()  # huggingface_hub updates bars from its download threads
        self._started = False

    def write(self, text: str) -> int:
        with self._lock, self._capture.global_and_fixture_disabled():
            if not self._started:  # leave pytest's progress line alone
                sys.stderr.write("\n")
                self._started = True
            sys.stderr.write(text)
            sys.stderr.flush()
        return len(text)

    def flush(self) -> None:
        pass


# Given a model_id, makes the tqdm class of one download's bars.
ProgressFactory = Callable[[str], type]


def progress_factory(config: pytest.Config) -> ProgressFactory:
    """Makes, per download, the tqdm class huggingface_hub draws its bars with (label: the model).

    Live bars are kept to one per download, the first huggingface_hub makes: 2.x draws three
    (bytes received, first; bytes written; files), and nested bars on a terminal shared with
    pytest's own lines are noise. Older versions pass only the files bar through.
    """
    from tqdm.auto import tqdm

    live = (
        not hasattr(config, "workerinput")
        and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").upper()
        not in {"1", "ON", "YES", "TRUE"}
        and config.get_verbosity() >= 0
        and (capture := config.pluginmanager.get_plugin("capturemanager")) is not None
    )
    if not live:

        class Silent(tqdm):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)  # huggingface_hub 1.x names its bars; tqdm has no name
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

        return lambda label: Silent
    stream = _TerminalStream(capture)

    def for_download(label: str) -> type:
        class Live(tqdm):  # type: ignore[misc, valid-type]
            opened: ClassVar[list[Any]] = []  # this download's bars, closed when it ends

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                description = str(kwargs.get("desc") or "")
                wanted = not Live.opened and not description.startswith("Reconstruct")
                kwargs.pop("name", None)  # huggingface_hub 1.x names its bars; tqdm has no name
                kwargs["file"] = stream
                # tqdm would turn itself off when the stream is not a tty: decide here instead.
                kwargs["disable"] = not wanted
                kwargs["desc"] = f"{label}: {description}" if description else label
                kwargs["position"] = 0
                super().__init__(*args, **kwargs)
                if wanted:
                    Live.opened.append(self)

            # huggingface_hub renames its bars when done; keep the model's name in front.
            def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
                super().set_description(f"{label}: {desc}" if desc else label, refresh)

            def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
                super().set_description_str(f"{label}: {desc}" if desc else label, refresh)

        return Live

    return for_download
