"""Weight quantization layouts with MLC-LLM's names and bit packing.

numpy only (no TVM): `quantize_q4` / `dequantize_q4`, used by the demo model generator and the
weight converter. The nn layers that read these layouts are in `layers.py`; the schemes' names
and dtypes in `schemes.py`.

q4 layout ("NK", MLC's `q4f16_1` / `q4f32_1`): a weight `[N, K]` is grouped along K in groups of 32;
`scale = max|w| / 7` per group (stored in the model dtype, `[N, ceil(K/32)]`); each element becomes
`clamp(round(w / scale + 7), 0, 14)` and eight of them fill one uint32 word, element r of the eight
in bits `4r..4r+3` (lowest nibble first), giving `[N, ceil(K/32) * 4]` words.

q4 "KN" layout (MLC's `q4f16_0`, used by MLC's own Android example): quantized and packed exactly
as NK, along K, then the packed linear weight and its scales are stored TRANSPOSED:
`q_weight [ceil(K/32) * 4, N]`, `q_scale [ceil(K/32), N]`, so one row of words holds the same
eight input positions for every output. Embeddings (and a tied lm_head, which reads them) stay NK:
MLC quantizes embeddings without the transpose.
"""

from __future__ import annotations

import numpy as np

GROUP_SIZE = 32  # elements sharing one scale
BITS = 4
ELEMS_PER_WORD = 32 // BITS  # 8 nibbles in a uint32
WORDS_PER_GROUP = GROUP_SIZE // ELEMS_PER_WORD  # 4
MAX_INT = (1 << (BITS - 1)) - 1  # 7: the zero point; codes run 0..14


def q4_shapes(out_features: int, in_features: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Shapes of (q_weight, q_scale) for a `[out_features, in_features]` weight."""
    groups = -(-in_features // GROUP_SIZE)
    return (out_features, groups * WORDS_PER_GROUP), (out_features, groups)


def quantize_q4(
    weight: np.ndarray, dtype: str | np.dtype, *, transposed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize `weight` (`[..., K]`, grouped along the last axis) to MLC's q4 "_1" layout.

    Returns `(q_weight uint32 [..., ceil(K/32)*4], q_scale dtype [..., ceil(K/32)])`. K is padded
    with zeros to a whole group, as MLC does. An all-zero group gets scale 0 and code 7 (value 0)
    instead of the NaNs a plain `w / scale` would give. `transposed` (2-D weights only) returns
    both arrays transposed, the "KN" layout of `q4f16_0` linear weights.
    """
    if transposed:
        if np.ndim(weight) != 2:
            raise ValueError(f"the KN layout needs a 2-D weight, got shape {np.shape(weight)}")
        q_weight, q_scale = quantize_q4(weight, dtype)
        return np.ascontiguousarray(q_weight.T), np.ascontiguousarray(q_scale.T)
    w = np.asarray(weight, dtype=np.float32)
    *lead, k = w.shape
    groups = -(-k // GROUP_SIZE)
    if groups * GROUP_SIZE != k:
        w = np.concatenate([w, np.zeros((*lead, groups * GROUP_SIZE - k), np.float32)], axis=-1)
    w = w.reshape(*lead, groups, GROUP_SIZE)
    # The scale is rounded to its storage dtype first, so that codes are chosen against the
    # same scale the dequantizer will multiply by.
    q_scale = (np.abs(w).max(axis=-1) / MAX_INT).astype(dtype)
    scale = q_scale.astype(np.float32)[..., None]
    zero = scale == 0
    codes = np.clip(np.round(w / np.where(zero, 1.0, scale) + MAX_INT), 0, 2 * MAX_INT)
    codes = np.where(zero, MAX_INT, codes).astype(np.uint32)
    codes = codes.reshape(*lead, groups * WORDS_PER_GROUP, ELEMS_PER_WORD)
    shifts = (np.arange(ELEMS_PER_WORD, dtype=np.uint32) * BITS).astype(np.uint32)
    q_weight = np.bitwise_or.reduce(codes << shifts, axis=-1).astype(np.uint32)
    return q_weight, q_scale


def dequantize_q4(
    q_weight: np.ndarray,
    q_scale: np.ndarray,
    in_features: int | None = None,
    dtype: str | np.dtype | None = None,
    *,
    transposed: bool = False,
) -> np.ndarray:
    """Inverse of `quantize_q4`: `[..., K]` values in `dtype` (default: the scale's dtype).

    `in_features` drops the zero padding of the last group (default: all of it, `words * 8`).
    `transposed`: the inputs are in the KN layout (`[words, N]`, `[groups, N]`); the result is
    still the `[N, K]` weight.
    """
    if transposed:
        q_weight, q_scale = np.asarray(q_weight).T, np.asarray(q_scale).T
    q_weight = np.asarray(q_weight, dtype=np.uint32)
    q_scale = np.asarray(q_scale)
    shifts = (np.arange(ELEMS_PER_WORD, dtype=np.uint32) * BITS).astype(np.uint32)
    codes = (q_weight[..., None] >> shifts) & np.uint32(0xF)
    codes = codes.reshape(*q_weight.shape[:-1], q_weight.shape[-1] * ELEMS_PER_WORD)
    scale = np.repeat(q_scale.astype(np.float32), GROUP_SIZE, axis=-1)[..., : codes.shape[-1]]
    values = (codes.astype(np.float32) - MAX_INT) * scale
    if in_features is not None:
        values = values[..., :in_features]
    return values.astype(dtype if dtype is not None else q_scale.dtype)
