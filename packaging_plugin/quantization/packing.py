"""Group quantization with MLC-LLM's names, arithmetic and bit packing.

numpy only (no TVM): `quantize_groups` / `dequantize_groups`, used by the demo model generator
and the weight converter. The nn layers that read these layouts are in `layers.py`; the schemes'
names, dtypes and group layouts (`GroupLayout`: q4 and q3) in `schemes.py`.

NK layout (MLC's `q4f16_1`, `q4f32_1`, `q3f16_1`): a weight `[N, K]`, cast to the model dtype, is
grouped along K (groups of 32 for q4, 40 for q3, K padded to whole groups); per group
`scale = max|w| / max_int` (7 for q4, 3 for q3), and each element becomes
`clamp(round(w / scale + max_int), 0, 2 * max_int)`, computed in the model dtype with round half
to even, as MLC's converter computes it. The codes are packed along K into uint32 words, code r
of a word in bits `r*bits ..` (lowest first): eight 4-bit or ten 3-bit codes a word, giving
`q_weight [N, groups * 4]` and `q_scale [N, groups]`. Padding positions, and every element of an
all-zero group (scale 0), get code 0, as in MLC's packing; a scale of 0 dequantizes them to 0.

KN layout (MLC's `q4f16_0`, `q3f16_0`): quantized and packed exactly as NK, along K, then the
packed linear weight and its scales are stored TRANSPOSED: `q_weight [groups * 4, N]`,
`q_scale [groups, N]`. Embeddings (and a tied lm_head, which reads them) stay NK: MLC quantizes
embeddings without the transpose.
"""

from __future__ import annotations

import numpy as np

from packaging_plugin.quantization.schemes import GroupLayout


def _pad_last_axis(w: np.ndarray, size: int) -> np.ndarray:
    if w.shape[-1] == size:
        return w
    pad = np.zeros((*w.shape[:-1], size - w.shape[-1]), w.dtype)
    return np.concatenate([w, pad], axis=-1)


def quantize_groups(
    weight: np.ndarray, dtype: str | np.dtype, layout: GroupLayout, *, transposed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize `weight` (`[..., K]`, grouped along the last axis) in `layout`.

    Returns `(q_weight uint32 [..., groups * words_per_group], q_scale dtype [..., groups])`.
    `transposed` (2-D weights only) returns both arrays transposed, the "KN" layout.
    """
    if transposed:
        if np.ndim(weight) != 2:
            raise ValueError(f"the KN layout needs a 2-D weight, got shape {np.shape(weight)}")
        q_weight, q_scale = quantize_groups(weight, dtype, layout)
        return np.ascontiguousarray(q_weight.T), np.ascontiguousarray(q_scale.T)
    model_dtype = np.dtype(dtype)
    # MLC quantizes the weight as loaded into the model, in the model dtype.
    w = np.asarray(weight).astype(model_dtype, copy=False)
    *lead, k = w.shape
    groups = layout.groups(k)
    padded = groups * layout.group_size
    in_range = np.arange(padded) < k
    w = _pad_last_axis(w, padded).reshape(*lead, groups, layout.group_size)
    max_int = model_dtype.type(layout.max_int)
    # Division and addition in the model dtype (float32 holds a float16 quotient exactly enough
    # for it to round as a float16 division would).
    q_scale = (np.abs(w).max(axis=-1) / max_int).astype(model_dtype)
    scale = q_scale[..., None]
    zero = scale == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = (w / np.where(zero, model_dtype.type(1), scale)).astype(model_dtype) + max_int
    codes = np.clip(np.round(scaled), 0, 2 * layout.max_int)
    codes = np.where(zero, 0, codes).reshape(*lead, padded)
    codes = np.where(in_range, codes, 0).astype(np.uint32)
    words = codes.reshape(*lead, groups * layout.words_per_group, layout.elems_per_word)
    shifts = (np.arange(layout.elems_per_word, dtype=np.uint32) * layout.bits).astype(np.uint32)
    q_weight = np.bitwise_or.reduce(words << shifts, axis=-1).astype(np.uint32)
    return q_weight, q_scale


def dequantize_groups(
    q_weight: np.ndarray,
    q_scale: np.ndarray,
    layout: GroupLayout,
    in_features: int | None = None,
    dtype: str | np.dtype | None = None,
    *,
    transposed: bool = False,
) -> np.ndarray:
    """Inverse of `quantize_groups`: `[..., K]` values in `dtype` (default: the scale's dtype).

    `in_features` drops the padding of the last group (default: all of it, `groups *
    group_size`). `transposed`: the inputs are in the KN layout (`[words, N]`, `[groups, N]`);
    the result is still the `[N, K]` weight.
    """
    if transposed:
        q_weight, q_scale = np.asarray(q_weight).T, np.asarray(q_scale).T
    q_weight = np.asarray(q_weight, dtype=np.uint32)
    q_scale = np.asarray(q_scale)
    shifts = (np.arange(layout.elems_per_word, dtype=np.uint32) * layout.bits).astype(np.uint32)
    mask = np.uint32((1 << layout.bits) - 1)
    codes = (q_weight[..., None] >> shifts) & mask
    codes = codes.reshape(*q_weight.shape[:-1], q_weight.shape[-1] * layout.elems_per_word)
    scale = np.repeat(q_scale.astype(np.float32), layout.group_size, axis=-1)
    values = (codes.astype(np.float32) - layout.max_int) * scale[..., : codes.shape[-1]]
    if in_features is not None:
        values = values[..., :in_features]
    return values.astype(dtype if dtype is not None else q_scale.dtype)
