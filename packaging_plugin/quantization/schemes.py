"""The quantization schemes by MLC's names (`q<bits>f<float bits>_<layout>`), without numpy or TVM:
the config checker, the converter and the compile child all read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

STORAGE_BITS = 32  # codes are packed into uint32 words


@dataclass(frozen=True)
class GroupLayout:
    """How a group-quantized weight is packed: `bits` per code, `group_size` codes per scale.

    Codes are packed along the input axis, `elems_per_word` to a uint32 word, code r of a word in
    bits `r*bits .. r*bits+bits-1` (lowest first); bits past the last whole code stay 0 (q3 uses
    30 of 32). A code c means `(c - max_int) * scale`.
    """

    bits: int
    group_size: int

    @property
    def elems_per_word(self) -> int:
        return STORAGE_BITS // self.bits

    @property
    def words_per_group(self) -> int:
        return self.group_size // self.elems_per_word

    @property
    def max_int(self) -> int:
        """The zero point: codes run 0 .. 2 * max_int."""
        return (1 << (self.bits - 1)) - 1

    def groups(self, in_features: int) -> int:
        """Groups along the input axis; the last is padded to a whole group."""
        return -(-in_features // self.group_size)

    def shapes(self, out_features: int, in_features: int) -> tuple[tuple[int, int], ...]:
        """(q_weight, q_scale) shapes of an `[out, in]` weight in the NK layout."""
        groups = self.groups(in_features)
        return (out_features, groups * self.words_per_group), (out_features, groups)


Q4 = GroupLayout(bits=4, group_size=32)  # 8 codes a word, 4 words a group
Q3 = GroupLayout(bits=3, group_size=40)  # 10 codes a word, 4 words a group


@dataclass(frozen=True)
class Quantization:
    """One quantization scheme, as MLC names it (`q<bits>f<float bits>_<layout>`)."""

    name: str
    model_dtype: str  # activations, norms, biases, scales
    group: GroupLayout | None = None  # None: plain cast ("q0")
    # Storage of quantized linear weights: "NK" ([out, in/8]) or "KN" (the same words transposed,
    # [in/8, out]). Embeddings are stored NK either way.
    linear_layout: str = "NK"

    @property
    def group_quantized(self) -> bool:
        return self.group is not None

    @property
    def layout(self) -> GroupLayout:
        """The group layout of a group-quantized scheme (ValueError for q0)."""
        if self.group is None:
            raise ValueError(f"{self.name} is not group-quantized")
        return self.group

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
    "q0f16": Quantization("q0f16", "float16"),
    "q0f32": Quantization("q0f32", "float32"),
    "q3f16_0": Quantization("q3f16_0", "float16", Q3, linear_layout="KN"),
    "q3f16_1": Quantization("q3f16_1", "float16", Q3),
    "q4f16_0": Quantization("q4f16_0", "float16", Q4, linear_layout="KN"),
    "q4f16_1": Quantization("q4f16_1", "float16", Q4),
    "q4f32_1": Quantization("q4f32_1", "float32", Q4),
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
