"""Hugging Face checkpoint -> MLC model directory: `convert_checkpoint(src, dst, quantization)`.

    python -m packaging_plugin.sources.convert SRC DST --quantization q4f16_1

Input: `config.json`, `*.safetensors` (one file, or shards listed by
`model.safetensors.index.json`), optional `generation_config.json` and tokenizer files.
Output: what MLC-LLM's `convert_weight` + `gen_config` write: `mlc-chat-config.json`,
`tensor-cache.json` and `params_shard_N.bin`, with MLC's parameter names, order and quantized
layouts (notes/mlc-model-lib-abi.md), plus the tokenizer files and the model's licence, notice and
readme files.

Memory stays near one source tensor: tensors are read one at a time (`safe_open`), fused
parameters (`[q; k; v]`, `[gate; up]`) are concatenations on axis 0, which for row-major data is
just writing the parts one after another, and group quantization (q4, q3) works on row blocks.
Bytes go straight to the open shard file, whose md5 is updated as it is written.

Float32 tensors are stored raw (MLC's converter stores them as bf16, "f32-to-bf16"): the runtime
reads both, and raw keeps q0f32 bit-exact to the checkpoint. No TVM is imported here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from packaging_plugin.families import SUPPORTED_MODEL_TYPES, hf_model_config, plan_params
from packaging_plugin.families.base.config import ConvertError
from packaging_plugin.families.base.mapping import ParamPlan
from packaging_plugin.quantization.packing import quantize_groups
from packaging_plugin.quantization.schemes import (
    SUPPORTED_QUANTIZATIONS,
    Quantization,
    get_quantization,
)
from packaging_plugin.sources.model_files import terms_files, tokenizer_files

SHARD_CAP_BYTES = 32 << 20  # MLC's shard size limit
CHAT_CONFIG_VERSION = "0.1.0"
# Rows quantized at once: bounds the quantization temporaries (several times the block's float32
# size) independently of the tensor's size.
_QUANTIZE_BLOCK_ELEMENTS = 1 << 18


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConvertError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ConvertError(f"{path}: top level is not a JSON object")
    return value


def _tokenizer_info(src: Path) -> dict[str, Any]:
    """How the runtime post-processes tokens: byte-level BPE (GPT-2 style) or byte fallback."""
    method = "byte_fallback"
    tokenizer_json = src / "tokenizer.json"
    if tokenizer_json.is_file():
        decoder = json.loads(tokenizer_json.read_text()).get("decoder") or {}
        kinds = [decoder.get("type")] + [d.get("type") for d in decoder.get("decoders", [])]
        if "ByteLevel" in kinds:
            method = "byte_level"
    elif (src / "vocab.json").is_file() and (src / "merges.txt").is_file():
        method = "byte_level"
    return {
        "token_postproc_method": method,
        "prepend_space_in_encode": False,
        "strip_space_in_decode": False,
    }


def _chat_config(
    src: Path, hf: dict[str, Any], model_type: str, quant: Quantization, tokenizer_files: list[str]
) -> dict[str, Any]:
    model_config = hf_model_config(hf, model_type)
    gen = (
        _read_json(src / "generation_config.json")
        if (src / "generation_config.json").is_file()
        else {}
    )

    def token(key: str, default: Any) -> Any:
        # generation_config.json is what transformers' generate() uses, so it wins.
        for source in (gen, hf):
            if source.get(key) is not None:
                return source[key]
        return default

    eos = token("eos_token_id", 2)
    return {
        "version": CHAT_CONFIG_VERSION,
        "model_type": model_type,
        "quantization": quant.name,
        "model_config": model_config,
        "vocab_size": model_config["vocab_size"],
        "context_window_size": model_config["context_window_size"],
        "sliding_window_size": model_config.get("sliding_window_size", -1),
        "prefill_chunk_size": model_config["prefill_chunk_size"],
        "attention_sink_size": model_config.get("attention_sink_size", -1),
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "temperature": float(gen.get("temperature", 1.0)),
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "repetition_penalty": float(gen.get("repetition_penalty", 1.0)),
        "top_p": float(gen.get("top_p", 1.0)),
        "tokenizer_files": tokenizer_files,
        "tokenizer_info": _tokenizer_info(src),
        # A plain template; the app (or a later override) supplies the model's real chat format.
        "conv_template": {
            "name": "raw",
            "system_template": "{system_message}",
            "system_message": "",
            "roles": {"user": "", "assistant": ""},
            "role_templates": {
                "user": "{user_message}",
                "assistant": "{assistant_message}",
                "tool": "{tool_message}",
            },
            "messages": [],
            "seps": [""],
            "role_content_sep": "",
            "role_empty_sep": "",
            "stop_str": [],
            "stop_token_ids": eos if isinstance(eos, list) else [eos],
            "function_string": "",
            "use_function_calling": False,
        },
        "pad_token_id": token("pad_token_id", 0),
        "bos_token_id": token("bos_token_id", 1),
        "eos_token_id": eos,
    }


# ------------------------------------------------------------------------------------------------
# Reading safetensors, one tensor at a time

_RAW_DTYPES = {"BF16": 2}  # dtypes numpy cannot represent: read as raw bytes and widened
_GPT2_PREFIX = "transformer."


class _Checkpoint:
    """The checkpoint's tensors by name, read lazily from whichever file holds each."""

    def __init__(self, src: Path, stack: ExitStack) -> None:
        from safetensors import safe_open

        self._safe_open = safe_open
        self._stack = stack
        self._handles: dict[Path, Any] = {}
        index = src / "model.safetensors.index.json"
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise ConvertError(f"{index}: no 'weight_map' object")
            self.files = {name: src / file for name, file in weight_map.items()}
            for path in set(self.files.values()):
                if not path.is_file():
                    raise ConvertError(f"{index} lists {path.name}, which is missing")
        else:
            paths = sorted(src.glob("*.safetensors"))
            if not paths:
                raise ConvertError(f"{src} has no *.safetensors weights")
            self.files = {}
            for path in paths:
                for name in self._open(path).keys():  # noqa: SIM118 (a safe_open handle)
                    self.files[name] = path
        # What a tensor is called in the file, by the name the plans use: GPT-2's original
        # checkpoints leave out the "transformer." that transformers' own files have.
        self.stored = {name: name for name in self.files}
        for name in list(self.files):
            alias = f"{_GPT2_PREFIX}{name}"
            if not name.startswith(_GPT2_PREFIX) and alias not in self.files:
                self.files[alias], self.stored[alias] = self.files[name], name

    def _open(self, path: Path) -> Any:
        if path not in self._handles:
            try:
                handle = self._safe_open(str(path), framework="numpy")
            except Exception as error:  # safetensors raises its own error type, not OSError
                hint = ""
                if path.stat().st_size < 1024 and path.read_bytes().startswith(
                    b"version https://git-lfs"
                ):
                    hint = ": it is a Git LFS pointer, not the weights (run `git lfs pull`)"
                raise ConvertError(
                    f"{path} is not a readable safetensors file{hint} ({error})"
                ) from None
            self._handles[path] = self._stack.enter_context(handle)
        return self._handles[path]

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._open(self._file(name)).get_slice(self.stored[name]).get_shape())

    def _file(self, name: str) -> Path:
        try:
            return self.files[name]
        except KeyError:
            raise ConvertError(f"the checkpoint has no tensor {name!r}") from None

    def read(self, name: str) -> np.ndarray:
        """The tensor as float32 (float tensors) or its own dtype."""
        path = self._file(name)
        handle = self._open(path)
        name = self.stored[name]
        dtype = handle.get_slice(name).get_dtype()
        if dtype in _RAW_DTYPES:
            return _read_bf16(path, name)
        array = handle.get_tensor(name)
        return array.astype(np.float32, copy=False) if array.dtype.kind == "f" else array


