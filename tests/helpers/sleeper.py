"""`python -m tests.helpers.sleeper PIDFILE`: a child that writes its pid and then waits, as a
long compile would; tests see whether it outlives its parent."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

if __name__ == "__main__":
    Path(sys.argv[1]).write_text(str(os.getpid()))
    time.sleep(120)
