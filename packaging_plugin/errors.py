"""The one base class of every error a user can cause or fix.

A `PackagingError` is reported as its message alone, without a traceback: the message says what is
wrong, where (the file, path or model) and what was expected. Any other exception is a defect or a
machine's fault; a step that meets one fails with its traceback in the report.
"""

from __future__ import annotations


class PackagingError(Exception):
    """An error whose message is all the user needs: bad input, a missing tool, a failed build."""


def describe_os_error(error: OSError) -> str:
    """`path: cause` for a machine's condition (a full disk, a permission, a read-only folder):
    the one line a user needs, where a traceback would bury it."""
    cause = error.strerror or str(error) or type(error).__name__
    where = error.filename
    if where is None:
        return cause
    if error.filename2 is not None:
        return f"{where} -> {error.filename2}: {cause}"
    return f"{where}: {cause}"
