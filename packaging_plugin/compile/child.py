"""The compile child process: `python -m packaging_plugin.compile.child REQUEST.json OUT.tar`.

Exit 0 when the tar is written; on an exception, print a one-line cause (and, unless it is a
machine's condition such as a full disk, the traceback) to stderr and exit 1 (a crash inside TVM
shows up to the parent as a signal instead).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from packaging_plugin.errors import describe_os_error


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(
            "usage: python -m packaging_plugin.compile.child REQUEST.json OUT.tar", file=sys.stderr
        )
        return 2
    try:
        from packaging_plugin.compile.pipeline import compile_library

        request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        compile_library(request, Path(argv[1]))
    except OSError as exc:  # a machine's condition (a full disk): the path and cause say it
        print(f"compile failed: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"compile failed: {type(exc).__name__}: {cause}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
