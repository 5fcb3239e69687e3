"""Weight quantization layouts with MLC-LLM's names and bit packing.

Two halves:

- numpy (no TVM): `quantize_q4` / `dequantize_q4`, used by the demo model generator and by
  weight converters, and `get_quantization` describing each scheme;
- `tvm.relax.frontend.nn` layers `Linear` and `Embedding` whose parameters carry MLC's names
  (`weight`, or `q_weight` + `q_scale` for q4) and whose quantized forward dequantizes inside the
  same `te` reduction as the matmul, so no dequantized weight is ever written to memory.

The nn layers import TVM, so they are built on first attribute access (PEP 562 `__getattr__`):
importing this module for its numpy half stays cheap.

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

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUP_SIZE = 32  # elements sharing one scale
BITS = 4
ELEMS_PER_WORD = 32 // BITS  # 8 nibbles in a uint32
WORDS_PER_GROUP = GROUP_SIZE // ELEMS_PER_WORD  # 4
MAX_INT = (1 << (BITS - 1)) - 1  # 7: the zero point; codes run 0..14


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


# ----------------------------------------------------------------------------------------------
# tvm.relax.frontend.nn layers (TVM imported on first use)

_NN_LAYER_NAMES = ("Linear", "Embedding")


def __getattr__(name: str) -> Any:
    # PEP 562: `from ...quantization.packing import Linear` builds the TVM half on demand.
    if name in _NN_LAYER_NAMES:
        return _nn_layers()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _nn_layers() -> dict[str, type]:
    from tvm import te, tirx
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn import op

    def q4_value(
        q_weight: te.Tensor,
        q_scale: te.Tensor,
        row: Any,
        col: Any,
        dtype: str,
        transposed: bool = False,
    ) -> Any:
        """Element `[row, col]` of the dequantized `[N, K]` weight, as a TIR expression.

        `transposed`: the packed words and scales are stored KN, `[K/8, N]` and `[K/32, N]`.
        """
        if transposed:
            word = q_weight[col // ELEMS_PER_WORD, row]
            scale = q_scale[col // GROUP_SIZE, row]
        else:
            word = q_weight[row, col // ELEMS_PER_WORD]
            scale = q_scale[row, col // GROUP_SIZE]
        shift = ((col % ELEMS_PER_WORD) * BITS).astype("uint32")
        code = tirx.bitwise_and(tirx.shift_right(word, shift), tirx.const(0xF, "uint32"))
        return (code.astype(dtype) - tirx.const(MAX_INT, dtype)) * scale

    def weight_value(
        weights: list[te.Tensor], quantized: bool, dtype: str, transposed: bool = False
    ) -> Any:
        """A function (row, col) -> weight element, dequantizing when `quantized`."""
        if quantized:
            q_weight, q_scale = weights
            return lambda row, col: q4_value(q_weight, q_scale, row, col, dtype, transposed)
        (weight,) = weights
        return lambda row, col: weight[row, col]

    def linear_te(
        in_features: int, quantized: bool, acc_dtype: str, name: str, transposed: bool = False
    ) -> Any:
        """te: y[..., n] = sum_k x[..., k] * W[n, k], W read in its stored [out, in] layout.

        One reduction over the weight as stored: `matmul(x, permute_dims(W))` would make the CPU
        build transpose every weight on every call; for q4 the dequantization happens inside the
        reduction, so the full-precision weight is never materialized. `transposed`: the q4
        weight is stored KN (q4f16_0), read as such.
        """

        def compute(x: te.Tensor, *weights: te.Tensor) -> te.Tensor:
            w_at = weight_value(list(weights), quantized, weights[-1].dtype, transposed)
            k = te.reduce_axis((0, in_features), name="k")
            out_features = weights[0].shape[1 if transposed else 0]

            def body(*idx: Any) -> Any:
                x_val = x[(*idx[:-1], k)]
                w_val = w_at(idx[-1], k)
                if acc_dtype != x.dtype:
                    x_val = x_val.astype(acc_dtype)
                if acc_dtype != weights[-1].dtype:
                    w_val = w_val.astype(acc_dtype)
                return te.sum(x_val * w_val, axis=k)

            return te.compute((*x.shape[:-1], out_features), body, name=name)

        return compute

    class Linear(nn.Module):
        """`y = x @ W^T (+ b)` with MLC's parameter names for the given quantization.

        `out_features` may be a string (a symbolic dimension such as "vocab_size").
        `out_dtype` sets the accumulation and output dtype (float32 logits from a f16 model).
        """

        def __init__(
            self,
            in_features: int,
            out_features: int | str,
            quant: Quantization,
            *,
            bias: bool = False,
            out_dtype: str | None = None,
        ) -> None:
            super().__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.quant = quant
            self.out_dtype = out_dtype or quant.model_dtype
            if quant.linear_transposed:  # KN: the packed words and scales transposed
                (_, words), (_, groups) = q4_shapes(0, in_features)
                self.q_weight = nn.Parameter((words, out_features), "uint32")
                self.q_scale = nn.Parameter((groups, out_features), quant.model_dtype)
            elif quant.group_quantized:
                (_, words), (_, groups) = q4_shapes(0, in_features)
                self.q_weight = nn.Parameter((out_features, words), "uint32")
                self.q_scale = nn.Parameter((out_features, groups), quant.model_dtype)
            else:
                self.weight = nn.Parameter((out_features, in_features), quant.model_dtype)
            self.bias = nn.Parameter((out_features,), quant.model_dtype) if bias else None

        def weights(self) -> list[nn.Tensor]:
            if self.quant.group_quantized:
                return [self.q_weight, self.q_scale]
            return [self.weight]

        def forward(self, x: nn.Tensor) -> nn.Tensor:
            name = "dequantize_matmul" if self.quant.group_quantized else "matmul"
            compute = linear_te(
                self.in_features,
                self.quant.group_quantized,
                self.out_dtype,
                name,
                self.quant.linear_transposed,
            )
            y = op.tensor_expr_op(compute, name, [x, *self.weights()])
            if self.bias is not None:
                bias = self.bias if self.bias.dtype == y.dtype else self.bias.astype(y.dtype)
                y = y + bias
            return y

    class Embedding(nn.Module):
        """Token embedding `[num, dim]` (num may be "vocab_size"); also the tied lm_head."""

        def __init__(self, num: int | str, dim: int, quant: Quantization) -> None:
            super().__init__()
            self.num = num
            self.dim = dim
            self.quant = quant
            if quant.group_quantized:
                (_, words), (_, groups) = q4_shapes(0, dim)
                self.q_weight = nn.Parameter((num, words), "uint32")
                self.q_scale = nn.Parameter((num, groups), quant.model_dtype)
            else:
                self.weight = nn.Parameter((num, dim), quant.model_dtype)

        def weights(self) -> list[nn.Tensor]:
            if self.quant.group_quantized:
                return [self.q_weight, self.q_scale]
            return [self.weight]

        def forward(self, ids: nn.Tensor) -> nn.Tensor:
            """`[n]` int32 token ids -> `[n, dim]` rows (dequantized for q4)."""
            if not self.quant.group_quantized:
                return op.take(self.weight, ids, axis=0)
            dim, dtype = self.dim, self.quant.model_dtype

            def compute(ids_te: te.Tensor, q_weight: te.Tensor, q_scale: te.Tensor) -> te.Tensor:
                return te.compute(
                    (ids_te.shape[0], dim),
                    lambda i, j: q4_value(q_weight, q_scale, ids_te[i], j, dtype),
                    name="dequantize_take",
                )

            return op.tensor_expr_op(compute, "dequantize_take", [ids, *self.weights()])

        def lm_head_forward(self, x: nn.Tensor) -> nn.Tensor:
            """Logits from tied embeddings: `x @ E^T`, accumulated and returned in float32."""
            name = "lm_head_dequantize_matmul" if self.quant.group_quantized else "lm_head_matmul"
            compute = linear_te(self.dim, self.quant.group_quantized, "float32", name)
            return op.tensor_expr_op(compute, name, [x, *self.weights()])

    return {"Linear": Linear, "Embedding": Embedding}
