"""The export of one compile request into the Relax module a library is built from.

`export_model(request, target)` turns a compile request (see docs/architecture.md) into the Relax
IRModule that `pipeline.compile_library` builds: the functions of the family's model (the family
registry, families/__init__.py) with packed parameters, the model-independent functions the MLC
runtime calls on logits (`logits.py`), the GPU sampler functions where the runtime uses them
(`sampler.py`),
memory-planning bounds for the symbolic sizes, and `_metadata`, the JSON the MLC runtime reads
before anything else (its `memory_usage` is filled in by the compile pipeline, after planning).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import tvm
from tvm import relax
from tvm.relax.frontend import nn
from tvm.target import Target

from packaging_plugin import families
from packaging_plugin.compile import logits, sampler
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
    mod = logits.attach_logit_functions(mod, target)
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
    by replacing this function with `metadata_function` (see pipeline.py).
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