def _read_bf16(path: Path, name: str) -> np.ndarray:
    """A bf16 tensor as float32: bf16 is the upper half of a float32, so widen the bits.

    safe_open's numpy backend has no bfloat16, so the tensor's bytes are located through the
    file's header (8-byte little-endian length, then JSON with `data_offsets` after the header).
    """
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        entry = json.loads(f.read(header_len))[name]
        begin, end = entry["data_offsets"]
        f.seek(8 + header_len + begin)
        raw = np.fromfile(f, dtype="<u2", count=(end - begin) // 2)
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])


# ------------------------------------------------------------------------------------------------
# Writing the tensor cache, streaming


class _ShardWriter:
    """Writes records into `params_shard_N.bin` files of at most `cap` bytes.

    A record is begun with its size known, so it can be placed before its bytes exist; its bytes
    then arrive in pieces. A record larger than the cap gets a shard of its own, as in MLC.
    """

    def __init__(self, dst: Path, cap: int) -> None:
        self.dst, self.cap = dst, cap
        self.shards: list[dict[str, Any]] = []
        self._file: BinaryIO | None = None
        self._md5 = hashlib.md5()
        self._size = 0
        self._expected_end = 0
        self.total = 0

    def begin(self, name: str, shape: Sequence[int], dtype: str, nbytes: int) -> None:
        if self._file is None or (self._size and self._size + nbytes > self.cap):
            self._close_shard()
            path = f"params_shard_{len(self.shards)}.bin"
            self._file = (self.dst / path).open("wb")
            self._md5, self._size = hashlib.md5(), 0
            self.shards.append(
                {"dataPath": path, "format": "raw-shard", "nbytes": 0, "records": [], "md5sum": ""}
            )
        self.shards[-1]["records"].append(
            {
                "name": name,
                "shape": [int(s) for s in shape],
                "dtype": dtype,
                "format": "raw",
                "nbytes": int(nbytes),
                "byteOffset": self._size,
            }
        )
        self._expected_end = self._size + nbytes

    def write(self, array: np.ndarray) -> None:
        assert self._file is not None
        data = np.ascontiguousarray(array).data.cast("B")
        self._file.write(data)
        self._md5.update(data)
        self._size += len(data)
        self.total += len(data)

    def end(self) -> None:
        if self._size != self._expected_end:  # a bug here would corrupt every later offset
            raise RuntimeError(f"record {self.shards[-1]['records'][-1]['name']} size mismatch")

    def _close_shard(self) -> None:
        if self._file is not None:
            self._file.close()
            self.shards[-1]["nbytes"] = self._size
            self.shards[-1]["md5sum"] = self._md5.hexdigest()
            self._file = None

    def close(self) -> None:
        self._close_shard()


