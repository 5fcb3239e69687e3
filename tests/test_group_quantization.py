"""Group quantization (q4 and q3, NK and KN) packs exactly as MLC's converter packs.

The reference is MLC-LLM's definition of group quantization written out as a TVM `te` function
(per group: max |w| over the real elements, scale = max / max_int in the model dtype, codes
clamp(round(w / scale + max_int), 0, 2 * max_int), `elems_per_word` codes shifted into each uint32
word, positions past K left 0, the KN layout transposed), built for the CPU and run. Our numpy
packing must give the same words and scales, bit for bit, for float32 and float16, with padded
last groups and all-zero groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from packaging_plugin.quantization.packing import dequantize_groups, quantize_groups
from packaging_plugin.quantization.schemes import Q3, Q4, QUANTIZATIONS, GroupLayout


def reference_quantize(
    weight: np.ndarray, layout: GroupLayout, dtype: str, transposed: bool
) -> tuple[np.ndarray, np.ndarray]:
    """MLC's group quantization definition, built with TVM for the CPU and run on `weight`."""
    import tvm
    from tvm import te, tirx, topi

    n, k = weight.shape
    group, per_word, bits = layout.group_size, layout.elems_per_word, layout.bits
    groups = -(-k // group)
    words = groups * layout.words_per_group
    max_int = tirx.const(layout.max_int, dtype)
    w = te.placeholder((n, k), dtype, name="w")
    r = te.reduce_axis((0, group), name="r")

    def max_abs_body(i: Any, g: Any) -> Any:
        col = g * group + r
        inside = tirx.if_then_else(col < k, te.abs(w[i, col]), te.min_value(dtype))
        return te.max(inside, axis=r)

    max_abs = te.compute((n, groups), max_abs_body, name="max_abs")
    scale = te.compute((n, groups), lambda i, g: max_abs[i, g] / max_int, name="scale")

    def code_body(i: Any, j: Any) -> Any:
        rounded = tirx.round(w[i, j] / scale[i, j // group] + max_int)
        clamped = tirx.min(tirx.max(rounded, tirx.const(0, dtype)), max_int * 2)
        return clamped.astype("uint32")

    codes = te.compute((n, k), code_body, name="codes")
    e = te.reduce_axis((0, per_word), name="e")

    def word_body(i: Any, j: Any) -> Any:
        col = j * per_word + e
        shifted = codes[i, col] << (e * bits).astype("uint32")
        return te.sum(tirx.if_then_else(col < k, shifted, tirx.const(0, "uint32")), axis=e)

    packed = te.compute((n, words), word_body, name="packed")
    outputs = [packed, scale]
    if transposed:
        outputs = [topi.transpose(packed), topi.transpose(scale)]
    built = tvm.tirx.build(te.create_prim_func([w, *outputs]), target="llvm")
    result = [np.zeros([int(d) for d in t.shape], str(t.dtype)) for t in outputs]
    args = [tvm.runtime.tensor(weight.astype(dtype)), *map(tvm.runtime.tensor, result)]
    built(*args)
    return args[1].numpy(), args[2].numpy()


def sample_weight(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Random weights with an all-zero group, a row of one value and a spread of magnitudes."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 3.0, (shape[0], 1))
    w[0, :40] = 0.0  # a whole group of zeros in both layouts (and a zero scale)
    w[1, :] = 0.25
    return w


SCHEMES = [name for name, quant in QUANTIZATIONS.items() if quant.group_quantized]


@pytest.mark.parametrize("k", [80, 96, 100])  # whole q3 groups; whole q4 groups; padded for both
@pytest.mark.parametrize("scheme", SCHEMES)
def test_packing_is_bit_identical_to_mlcs_definition(scheme: str, k: int) -> None:
    quant = QUANTIZATIONS[scheme]
    weight = sample_weight((6, k), seed=k)
    transposed = quant.linear_transposed
    expected_words, expected_scales = reference_quantize(
        weight, quant.layout, quant.model_dtype, transposed
    )
    words, scales = quantize_groups(weight, quant.model_dtype, quant.layout, transposed=transposed)
    assert words.dtype == np.uint32 and scales.dtype == np.dtype(quant.model_dtype)
    assert words.shape == expected_words.shape and scales.shape == expected_scales.shape
    np.testing.assert_array_equal(scales, expected_scales)
    np.testing.assert_array_equal(words, expected_words)


def test_q3_packs_ten_codes_a_word_lowest_first_and_pads_with_zero_bits() -> None:
    # K = 50: one whole group of 40 and a padded one. Row 0 holds codes 0..6 (scale 1: w = c - 3)
    # then 3s; its second group has max 3 at k = 40.
    codes = [0, 1, 2, 3, 4, 5, 6, 3, 3, 3] * 4 + [6] + [3] * 9
    w = np.array([codes], np.float32) - 3
    q_weight, q_scale = quantize_groups(w, np.float16, Q3)
    assert q_weight.shape == (1, 8) and q_scale.shape == (1, 2)  # [N, ceil(K/40) * 4], [N, 2]
    word = sum(c << (3 * r) for r, c in enumerate(codes[:10]))
    assert q_weight[0, 0] == word and q_weight[0, 0] >> 30 == 0  # the top two bits unused
    assert q_weight[0, 4] == 6 + sum(3 << (3 * r) for r in range(1, 10))
    assert q_weight[0, 5:].tolist() == [0, 0, 0]  # padding: code 0, as MLC packs it
    assert q_scale.tolist() == [[1.0, 1.0]]
    back = dequantize_groups(q_weight, q_scale, Q3, in_features=50, dtype=np.float32)
    np.testing.assert_array_equal(back, w)


@pytest.mark.parametrize("layout", [Q4, Q3], ids=["q4", "q3"])
def test_the_error_is_at_most_half_a_step(layout: GroupLayout) -> None:
    w = sample_weight((5, 130), seed=3)
    q_weight, q_scale = quantize_groups(w, np.float32, layout)
    assert q_weight.shape == layout.shapes(5, 130)[0]
    back = dequantize_groups(q_weight, q_scale, layout, in_features=130)
    steps = np.repeat(q_scale, layout.group_size, axis=1)[:, :130]
    assert np.all(np.abs(back - w) <= steps / 2 + 1e-6)
    assert np.all(back[0, :40] == 0)  # the zero group comes back as zeros, not NaN


def test_the_layouts_have_mlcs_sizes() -> None:
    assert (Q4.elems_per_word, Q4.words_per_group, Q4.max_int) == (8, 4, 7)
    assert (Q3.elems_per_word, Q3.words_per_group, Q3.max_int) == (10, 4, 3)
    # Llama-3-8B's hidden size, 4096: 103 groups of 40 (the last one padded), 412 words a row.
    assert Q3.shapes(14336, 4096) == ((14336, 412), (14336, 103))
    assert QUANTIZATIONS["q3f16_0"].linear_transposed
    assert not QUANTIZATIONS["q3f16_1"].linear_transposed
