"""What every family's `mapping.py` shares: one MLC parameter and the checkpoint tensors it is
made of.

A family's `plan_params(model_type, model_config)` lists MLC's parameters in the packed order of
the compiled model (`_metadata.params`), each with the Hugging Face tensors it is made of. No TVM,
no numpy: plain data that the converter streams (sources/convert.py) and tests compare against
compiled libraries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParamPlan:
    """One MLC parameter (before quantization) and the HF tensors it is made of."""

    name: str  # MLC name, ending in ".weight" or ".bias"
    sources: tuple[str, ...]  # HF tensor names, concatenated along axis 0
    quantizable: bool  # a linear or embedding weight (q4 turns it into q_weight + q_scale)
    embedding: bool = False  # stored NK even under a KN quantization (q4f16_0), as in MLC
    offset: float = 0.0  # added to every element (Gemma's RMSNorm weights are stored + 1)
    transposed: bool = False  # stored [in, out] (GPT-2's Conv1D): written as [out, in]
    # (blocks, parts): the rows are `blocks` runs of `parts` equal pieces each, written piece by
    # piece instead: GPT-NeoX's fused QKV holds [q, k, v] per head, MLC's [all q; all k; all v].
    deinterleave: tuple[int, int] | None = None
    # Stored in this dtype whatever the quantization's model dtype (a non-quantized tensor only):
    # MLC keeps GPT-NeoX's MLP biases in float32 in float16 models.
    dtype: str | None = None


def layer_norms(hf: str, mlc: str, names: tuple[str, ...], offset: float = 0.0) -> list[ParamPlan]:
    """Norm weights `<mlc>.<name>.weight` from `<hf>.<name>.weight`, for each name."""
    return [
        ParamPlan(f"{mlc}.{n}.weight", (f"{hf}.{n}.weight",), False, offset=offset) for n in names
    ]


def fused(mlc: str, hf_parts: tuple[str, ...], suffix: str = "weight") -> ParamPlan:
    """`<mlc>.<suffix>` as the concatenation of the parts' `<suffix>` tensors (axis 0)."""
    return ParamPlan(f"{mlc}.{suffix}", tuple(f"{p}.{suffix}" for p in hf_parts), suffix != "bias")


def gated_mlp(hf_layer: str, mlc_layer: str) -> list[ParamPlan]:
    """`gate_up_proj` ([gate; up]) and `down_proj` from the checkpoint's separate gate and up."""
    parts = (f"{hf_layer}.mlp.gate_proj", f"{hf_layer}.mlp.up_proj")
    return [
        fused(f"{mlc_layer}.mlp.gate_up_proj", parts),
        fused(f"{mlc_layer}.mlp.down_proj", (f"{hf_layer}.mlp.down_proj",)),
    ]


def embedding(mlc: str, hf: str) -> ParamPlan:
    """A token embedding: quantizable, and stored NK whatever the linear layout."""
    return ParamPlan(mlc, (hf,), True, embedding=True)
