"""Secrets out of every text a run shows or writes: messages, logs, JUnit and the report.

A hub or cache URL may carry credentials (`http://user:token@host`), and the libraries that fail
to reach it quote that URL in their errors; tokens may also turn up in captured output. Every
exit of text calls `redact`, which removes three kinds of secret, each replaced by `***`:

- the userinfo of any URL (`scheme://user:pass@host` becomes `scheme://***@host`): the host
  stays, so a message still says where a download went wrong;
- what is shaped like a token: Hugging Face tokens, AWS access key ids;
- the values of this process's secret environment variables (and the userinfo of the endpoint
  variables), wherever they appear, in whatever shape.

Only the standard library: the module is called from the lowest layers (download errors) to the
pytest hooks, and must import nothing that could import it back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
# Named by the tools that read them; any other variable is secret by its name (below).
SECRET_VARIABLES = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
)
SECRET_NAME_WORDS = ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
# Endpoints that may be given with credentials in them: their userinfo is a secret anywhere.
ENDPOINT_VARIABLES = ("HF_ENDPOINT", "MLC_LLM_CACHE_URL", "AWS_ENDPOINT_URL")
# A shorter value is too likely to be an ordinary word ("true", a user name) to remove everywhere.
MIN_SECRET_LENGTH = 8

# The userinfo ends at the last "@" of the authority (a password may hold a raw "@"); the
# authority ends at "/", "?", "#", white space or a quote, so an "@" in a path or query stays.
_AUTHORITY_CHARS = r"[^\s/?#@'\"<>]*"
_URL_USERINFO = re.compile(
    rf"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://){_AUTHORITY_CHARS}(?:@{_AUTHORITY_CHARS})*@"
)
_TOKEN_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}(?![A-Za-z0-9])"  # Hugging Face
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"  # AWS access key id
)


def _is_secret_name(name: str) -> bool:
    upper = name.upper()
    return name in SECRET_VARIABLES or any(word in upper for word in SECRET_NAME_WORDS)


def _userinfo_secrets(url: str) -> list[str]:
    """The userinfo of `url`, whole and by part, as written and percent-decoded."""
    try:
        netloc = urlsplit(url.strip()).netloc
    except ValueError:
        return []
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return []
    user, _, password = userinfo.partition(":")
    return [form for part in (userinfo, user, password) for form in (part, unquote(part))]


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """The literal secrets of the environment, longest first (so a secret that holds another is
    removed whole, not left in pieces)."""
    env = os.environ if environ is None else environ
    found = {value for name, value in env.items() if _is_secret_name(name)}
    for name in ENDPOINT_VARIABLES:
        found.update(_userinfo_secrets(env.get(name, "")))
    # Each variable is read on every call: a test or a child's setup may have changed it, and a
    # scan of a hundred names costs microseconds.
    return sorted((v for v in found if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`text` with every secret replaced by `***` (see the module's docstring); the secret
    variables are those of `environ` (default: this process's environment)."""
    for value in secret_values(environ):
        if value in text:
            text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda match: f"{match['scheme']}{MASK}@", text)
    return _TOKEN_SHAPES.sub(MASK, text)


def redact_value(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """`value` with every string in it redacted: dicts (keys too), lists and tuples walked, any
    other value (numbers, None, booleans) kept as it is. For the JSON report and JUnit."""
    if isinstance(value, str):
        return redact(value, environ)
    if isinstance(value, dict):
        return {redact_value(k, environ): redact_value(v, environ) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item, environ) for item in value)
    return value


def redact_report(report: Any) -> None:
    """Redact a test report in place, before the terminal, JUnit or xdist sees it.

    `longrepr` is a string, a skip's (path, line, reason) tuple, or pytest's rich repr of a
    failure: a string or tuple is redacted as such (pytest's skip summary needs the tuple); a
    rich repr is replaced by its redacted string form only when that differs, so a report with
    no secret keeps its colours and structure. `sections` hold the captured output and logs.
    """
    longrepr = getattr(report, "longrepr", None)
    if isinstance(longrepr, str | tuple):
        report.longrepr = redact_value(longrepr)
    elif longrepr is not None:
        shown = str(longrepr)
        redacted = redact(shown)
        if redacted != shown:
            report.longrepr = redacted
    sections = getattr(report, "sections", None)
    if sections:
        report.sections = [(title, redact(content)) for title, content in sections]
