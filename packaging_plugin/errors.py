"""The one base class of every error a user can cause or fix.

A `PackagingError` is reported as its message alone, without a traceback: the message says what is
wrong, where (the file, path or model) and what was expected. Any other exception is a defect or a
machine's fault; a step that meets one fails with its traceback in the report.
"""

from __future__ import annotations


class PackagingError(Exception):
    """An error whose message is all the user needs: bad input, a missing tool, a failed build."""
