"""Bundling and verifying weights: link vs copy, and our md5 verification vs `md5sum`.

    .venv/bin/python bench/weights_bench.py [--mib 256] [--repeat 3]

Writes a model directory of random shards (32 MiB each, MLC's shard size) with a
tensor-cache.json, then, side by side in one run (medians of --repeat rounds):
  bundle, links : bundle_weights as a run does from huggingface_hub's cache (reflink, else link)
  bundle, copy  : the same without hard links, as from a user's folder on a filesystem without
                  reflinks (a streamed copy hashed as it is read)
  verify        : verify_weights without the record (every shard read and hashed)
  md5sum        : coreutils `md5sum` over the same shards
  verify, warm  : verify_weights with the record a first verification left (a warm run)
The shards are read once before timing, so every reader finds them in the page cache: the
figures compare the code, not the disk. Results go to bench/results/weights_bench.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from timing import median_seconds  # noqa: E402  (bench/, beside this script)

from packaging_plugin.assemble.bundle import bundle_weights  # noqa: E402
from packaging_plugin.sources.weights import DigestRecord, verify_weights  # noqa: E402

SHARD_BYTES = 32 << 20


def make_model(folder: Path, mib: int) -> list[Path]:
    folder.mkdir(parents=True)
    records, shards = [], []
    remaining = mib << 20
    while remaining > 0:
        size = min(SHARD_BYTES, remaining)
        data = os.urandom(size)
        path = folder / f"params_shard_{len(shards)}.bin"
        path.write_bytes(data)
        shards.append(path)
        records.append(
            {
                "dataPath": path.name,
                "format": "raw-shard",
                "nbytes": size,
                "records": [],
                "md5sum": hashlib.md5(data).hexdigest(),
            }
        )
        remaining -= size
    (folder / "tensor-cache.json").write_text(json.dumps({"metadata": {}, "records": records}))
    (folder / "mlc-chat-config.json").write_text("{}")
    return shards


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    md5sum = shutil.which("md5sum")
    with tempfile.TemporaryDirectory(prefix="weights-bench-", dir=REPO) as tmp:
        model = Path(tmp) / "model"
        shards = make_model(model, args.mib)
        for shard in shards:  # into the page cache
            shard.read_bytes()
        out = Path(tmp) / "bundle"
        seconds = {
            "bundle_links": median_seconds(
                lambda: bundle_weights(model, out, hardlink=True), args.repeat
            ),
            "bundle_copy": median_seconds(lambda: bundle_weights(model, out), args.repeat),
            "verify": median_seconds(lambda: verify_weights(model), args.repeat),
        }
        record_root = Path(tmp) / "cache"
        verify_weights(model, DigestRecord(record_root))  # what the first run leaves
        seconds["verify_warm"] = median_seconds(
            lambda: verify_weights(model, DigestRecord(record_root)), args.repeat
        )
        method = bundle_weights(model, out, hardlink=True).method
        if md5sum:
            command = [md5sum, *map(str, shards)]
            seconds["md5sum"] = median_seconds(
                lambda: subprocess.run(command, check=True, capture_output=True), args.repeat
            )
    mib = args.mib
    result = {
        "mib": mib,
        "repeat": args.repeat,
        "link_method": method,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "copy_over_links": round(seconds["bundle_copy"] / seconds["bundle_links"], 1),
        "verify_mib_per_s": round(mib / seconds["verify"], 1),
        "verify_warm_over_cold": round(seconds["verify_warm"] / seconds["verify"], 4),
    }
    if "md5sum" in seconds:
        result["md5sum_mib_per_s"] = round(mib / seconds["md5sum"], 1)
        result["verify_over_md5sum_time"] = round(seconds["verify"] / seconds["md5sum"], 2)
    print(json.dumps(result, indent=2))
    results = REPO / "bench" / "results" / "weights_bench.json"
    results.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
