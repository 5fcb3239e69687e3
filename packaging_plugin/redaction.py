"""Secrets never leave a run: credentials are removed from every message, report and JUnit file.

A download error quotes its URL, and a user's `HF_ENDPOINT` or store URL may carry
`user:token@`; tracebacks and captured output may quote tokens. Everything the run writes for
people or CI passes through `redact` first, which removes:
- the userinfo of any URL (`https://user:secret@host` -> `https://***@host`);
- anything shaped like a Hugging Face token (`hf_...`) or an AWS access key id (`AKIA...`);
- the values of this process's secret environment variables (tokens, keys, passwords), wherever
  they appear.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_TOKEN_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_SECRET_NAMES = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|ACCESS_KEY", re.I)
_SHORTEST_SECRET = 8  # shorter values ("1", "true") would mask ordinary words


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The values of the secret-looking environment variables, longest first."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if _SECRET_NAMES.search(name) and len(value) >= _SHORTEST_SECRET
    }
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every credential it carries replaced by `***`."""
    for value in secret_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda found: f"{found['scheme']}{MASK}@", text)
    return _TOKEN_SHAPES.sub(MASK, text)


def redact_value(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value, environ)
    if isinstance(value, dict):
        return {key: redact_value(item, environ) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item, environ) for item in value]
    return value


def redact_report(report: Any) -> None:
    """Remove credentials from a report's failure text and captured output, in place."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        report.longrepr = (longrepr[0], longrepr[1], redact(str(longrepr[2])))
    elif longrepr is not None:
        text = str(longrepr)
        if (clean := redact(text)) != text:
            report.longrepr = clean
    report.sections = [(title, redact(content)) for title, content in report.sections]
