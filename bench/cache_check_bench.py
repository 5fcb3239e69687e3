"""What checking a cache entry on use costs: the sha256 of each cached library, against a warm
package run of the same config, in one run.

    .venv/bin/python bench/cache_check_bench.py [CONFIG]   (default configs/demo-linux.json)

Packages CONFIG twice with the current MLC_LLM_HOME (the first run warms it), then times the
check a warm run makes of every library it takes from the cache, and prints the check's
seconds, the warm run's seconds, and their ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packaging_plugin.cache_records import file_damage

REPO = Path(__file__).resolve().parent.parent


def package(config: Path, output: Path) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "pytest", f"--package-config={config}", "-q", "-p"]
    command += ["no:randomly", f"--package-output={output}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    config = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "configs" / "demo-linux.json")
    with tempfile.TemporaryDirectory() as work:
        output = Path(work) / "dist"
        package(config, output)
        warm = package(config, output)
        report = json.loads((output / "package-report.json").read_text())
    libraries = [Path(m["library_path"]) for m in report["models"] if m.get("library_path")]
    started = time.perf_counter()
    damaged = [problem for path in libraries if (problem := file_damage(path))]
    check = time.perf_counter() - started
    total = sum(path.stat().st_size for path in libraries)
    print(f"{len(libraries)} libraries, {total / 2**20:.1f} MiB; damaged: {damaged or 'none'}")
    print(f"check {check:.3f} s; warm run {warm:.1f} s; check / warm run = {check / warm:.4f}")


if __name__ == "__main__":
    main()
