"""Wall-clock ratios of packaging runs, measured in one run of this script.

    .venv/bin/python bench/package_bench.py [--config configs/demo-android.json] [--repeat 1]

Runs, each as a user would (a pytest subprocess), on the demo config:
  cold serial   : empty compile cache, no xdist
  cold -n 2     : empty compile cache, two xdist workers
  warm          : the cache the cold run left, no xdist
and prints the times and the ratios cold-serial / cold-n2 and warm / cold-serial. Absolute seconds
depend on the machine and its load; the ratios taken in one run are what docs/performance.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(config: Path, cache: Path, output: Path, extra: list[str]) -> float:
    env = {**os.environ, "MLC_LLM_HOME": str(cache)}
    env.pop("MLC_JIT_POLICY", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"--package-config={config}",
        f"--package-output={output}",
        "-q",
        "-p",
        "no:randomly",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"run failed ({' '.join(extra) or 'serial'}):\n{result.stdout[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo-android.json")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the median is reported")
    args = parser.parse_args()
    config = args.config.resolve()
    models = len(json.loads(config.read_text())["model_list"])
    rounds: dict[str, list[float]] = {"cold_serial": [], "cold_n2": [], "warm": []}
    with tempfile.TemporaryDirectory(prefix="mlc-bench-") as scratch:
        root = Path(scratch)
        for round_index in range(args.repeat):
            serial_cache = root / f"cache-serial-{round_index}"
            parallel_cache = root / f"cache-n2-{round_index}"
            output = root / "dist"
            rounds["cold_serial"].append(timed_run(config, serial_cache, output, []))
            rounds["cold_n2"].append(timed_run(config, parallel_cache, output, ["-n", "2"]))
            rounds["warm"].append(timed_run(config, serial_cache, output, []))
    median = {name: sorted(times)[len(times) // 2] for name, times in rounds.items()}
    result = {
        "config": str(config.relative_to(REPO)) if config.is_relative_to(REPO) else str(config),
        "models": models,
        "cpus": os.cpu_count(),
        "seconds": {name: round(value, 2) for name, value in median.items()},
        "speedup_n2_over_serial_cold": round(median["cold_serial"] / median["cold_n2"], 2),
        "warm_over_cold": round(median["warm"] / median["cold_serial"], 3),
    }
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "package_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
