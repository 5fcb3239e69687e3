"""How a mistake in a config file is reported: `ConfigError`, the collector that gathers every
problem of a file, reading JSON files, the check of an object's keys (unknown, misplaced or
written twice), and describing the values a problem line quotes.

A problem line reads `<file>: <JSON path>: <what is wrong>; expected <what>`. This module imports
nothing of packaging_plugin.config, so that every other module of that package can use it.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging_plugin.errors import PackagingError

# A key that a JSON path writes dotted; also a usable model_lib, with - read as _.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_MAX_PROBLEM_LINES = 50
_INVALID_JSON_HINT = "valid JSON (no comments or trailing commas; strings in double quotes)"


class ConfigError(PackagingError):
    """A mistake in a config file. `str(error)` is the complete message for the user: one problem
    per line, each `<file>: <JSON path>: <what is wrong>; expected <what>`."""

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)  # args = problems, so the error pickles (xdist, subprocesses)
        self.problems: tuple[str, ...] = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


def read_json_file(path: Path, *, detect_duplicate_keys: bool = False) -> Any:
    """Parse a JSON file; a ConfigError names the file (and line and column for syntax errors).

    With `detect_duplicate_keys`, objects come back as `_JsonObject`s (dicts) that remember keys
    written twice, which plain `json` silently collapses to the last value.
    """
    display = str(path)
    try:
        # utf-8-sig: editors on Windows write a byte order mark, which json.loads rejects.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found; expected a JSON file there") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{display}: byte {error.start} is not UTF-8 text; expected a UTF-8 JSON file"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"{display}: cannot be read ({error.strerror}); expected a readable JSON file"
        ) from None
    if not text.strip():
        raise ConfigError(f"{display}: the file is empty; expected a JSON object")
    try:
        if detect_duplicate_keys:
            return json.loads(text, object_pairs_hook=_JsonObject.from_pairs)
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{display}: line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}); "
            f"expected {_INVALID_JSON_HINT}"
        ) from None


class _JsonObject(dict):  # type: ignore[type-arg]
    """A JSON object that remembers which keys were written more than once."""

    duplicate_keys: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            duplicates: list[str] = []
            for key, _ in pairs:
                if key in seen and key not in duplicates:
                    duplicates.append(key)
                seen.add(key)
            obj.duplicate_keys = tuple(duplicates)
        return obj


class _Problems:
    """Collects problem lines so that one run reports everything wrong with a file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: list[str] = []

    def add(self, where: str, what: str, expected: str, *, file: str | None = None) -> None:
        location = f"{where}: " if where else ""
        self.lines.append(f"{file or self.file}: {location}{what}; expected {expected}")

    def extend(self, error: ConfigError) -> None:
        self.lines.extend(error.problems)

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        lines = self.lines
        if len(lines) > _MAX_PROBLEM_LINES:
            more = len(lines) - _MAX_PROBLEM_LINES
            lines = [
                *lines[:_MAX_PROBLEM_LINES],
                f"{self.file}: ... and {more} more problems; expected the ones above fixed first",
            ]
        raise ConfigError(*lines)


def _check_keys(
    problems: _Problems,
    obj: Mapping[str, Any],
    where: str,
    known: Sequence[str],
    misplaced: Mapping[str, tuple[str, str]],
) -> set[str]:
    """Report keys written twice and unknown keys. Returns the known keys suggested for
    unknown ones, so that a misspelt required key is not also reported as missing."""
    _check_duplicate_keys(problems, obj, where)
    suggested: set[str] = set()
    for key in obj:
        if key in known:
            continue
        if key in misplaced:
            home, example = misplaced[key]
            value = _short_json(obj[key])
            problems.add(
                _join(where, key),
                f"belongs in {home}, not here",
                example.replace("<key>", key).replace("<value>", value),
            )
            continue
        suggestion = did_you_mean(key, known)
        if suggestion is not None:
            suggested.add(suggestion)
            what = f'unknown key (did you mean "{suggestion}"?)'
        else:
            what = "unknown key"
        problems.add(_join(where, key), what, f"one of: {', '.join(known)}")
    return suggested


def _check_duplicate_keys(problems: _Problems, obj: Mapping[str, Any], where: str) -> None:
    for key in getattr(obj, "duplicate_keys", ()):
        problems.add(
            _join(where, key),
            "written more than once in the same object (JSON keeps only the last)",
            "each key once",
        )


def _misplaced(keys: Iterable[str], home: str, example: str) -> dict[str, tuple[str, str]]:
    """Keys that belong elsewhere: (where they belong, how it looks there with <key>, <value>)."""
    return {key: (home, example) for key in keys}


def _short_json(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else "..."


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate the user most likely meant by `word`, or None."""
    choices = list(candidates)
    by_lower = {choice.lower(): choice for choice in choices}
    normalized = word.strip().lower().replace("-", "_").replace(" ", "_")
    if normalized in by_lower:
        return by_lower[normalized]
    matches = difflib.get_close_matches(normalized, list(by_lower), n=1, cutoff=0.6)
    return by_lower[matches[0]] if matches else None


def _join(where: str, key: str) -> str:
    """JSON path of `key` inside the object at `where` (dotted where the key allows it)."""
    part = key if _IDENTIFIER.fullmatch(key) else f"[{json.dumps(key)}]"
    if not where:
        return part
    return f"{where}{part}" if part.startswith("[") else f"{where}.{part}"


def _describe(value: Any) -> str:
    """A JSON value and its type, for 'X is a number; expected a string'."""
    if value is None:
        return "is null"
    if isinstance(value, bool):
        return f"{json.dumps(value)} is a boolean"
    if isinstance(value, (int, float)):
        return f"{value!r} is a number"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{json.dumps(shown)} is a string"
    if isinstance(value, list):
        return "is a list"
    if isinstance(value, dict):
        return "is an object"
    return f"is {type(value).__name__}"


def _or_list(paths: Sequence[Path]) -> str:
    return " and ".join(str(path) for path in paths)
