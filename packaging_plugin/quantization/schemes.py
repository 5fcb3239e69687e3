"""The quantization schemes by MLC's names (`q<bits>f<float bits>_<layout>`), without numpy or TVM:
the config checker, the converter and the compile child all read them here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantization:
    """One quantization scheme, as MLC names it (`q<bits>f<float bits>_<layout>`)."""

    name: str
    model_dtype: str  # activations, norms, biases, scales
    group_quantized: bool  # False: plain cast ("q0"); True: 4-bit group quantization
    # Storage of quantized linear weights: "NK" ([out, in/8]) or "KN" (the same words transposed,
    # [in/8, out]). Embeddings are stored NK either way.
    linear_layout: str = "NK"

    @property
    def linear_transposed(self) -> bool:
        """Whether quantized linear weights are stored KN (transposed)."""
        return self.group_quantized and self.linear_layout == "KN"

    def weight_names(self, prefix: str) -> tuple[str, ...]:
        """Parameter names a quantizable weight `prefix.weight` turns into."""
        if self.group_quantized:
            return (f"{prefix}.q_weight", f"{prefix}.q_scale")
        return (f"{prefix}.weight",)


QUANTIZATIONS: dict[str, Quantization] = {
    "q0f16": Quantization("q0f16", "float16", group_quantized=False),
    "q0f32": Quantization("q0f32", "float32", group_quantized=False),
    "q4f16_0": Quantization("q4f16_0", "float16", group_quantized=True, linear_layout="KN"),
    "q4f16_1": Quantization("q4f16_1", "float16", group_quantized=True),
    "q4f32_1": Quantization("q4f32_1", "float32", group_quantized=True),
}


def get_quantization(name: str) -> Quantization:
    """The scheme called `name`; ValueError naming the supported ones otherwise."""
    try:
        return QUANTIZATIONS[name]
    except KeyError:
        raise ValueError(
            f"unsupported quantization {name!r}; supported: {', '.join(QUANTIZATIONS)}"
        ) from None


SUPPORTED_QUANTIZATIONS: tuple[str, ...] = tuple(QUANTIZATIONS)