def _row_blocks(array: np.ndarray) -> Iterator[np.ndarray]:
    rows = max(1, _QUANTIZE_BLOCK_ELEMENTS // max(1, int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], rows):
        yield array[start : start + rows]


def _read_part(ckpt: _Checkpoint, plan: ParamPlan, source: str) -> np.ndarray:
    """One source tensor of `plan` as MLC stores it (before quantization and the final cast)."""
    part = ckpt.read(source)
    if plan.transposed:  # a copy of one tensor: the rows MLC stores are its columns
        part = np.ascontiguousarray(part.T)
    if plan.deinterleave:  # a copy of one tensor, its rows reordered: [b, p, n] -> [p, b, n]
        blocks, parts = plan.deinterleave
        if part.shape[0] % (blocks * parts):
            raise ConvertError(f"{source}: {part.shape[0]} rows are not {blocks} x {parts} runs")
        runs = part.reshape(blocks, parts, -1, *part.shape[1:])
        part = np.ascontiguousarray(runs.swapaxes(0, 1)).reshape(part.shape)
    if plan.offset:  # in float32, before the cast, as MLC's loader adds it
        part = part + np.float32(plan.offset)
    return part


def _write_param(
    writer: _ShardWriter, ckpt: _Checkpoint, plan: ParamPlan, quant: Quantization
) -> int:
    """Stream one parameter into the shards; returns its logical element count."""
    shapes = [ckpt.shape(s)[:: -1 if plan.transposed else 1] for s in plan.sources]
    tails = {shape[1:] for shape in shapes}
    if len(tails) != 1:
        raise ConvertError(f"{plan.name}: parts {plan.sources} have shapes {shapes}")
    shape = (sum(s[0] for s in shapes), *shapes[0][1:])
    dtype = np.dtype(quant.model_dtype)

    if not (quant.group_quantized and plan.quantizable):
        dtype = np.dtype(plan.dtype or dtype)
        writer.begin(plan.name, shape, dtype.name, int(np.prod(shape)) * dtype.itemsize)
        for source in plan.sources:  # concatenation on axis 0 = one part after another
            writer.write(_read_part(ckpt, plan, source).astype(dtype, copy=False))
            # the part is released here, before the next one is read
        writer.end()
        return int(np.prod(shape))

    if len(shape) != 2:
        raise ConvertError(f"{plan.name}: {quant.name} needs a 2-D weight, got shape {shape}")
    rows, cols = shape
    (_, words), (_, groups) = quant.layout.shapes(rows, cols)
    base = plan.name.removesuffix(".weight")
    if quant.linear_transposed and not plan.embedding:
        return _write_transposed(writer, ckpt, plan, quant, rows, cols)
    writer.begin(f"{base}.q_weight", (rows, words), "uint32", rows * words * 4)
    scales: list[np.ndarray] = []  # one per group: kept until the weight is done
    for source in plan.sources:
        part = _read_part(ckpt, plan, source)
        for block in _row_blocks(part):
            q_weight, q_scale = quantize_groups(block, dtype, quant.layout)
            writer.write(q_weight)
            scales.append(q_scale)
        del part
    writer.end()
    writer.begin(f"{base}.q_scale", (rows, groups), dtype.name, rows * groups * dtype.itemsize)
    for q_scale in scales:
        writer.write(q_scale)
    writer.end()
    return rows * cols


def _write_transposed(
    writer: _ShardWriter,
    ckpt: _Checkpoint,
    plan: ParamPlan,
    quant: Quantization,
    rows: int,
    cols: int,
) -> int:
    """The KN layout (q4f16_0, q3f16_0): quantized along the input axis, stored transposed.

    The transpose interleaves every source row into every word row, so the packed weight (1/8
    of the float32 weight's bytes for q4, 1/10 for q3) is assembled in memory before it is
    written.
    """
    dtype = np.dtype(quant.model_dtype)
    words: list[np.ndarray] = []
    scales: list[np.ndarray] = []
    for source in plan.sources:
        part = _read_part(ckpt, plan, source)
        for block in _row_blocks(part):
            q_weight, q_scale = quantize_groups(block, dtype, quant.layout)
            words.append(q_weight)
            scales.append(q_scale)
        del part
    base = plan.name.removesuffix(".weight")
    for suffix, pieces in (("q_weight", words), ("q_scale", scales)):
        stored = np.ascontiguousarray(np.concatenate(pieces).T)
        writer.begin(f"{base}.{suffix}", stored.shape, stored.dtype.name, stored.nbytes)
        writer.write(stored)
        writer.end()
    return rows * cols


# ------------------------------------------------------------------------------------------------
# Entry points


def convert_checkpoint(
    src: Path, dst: Path, quantization: str, *, shard_cap_bytes: int = SHARD_CAP_BYTES
) -> Path:
    """Convert the Hugging Face checkpoint in `src` into an MLC model directory `dst`.

    Returns `dst`. Raises ConvertError for a checkpoint that cannot be converted (missing
    config.json, unsupported model_type or quantization, missing tensors).
    """
    src, dst = Path(src), Path(dst)
    try:
        quant = get_quantization(quantization)
    except ValueError as err:
        raise ConvertError(str(err)) from None
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ConvertError(f"{src} has no config.json: not a Hugging Face checkpoint")
    hf = _read_json(config_path)
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConvertError(
            f"{config_path}: unsupported model_type {model_type!r}; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    tokenizers = tokenizer_files(src)
    chat = _chat_config(src, hf, model_type, quant, tokenizers)
    plans = plan_params(model_type, chat["model_config"])

    logical = 0
    with ExitStack() as stack:
        ckpt = _Checkpoint(src, stack)
        missing = [s for p in plans for s in p.sources if s not in ckpt]
        if missing:
            raise ConvertError(f"{src}: the checkpoint lacks tensors: {', '.join(missing[:5])}")
        # Only now is dst touched: a checkpoint found wanting leaves an earlier conversion alone.
        # The chat config goes first, so an interrupted run does not look finished.
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "mlc-chat-config.json").unlink(missing_ok=True)
        for stale in dst.glob("params_shard_*.bin"):
            stale.unlink()
        writer = _ShardWriter(dst, shard_cap_bytes)
        try:
            for plan in plans:
                logical += _write_param(writer, ckpt, plan, quant)
        finally:
            writer.close()
    cache = {
        "metadata": {
            "ParamSize": logical,
            "ParamBytes": writer.total,
            "BitsPerParam": round(8.0 * writer.total / max(1, logical), 4),
        },
        "records": writer.shards,
    }
    # Tokenizer files are copied verbatim, and the model's terms travel with its weights.
    for name in [*tokenizers, *terms_files(src)]:
        shutil.copyfile(src / name, dst / name)
    (dst / "tensor-cache.json").write_text(json.dumps(cache, indent=2) + "\n")
    # Written last: a directory with mlc-chat-config.json is a finished conversion.
    (dst / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2) + "\n")
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m packaging_plugin.sources.convert",
        description="Convert a Hugging Face checkpoint into an MLC model directory.",
    )
    parser.add_argument("src", type=Path, help="checkpoint folder (config.json + *.safetensors)")
    parser.add_argument("dst", type=Path, help="output MLC model directory")
    parser.add_argument("--quantization", required=True, help=", ".join(SUPPORTED_QUANTIZATIONS))
    args = parser.parse_args(argv)
    try:
        out = convert_checkpoint(args.src, args.dst, args.quantization)
    except ConvertError as err:
        print(f"convert failed: {err}", file=sys.stderr)
        return 1
    cache = json.loads((out / "tensor-cache.json").read_text())
    print(
        f"{out}: {len(cache['records'])} shard(s), "
        f"{cache['metadata']['ParamBytes'] / 2**20:.1f} MiB ({args.quantization})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
