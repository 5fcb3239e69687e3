"""Phone builds of a tiny model: they compile, carry the GPU sampler where the runtime needs it
(Metal), and report planned memory in `_metadata`.

The sampler's numerics are checked on linux in test_compiler.py (the same Relax graphs, run
through the VM); here only the cross-compiled libraries are inspected. Relax function names
are not object symbols: they live in the library blob of `<prefix>devc.o`, each as a
little-endian uint64 length followed by the name's bytes.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import tarfile

import pytest

from tests.helpers.paths import DEMO_MODELS, REPO
from tests.helpers.runtime import compile_request

SAMPLER_FUNCTIONS = (
    "multinomial_from_uniform",
    "argsort_probs",
    "sample_with_top_p",
    "sampler_take_probs",
    "renormalize_by_top_p",  # not checked at load, but called whenever top_p < 1
)
MODEL = "tiny-llama-q0f32"
PREFIX = "tc_sampler_tiny_llama_"
# device -> whether its libraries export the sampler: Metal must (the runtime samples on the
# GPU there); on OpenCL the runtime samples on the CPU, so the compiler leaves them out.
DEVICES = {"android": False, "iphone": True}


def length_prefixed(name: str) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode()


@pytest.fixture(scope="module", params=sorted(DEVICES))
def device_blob(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, bytes]:
    """(device, the `<prefix>devc.o` of the tiny model built for it), compiled in a child
    process: a TVM crash on a cross target must fail the test, not kill the worker."""
    work = tmp_path_factory.mktemp(f"sampler-{request.param}")
    req_path = work / "request.json"
    req_path.write_text(json.dumps(compile_request(DEMO_MODELS / MODEL, PREFIX, request.param)))
    tar_path = work / "lib.tar"
    proc = subprocess.run(
        [sys.executable, "-m", "packaging_plugin.compile.child", str(req_path), str(tar_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with tarfile.open(tar_path) as tar:
        member = tar.extractfile(f"{PREFIX}devc.o")
        assert member is not None
        return request.param, member.read()


@pytest.mark.slow
def test_phone_build_exports_the_sampler_where_the_runtime_needs_it(
    device_blob: tuple[str, bytes],
) -> None:
    device, blob = device_blob
    for name in ("prefill", "decode", "softmax_with_temperature"):
        assert length_prefixed(name) in blob, name
    exported = {name: length_prefixed(name) in blob for name in SAMPLER_FUNCTIONS}
    assert exported == dict.fromkeys(SAMPLER_FUNCTIONS, DEVICES[device])


@pytest.mark.slow
def test_phone_build_metadata_has_planned_memory(device_blob: tuple[str, bytes]) -> None:
    # `_metadata` returns a string constant of the blob: compact JSON with sorted keys.
    _, blob = device_blob
    start = blob.find(b'{"attention_sink_size":')
    assert start >= 8
    (length,) = struct.unpack("<Q", blob[start - 8 : start])
    metadata = json.loads(blob[start : start + length])
    usage = metadata["memory_usage"]
    for name in ("prefill", "decode", "batch_prefill", "batch_decode"):
        assert usage[name] > 0, name
    # Planned with seq_len bounded by the prefill chunk: at least one [chunk, hidden] f32 buffer.
    assert usage["prefill"] >= metadata["prefill_chunk_size"] * 64 * 4
    assert "_metadata" not in usage


def test_the_compiler_names_the_runtime_sampler_functions() -> None:
    # Spelled out above from the runtime's contract, not imported: a rename must fail here.
    from packaging_plugin.compile import sampler

    assert (*sampler.SAMPLER_FUNCTIONS, sampler.TOP_P_RENORM_FUNCTION) == SAMPLER_FUNCTIONS
