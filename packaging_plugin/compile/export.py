"""Model architectures registered by `model_type`, and the export of one compile request.

`export_model(request, target)` turns a compile request (see docs/architecture.md) into the Relax
IRModule that `compiler.compile_library` builds: the model's functions with packed parameters,
the model-independent functions the MLC runtime calls on logits (`softmax_with_temperature` and the
in-place logit processors), the GPU sampler functions where the runtime uses them (`sampler.py`),
memory-planning bounds for the symbolic sizes, and `_metadata`, the JSON the MLC runtime reads
before anything else (its `memory_usage` is filled in by the compile pipeline, after planning).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.script import tirx as T
from tvm.target import Target

from packaging_plugin import families
from packaging_plugin.compile import sampler
from packaging_plugin.families.base.config import ModelSizes
from packaging_plugin.families.base.model import CausalLM
from packaging_plugin.quantization.schemes import get_quantization


@dataclass(frozen=True)
class ExportedModel:
    mod: tvm.IRModule
    metadata: dict[str, Any]
    param_names: list[str]


def export_model(request: dict[str, Any], target: Target) -> ExportedModel:
    """Build the nn model for `request` and export it to a Relax IRModule with `_metadata`."""
    model_type = request["model_type"]
    if model_type not in families.SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; "
            f"supported: {', '.join(families.SUPPORTED_MODEL_TYPES)}"
        )
    quant = get_quantization(request["quantization"])
    create = families.model_module(model_type).create
    model: CausalLM = create(model_type, dict(request["model_config"]), quant, target)
    sizes = model.sizes
    mod, named_params = model.export_tvm(spec=model.get_default_spec())
    mod = model.finish_module(mod)

    metadata = {
        "model_type": model_type,
        "quantization": quant.name,
        "context_window_size": sizes.context_window_size,
        "sliding_window_size": sizes.sliding_window_size,
        "attention_sink_size": sizes.attention_sink_size,
        "prefill_chunk_size": sizes.prefill_chunk_size,
        "tensor_parallel_shards": 1,
        "pipeline_parallel_stages": 1,
        "disaggregation": False,
        "kv_state_kind": "kv_cache",
        "max_batch_size": sizes.max_batch_size,
        # The order of this list IS the order of the packed parameter tuple.
        "params": [_param_metadata(name, param) for name, param in named_params],
        "memory_usage": {},
        "kv_cache": model.layout.metadata(),
    }
    mod = _attach_logit_functions(mod, target)
    if sampler.exports_sampler(target, request):
        mod = sampler.attach_sampler_functions(mod, target)
    mod = _attach_variable_bounds(mod, sizes)
    mod = _attach_metadata_function(mod, metadata)
    return ExportedModel(mod, metadata, [name for name, _ in named_params])


def _param_metadata(name: str, param: nn.Parameter) -> dict[str, Any]:
    shape = [dim if isinstance(dim, int) else str(dim.name) for dim in param.shape]
    return {
        "name": name,
        "shape": shape,  # a symbolic dim by name ("vocab_size"), resolved by the runtime
        "dtype": param.dtype,
        "preprocs": [],
        "pipeline_stages": [0],
    }


def _attach_variable_bounds(mod: tvm.IRModule, sizes: ModelSizes) -> tvm.IRModule:
    """Upper bounds of the symbolic sizes, so memory planning can allocate statically."""
    bounds = {
        "seq_len": sizes.prefill_chunk_size,
        "batch_size": sizes.max_batch_size,
        **sampler.sampler_variable_bounds(sizes.max_batch_size),
    }
    if sizes.context_window_size > 0:
        bounds["total_seq_len"] = sizes.context_window_size
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gvar] = func.with_attr("tir_var_upper_bound", bounds)
    return mod


def _attach_metadata_function(mod: tvm.IRModule, metadata: dict[str, Any]) -> tvm.IRModule:
    """`_metadata() -> str`: a Relax function (the runtime looks it up without imports).

    `memory_usage` is still empty here: the compile pipeline fills it in after memory planning
    by replacing this function with `metadata_function` (see compiler.py).
    """
    mod["_metadata"] = metadata_function(metadata)
    return mod


def metadata_function(metadata: dict[str, Any]) -> relax.Function:
    """The `_metadata` Relax function returning `metadata` as compact, key-sorted JSON."""
    text = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    bb = relax.BlockBuilder()
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(tvm.ir.StringImm(text))
    return bb.finalize()["_metadata"]


# ----------------------------------------------------------------------------------------------
# Functions on logits, the same for every model (MLC attaches them in its compile pipeline).

GREEDY_TEMPERATURE = 1e-5  # at or below: one-hot on the argmax (uniform over ties)


def _softmax_with_temperature_te(logits: te.Tensor, temperature: te.Tensor) -> te.Tensor:
    """probs[b, 0, v] = softmax(logits[b, 0, :] / T[b])[v], or one-hot argmax when T ~ 0."""
    batch, _, vocab = logits.shape

    def numerator(b: Any, v: Any, row_max: te.Tensor) -> Any:
        x = logits[b, 0, v]
        # if_then_else, not Select: the greedy branch must not evaluate x / 0.
        return tirx.if_then_else(
            temperature[b] > GREEDY_TEMPERATURE,
            tirx.exp((x - row_max[b]) / temperature[b]),
            tirx.if_then_else(
                x == row_max[b], tirx.const(1.0, "float32"), tirx.const(0.0, "float32")
            ),
        )

    k = te.reduce_axis((0, vocab), name="k")
    row_max = te.compute((batch,), lambda b: te.max(logits[b, 0, k], axis=k), name="row_max")
    k2 = te.reduce_axis((0, vocab), name="k2")
    row_sum = te.compute(
        (batch,), lambda b: te.sum(numerator(b, k2, row_max), axis=k2), name="row_sum"
    )
    return te.compute(
        (batch, 1, vocab), lambda b, _, v: numerator(b, v, row_max) / row_sum[b], name="probs"
    )


def _logit_processors(gpu: bool) -> list[tirx.PrimFunc]:
    """The in-place logit processors, one element per thread on GPUs, serial loops on CPUs.

    Hand-scheduled (`tirx.is_scheduled`): they update `logits` in place through index arrays,
    which schedule primitives (and so dlight) refuse to bind to threads.
    """
    tx_len = 256  # threads per block: the android/iphone targets' max_threads_per_block
    outer = functools.partial(T.thread_binding, thread="blockIdx.x") if gpu else T.serial
    inner = functools.partial(T.thread_binding, thread="threadIdx.x") if gpu else T.serial

    @T.prim_func
    def apply_logit_bias_inplace(
        var_logits: T.handle, var_pos2seq: T.handle, var_token_ids: T.handle, var_bias: T.handle
    ) -> None:
        # logits[pos2seq[i], token_ids[i]] += bias[i]
        T.func_attr(
            {
                "global_symbol": "apply_logit_bias_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_token = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        bias = T.match_buffer(var_bias, (num_token,), "float32")
        for bx in outer((num_token + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_token:
                    i = bx * tx_len + tx
                    logits[pos2seq[i], token_ids[i]] = logits[pos2seq[i], token_ids[i]] + bias[i]

    @T.prim_func
    def apply_penalty_inplace(
        var_logits: T.handle,
        var_seq_ids: T.handle,
        var_pos2seq: T.handle,
        var_token_ids: T.handle,
        var_token_cnt: T.handle,
        var_penalties: T.handle,
    ) -> None:
        # penalties[s] = (presence, frequency, repetition) of the s-th sequence of the call,
        # whose logits row is seq_ids[s].
        T.func_attr(
            {
                "global_symbol": "apply_penalty_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_token = T.int32()
        num_seq = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq = T.match_buffer(var_pos2seq, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for bx in outer((num_token + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_token:
                    i = bx * tx_len + tx
                    s = pos2seq[i]
                    shifted = logits[seq_ids[s], token_ids[i]] - (
                        penalties[s, 0] + T.Cast("float32", token_cnt[i]) * penalties[s, 1]
                    )
                    logits[seq_ids[s], token_ids[i]] = T.if_then_else(
                        shifted < T.float32(0), shifted * penalties[s, 2], shifted / penalties[s, 2]
                    )

    @T.prim_func
    def apply_bitmask_inplace(
        var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle
    ) -> None:
        # Token v of row seq_ids[s] survives iff bit v % 32 of word v // 32 is set; the others
        # get the lowest float32 (finite: a fully masked row still has a defined softmax).
        T.func_attr(
            {
                "global_symbol": "apply_bitmask_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_seq = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch_size, (vocab_size + 31) // 32), "int32")
        for bx in outer((num_seq * vocab_size + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_seq * vocab_size:
                    row = seq_ids[(bx * tx_len + tx) // vocab_size]
                    v = (bx * tx_len + tx) % vocab_size
                    word = bitmask[row, v // 32]
                    logits[row, v] = T.if_then_else(
                        T.bitwise_and(T.shift_right(word, v % 32), 1) == 1,
                        logits[row, v],
                        T.min_value("float32"),
                    )

    return [apply_logit_bias_inplace, apply_penalty_inplace, apply_bitmask_inplace]


def _attach_logit_functions(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Add `softmax_with_temperature` (Relax) and the three in-place logit processors (TIR).

    The processors carry a `global_symbol`, which both exports them (the runtime looks them up
    by name) and keeps dead-code elimination from dropping them: nothing in the module calls them.
    """
    bb = relax.BlockBuilder(mod)
    batch, vocab = tirx.Var("batch_size", "int64"), tirx.Var("vocab_size", "int64")
    logits = relax.Var("logits", relax.TensorType([batch, 1, vocab], "float32"))
    temperature = relax.Var("temperature", relax.TensorType([batch], "float32"))
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            probs = bb.emit_te(
                _softmax_with_temperature_te,
                logits,
                temperature,
                primfunc_name_hint="softmax_with_temperature_kernel",
            )
            out = bb.emit_output(probs)
        bb.emit_func_output(out)
    for func in _logit_processors(gpu="gpu" in target.keys):
        bb.add_func(func, str(func.attrs["global_symbol"]))
    return bb.finalize()
