"""The `tvm.relax.frontend.nn` layers of the quantized layouts (imports TVM).

`Linear` and `Embedding` carry MLC's parameter names (`weight`, or `q_weight` + `q_scale` for the
group-quantized schemes, q4 and q3) and their quantized forward dequantizes inside the same `te`
reduction as the matmul, so no dequantized weight is ever written to memory. The layouts are
described in `packing.py`.
"""

from __future__ import annotations

from typing import Any

from tvm import te, tirx
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op

from packaging_plugin.quantization.schemes import GroupLayout, Quantization


def group_value(
    q_weight: te.Tensor,
    q_scale: te.Tensor,
    row: Any,
    col: Any,
    dtype: str,
    layout: GroupLayout,
    transposed: bool = False,
) -> Any:
    """Element `[row, col]` of the dequantized `[N, K]` weight, as a TIR expression.

    `transposed`: the packed words and scales are stored KN, `[words, N]` and `[groups, N]`.
    """
    per_word, group = layout.elems_per_word, layout.group_size
    if transposed:
        word = q_weight[col // per_word, row]
        scale = q_scale[col // group, row]
    else:
        word = q_weight[row, col // per_word]
        scale = q_scale[row, col // group]
    shift = ((col % per_word) * layout.bits).astype("uint32")
    mask = tirx.const((1 << layout.bits) - 1, "uint32")
    code = tirx.bitwise_and(tirx.shift_right(word, shift), mask)
    return (code.astype(dtype) - tirx.const(layout.max_int, dtype)) * scale


def weight_value(
    weights: list[te.Tensor], layout: GroupLayout | None, dtype: str, transposed: bool = False
) -> Any:
    """A function (row, col) -> weight element, dequantizing when `layout` is given."""
    if layout is not None:
        q_weight, q_scale = weights
        return lambda row, col: group_value(q_weight, q_scale, row, col, dtype, layout, transposed)
    (weight,) = weights
    return lambda row, col: weight[row, col]


def linear_te(
    in_features: int,
    layout: GroupLayout | None,
    acc_dtype: str,
    name: str,
    transposed: bool = False,
) -> Any:
    """te: y[..., n] = sum_k x[..., k] * W[n, k], W read in its stored [out, in] layout.

    One reduction over the weight as stored: `matmul(x, permute_dims(W))` would make the CPU
    build transpose every weight on every call; for a group-quantized weight (`layout`) the
    dequantization happens inside the reduction, so the full-precision weight is never
    materialized. `transposed`: the quantized weight is stored KN (q4f16_0, q3f16_0).
    """

    def compute(x: te.Tensor, *weights: te.Tensor) -> te.Tensor:
        w_at = weight_value(list(weights), layout, weights[-1].dtype, transposed)
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
            (_, words), (_, groups) = quant.layout.shapes(0, in_features)
            self.q_weight = nn.Parameter((words, out_features), "uint32")
            self.q_scale = nn.Parameter((groups, out_features), quant.model_dtype)
        elif quant.group_quantized:
            (_, words), (_, groups) = quant.layout.shapes(0, in_features)
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
            self.quant.group,
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
            (_, words), (_, groups) = quant.layout.shapes(0, dim)
            self.q_weight = nn.Parameter((num, words), "uint32")
            self.q_scale = nn.Parameter((num, groups), quant.model_dtype)
        else:
            self.weight = nn.Parameter((num, dim), quant.model_dtype)

    def weights(self) -> list[nn.Tensor]:
        if self.quant.group_quantized:
            return [self.q_weight, self.q_scale]
        return [self.weight]

    def forward(self, ids: nn.Tensor) -> nn.Tensor:
        """`[n]` int32 token ids -> `[n, dim]` rows (dequantized when group-quantized)."""
        if not self.quant.group_quantized:
            return op.take(self.weight, ids, axis=0)
        dim, dtype, layout = self.dim, self.quant.model_dtype, self.quant.layout

        def compute(ids_te: te.Tensor, q_weight: te.Tensor, q_scale: te.Tensor) -> te.Tensor:
            return te.compute(
                (ids_te.shape[0], dim),
                lambda i, j: group_value(q_weight, q_scale, ids_te[i], j, dtype, layout),
                name="dequantize_take",
            )

        return op.tensor_expr_op(compute, "dequantize_take", [ids, *self.weights()])

    def lm_head_forward(self, x: nn.Tensor) -> nn.Tensor:
        """Logits from tied embeddings: `x @ E^T`, accumulated and returned in float32."""
        name = "lm_head_dequantize_matmul" if self.quant.group_quantized else "lm_head_matmul"
        compute = linear_te(self.dim, self.quant.group, "float32", name)
        return op.tensor_expr_op(compute, name, [x, *self.weights()])
