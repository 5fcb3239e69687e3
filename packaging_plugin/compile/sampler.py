"""The GPU sampler functions of the MLC runtime: sampling on the device, from probabilities.

On Metal (iphone, macabi) the MLC runtime samples on the GPU and looks these Relax functions
up by name; without them it cannot generate. Their contract (notes/mlc-model-lib-abi.md, and
MLC-LLM's `compiler_pass/attach_sampler.py` and `serve/sampler/gpu_sampler.cc`, which read
exactly these arguments) is, with B rows of probabilities over V tokens, N samples, P positions:

- `multinomial_from_uniform(probs f32[B, V], uniform f32[N], sample_idx i32[N]) -> i32[N]`
- `argsort_probs(probs f32[B, V]) -> (sorted f32[B, V], idx i32[B, V])`, descending
- `sample_with_top_p(sorted, idx, uniform f32[N], sample_idx i32[N], top_p f32[B]) -> i32[N]`
- `sampler_take_probs(probs, idx, sample_idx i32[N], sampled i32[N], top_prob_offsets i32[P])
  -> (f32[N], f32[P], i32[P])`
- and `renormalize_by_top_p(probs f32[B, V], top_p f32[B], init_pivots f32[B, 3]) -> f32[B, V]`:
  not checked at load, but the GPU sampler calls it before sampling whenever a request's top_p
  is below 1 (`BatchRenormalizeProbsByTopP` in MLC's gpu_sampler.cc), so a library without it
  fails on Metal at the first such request.

Each function's comment below states its semantics exactly.

They are built from TVM's own operators (`multinomial_from_uniform`, `argsort`, the nn top-p
sampler), which `DispatchSampling`/`DispatchSortScan` lower to GPU kernels on GPU targets; on the
CPU, plain loops and a TIR merge sort (see `_emit_argsort`).

Which targets get them (`exports_sampler`): Metal, where the runtime requires them. A request with
`"gpu_sampler": true` gets them on any target: the tests build linux libraries that way to check
these very Relax graphs against numpy. They are not in linux packages by default because the CPU
lowering makes TVM 0.27's shape function codegen vary from build to build (measured: 2 of 4
builds of one request differed in 13 bytes of `shape_func`), and packages must be reproducible;
the MLC runtime samples on the CPU there anyway. Not OpenCL: there the MLC runtime samples on the
CPU and never calls them (MLC's own compiler skips them too), and their GPU sort and scan kernels
would add about 3 s to every Android compile (measured: a tiny model went from 8 s to 14 s).
"""

from __future__ import annotations

from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.relax.frontend import nn
from tvm.script import tirx as T
from tvm.target import Target

SAMPLER_FUNCTIONS = (
    "multinomial_from_uniform",
    "argsort_probs",
    "sample_with_top_p",
    "sampler_take_probs",
)
# Not checked when the runtime loads the library, but its GPU sampler calls it before sampling
# whenever a request's top_p is below 1, so Metal needs it too (see the module docstring).
TOP_P_RENORM_FUNCTION = "renormalize_by_top_p"


# Target kinds whose libraries carry the sampler functions (see the module docstring).
SAMPLER_TARGET_KINDS = frozenset({"metal"})


def exports_sampler(target: Target, request: dict[str, Any]) -> bool:
    """Whether the library of `request` for `target` exports the sampler functions."""
    return bool(request.get("gpu_sampler", target.kind.name in SAMPLER_TARGET_KINDS))


def sampler_variable_bounds(max_batch_size: int) -> dict[str, int]:
    """Upper bounds of the sampler's symbolic sizes for static memory planning.

    MLC's values: one sample per sequence of the batch, and 6 top-probability positions per
    sample (its runtime asks for at most 5). Calls must stay within them: buffers planned for
    the bound are not checked at run time (a call with 2x the rows raised no error).
    """
    return {"num_samples": max_batch_size, "num_positions": 6 * max_batch_size}


def attach_sampler_functions(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Add the sampler functions listed above to `mod`."""
    bb = relax.BlockBuilder(mod)
    _multinomial_from_uniform(bb)
    _argsort_probs(bb, gpu="gpu" in target.keys)
    _sample_with_top_p(bb)
    _sampler_take_probs(bb)
    _renormalize_by_top_p(bb, gpu="gpu" in target.keys)
    return bb.finalize()


class _Sizes:
    """The symbolic sizes shared by the four functions (same names as MLC's)."""

    def __init__(self) -> None:
        self.batch = tirx.Var("batch_size", "int64")
        self.vocab = tirx.Var("vocab_size", "int64")
        self.samples = tirx.Var("num_samples", "int64")
        self.positions = tirx.Var("num_positions", "int64")

    def probs(self, name: str, dtype: str = "float32") -> relax.Var:
        return relax.Var(name, relax.TensorType([self.batch, self.vocab], dtype))

    def per_sample(self, name: str, dtype: str) -> relax.Var:
        return relax.Var(name, relax.TensorType([self.samples], dtype))


def _column(bb: relax.BlockBuilder, x: relax.Expr, name: str) -> nn.Tensor:
    """[n] -> [n, 1] (a view after lowering): TVM's sampling operators take column vectors."""
    return nn.wrap_nested(bb.emit(relax.op.reshape(x, [x.ty.shape[0], 1])), name=name)


def _flat(bb: relax.BlockBuilder, x: nn.Tensor) -> relax.Var:
    """[n, 1] -> [n], the runtime's layout for per-sample results."""
    expr = x._expr  # nn.Tensor exposes no public accessor for its Relax expression
    return bb.emit(relax.op.reshape(expr, [expr.ty.shape[0]]))


def _multinomial_from_uniform(bb: relax.BlockBuilder) -> None:
    # out[i] = the first token v of row sample_idx[i] whose cumulative probability exceeds
    # uniform[i] (TVM's operator; on CPUs cumsum + search; on GPUs a block-parallel scan that
    # compares with a 1e-6 tolerance and never picks a zero-probability token).
    s = _Sizes()
    probs = s.probs("probs")
    uniform = s.per_sample("uniform_samples", "float32")
    sample_idx = s.per_sample("sample_indices", "int32")
    with bb.function("multinomial_from_uniform", [probs, uniform, sample_idx]):
        with bb.dataflow():
            sampled = nn.op.multinomial_from_uniform(
                nn.wrap_nested(probs, name="probs"),
                _column(bb, uniform, "uniform_samples"),
                _column(bb, sample_idx, "sample_indices"),
                dtype="int32",
            )
            out = bb.emit_output(_flat(bb, sampled))
        bb.emit_func_output(out)


def _emit_argsort(bb: relax.BlockBuilder, probs: relax.Var, s: _Sizes, gpu: bool) -> relax.Var:
    """Descending argsort of each row of `probs`, as int32 token ids."""
    if gpu:  # DispatchSortScan lowers it to TVM's GPU sort kernels
        return bb.emit(relax.op.argsort(probs, axis=-1, descending=True, dtype="int32"))
    # TVM's CPU argsort is an extern call (`tvm.contrib.sort.argsort`) that 0.27's
    # AttachGlobalSymbol cannot rewrite once the module has a system_lib_prefix
    # ("Cannot treat type ir.Call as ir.Expr"): a merge sort in TIR instead.
    gvar = bb.add_func(_cpu_argsort_descending, "cpu_argsort_descending")
    idx_and_scratch = bb.emit(
        relax.call_tir(
            gvar,
            [probs],
            out_ty=[
                relax.TensorType([s.batch, s.vocab], "int32"),
                relax.TensorType([s.batch, s.vocab], "int32"),
            ],
        )
    )
    return bb.emit(relax.TupleGetItem(idx_and_scratch, 0))


def _emit_take_sorted(bb: relax.BlockBuilder, probs: relax.Var, idx: relax.Var) -> relax.Var:
    """sorted[b, j] = probs[b, idx[b, j]]."""
    return bb.emit_te(
        lambda p, i: te.compute(p.shape, lambda b, j: p[b, i[b, j]], name="take_sorted_probs"),
        probs,
        idx,
        primfunc_name_hint="take_sorted_probs",
    )


def _argsort_probs(bb: relax.BlockBuilder, gpu: bool) -> None:
    # One sort (of indices), then a gather for the values: sorting twice would double the cost.
    s = _Sizes()
    probs = s.probs("probs")
    with bb.function("argsort_probs", [probs]):
        with bb.dataflow():
            idx = _emit_argsort(bb, probs, s, gpu)
            values = _emit_take_sorted(bb, probs, idx)
            out = bb.emit_output(relax.Tuple([values, idx]))
        bb.emit_func_output(out)


def _renormalize_by_top_p(bb: relax.BlockBuilder, gpu: bool) -> None:
    # MLC's contract (its top_p_pivot/top_p_renorm docstrings): keep the tokens whose
    # probability is >= a pivot such that lsum = the kept mass is >= top_p[b], while dropping
    # the smallest kept value (with all its ties) would leave less than top_p[b]; the kept
    # probabilities are divided by lsum, the others become 0. MLC searches that pivot with
    # `init_pivots` as hints; here it is read off the sorted row (the pivot is the sorted value
    # at the first rank whose cumulative mass reaches top_p), so `init_pivots` goes unused.
    s = _Sizes()
    probs = s.probs("probs")
    top_p = relax.Var("top_p", relax.TensorType([s.batch], "float32"))
    init_pivots = relax.Var("init_pivots", relax.TensorType([s.batch, 3], "float32"))
    with bb.function("renormalize_by_top_p", [probs, top_p, init_pivots]):
        with bb.dataflow():
            sorted_probs = _emit_take_sorted(bb, probs, _emit_argsort(bb, probs, s, gpu))
            cumsum = bb.emit(relax.op.cumsum(sorted_probs, axis=1))
            pivot_and_sum = bb.emit(
                relax.call_tir(
                    bb.add_func(_top_p_pivot, "top_p_pivot"),
                    [sorted_probs, cumsum, top_p],
                    out_ty=[
                        relax.TensorType([s.batch], "float32"),
                        relax.TensorType([s.batch], "float32"),
                    ],
                )
            )
            pivot = bb.emit(relax.TupleGetItem(pivot_and_sum, 0))
            kept_sum = bb.emit(relax.TupleGetItem(pivot_and_sum, 1))
            out = bb.emit_output(bb.emit_te(_top_p_renorm_te, probs, pivot, kept_sum))
        bb.emit_func_output(out)


# Spatial blocks with one conditional write per row, not reductions: dlight's GPU reduction
# rules assert on a masked min over two inputs, while its Fallback rule schedules these.
# `if_then_else` is lazy, so rank j + 1 is only read when it exists.
@T.prim_func(private=True, s_tir=True)
def _top_p_pivot(
    var_sorted: T.handle,
    var_cumsum: T.handle,
    var_top_p: T.handle,
    var_pivot: T.handle,
    var_kept_sum: T.handle,
) -> None:
    """pivot[b] = the sorted value at the last rank whose preceding mass is below top_p[b];
    kept_sum[b] = the mass of all ranks whose value is >= pivot[b] (its ties included)."""
    T.func_attr({"tirx.noalias": True})
    batch = T.int64()
    vocab = T.int64()
    sorted_probs = T.match_buffer(var_sorted, (batch, vocab), "float32")
    cumsum = T.match_buffer(var_cumsum, (batch, vocab), "float32")
    top_p = T.match_buffer(var_top_p, (batch,), "float32")
    pivot = T.match_buffer(var_pivot, (batch,), "float32")
    kept_sum = T.match_buffer(var_kept_sum, (batch,), "float32")
    for b, j in T.grid(batch, vocab):
        with T.sblock("pivot"):
            vb, vj = T.axis.remap("SS", [b, j])
            T.writes(pivot[vb])
            if cumsum[vb, vj] - sorted_probs[vb, vj] < top_p[vb] and T.if_then_else(
                vj + 1 == vocab,
                True,
                cumsum[vb, vj + 1] - sorted_probs[vb, vj + 1] >= top_p[vb],
            ):
                pivot[vb] = sorted_probs[vb, vj]
    for b, j in T.grid(batch, vocab):
        with T.sblock("kept_sum"):
            vb, vj = T.axis.remap("SS", [b, j])
            T.writes(kept_sum[vb])
            if sorted_probs[vb, vj] >= pivot[vb] and T.if_then_else(
                vj + 1 == vocab, True, sorted_probs[vb, vj + 1] < pivot[vb]
            ):
                kept_sum[vb] = cumsum[vb, vj]


def _top_p_renorm_te(probs: te.Tensor, pivot: te.Tensor, kept_sum: te.Tensor) -> te.Tensor:
    return te.compute(
        probs.shape,
        lambda b, v: tirx.Select(
            probs[b, v] >= pivot[b], probs[b, v] / kept_sum[b], tirx.const(0.0, "float32")
        ),
        name="top_p_renorm",
    )


@T.prim_func(private=True, s_tir=True)  # s_tir: the block form call_tir callees need
def _cpu_argsort_descending(var_probs: T.handle, var_idx: T.handle, var_scratch: T.handle) -> None:
    """idx[b] = the stable descending argsort of probs[b]: bottom-up merge sort, O(V log V).

    Serial loops (CPU only); `scratch` holds each merge pass's output.
    """
    T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
    batch = T.int64()
    vocab = T.int64()
    probs = T.match_buffer(var_probs, (batch, vocab), "float32")
    idx = T.match_buffer(var_idx, (batch, vocab), "int32")
    scratch = T.match_buffer(var_scratch, (batch, vocab), "int32")
    # A root block: RewriteDataflowReshape inspects every call_tir callee and expects one.
    with T.sblock("root"):
        # Mutable scalars: [run width, next of the left run, next of the right run, take left?]
        state = T.sblock_alloc_buffer((4,), "int64", scope="local")
        for b in T.serial(batch):
            for j in T.serial(vocab):
                idx[b, j] = T.Cast("int32", j)
            state[0] = T.int64(1)
            while state[0] < vocab:
                for run in T.serial(T.ceildiv(vocab, 2 * state[0])):
                    state[1] = run * 2 * state[0]
                    state[2] = T.min(run * 2 * state[0] + state[0], vocab)
                    for t in T.serial(
                        run * 2 * state[0], T.min(run * 2 * state[0] + 2 * state[0], vocab)
                    ):
                        # TIR's `and`/`or` do not short-circuit: the comparison is reached only
                        # when both runs still have elements. `>=` keeps ties in index order.
                        if state[1] >= T.min(run * 2 * state[0] + state[0], vocab):
                            state[3] = T.int64(0)
                        elif state[2] >= T.min(run * 2 * state[0] + 2 * state[0], vocab):  # noqa: SIM114
                            state[3] = T.int64(1)
                        elif probs[b, idx[b, state[1]]] >= probs[b, idx[b, state[2]]]:
                            state[3] = T.int64(1)
                        else:
                            state[3] = T.int64(0)
                        if state[3] == 1:
                            scratch[b, t] = idx[b, state[1]]
                            state[1] = state[1] + 1
                        else:
                            scratch[b, t] = idx[b, state[2]]
                            state[2] = state[2] + 1
                for j in T.serial(vocab):
                    idx[b, j] = scratch[b, j]
                state[0] = state[0] * 2


def _sample_with_top_p(bb: relax.BlockBuilder) -> None:
    # TVM's top-p/top-k sampler with top_k = V (no top-k, as MLC): on row r = sample_idx[i],
    # c = cumsum(sorted[r]); the kept prefix ends at the first k with c[k] >= top_p[r] (the
    # whole row if none); the result is idx[r, j] for the first j with uniform[i] < c[j] / c[k].
    s = _Sizes()
    sorted_probs = s.probs("sorted_probs")
    sorted_idx = s.probs("sorted_indices", "int32")
    uniform = s.per_sample("uniform_samples", "float32")
    sample_idx = s.per_sample("sample_indices", "int32")
    top_p = relax.Var("top_p", relax.TensorType([s.batch], "float32"))
    params = [sorted_probs, sorted_idx, uniform, sample_idx, top_p]
    with bb.function("sample_with_top_p", params):
        with bb.dataflow():
            no_top_k = nn.op.tensor_expr_op(
                lambda p: te.compute(
                    (p.shape[0], 1), lambda b, _: p.shape[1].astype("int32"), name="no_top_k"
                ),
                "no_top_k",
                [nn.wrap_nested(sorted_probs, name="sorted_probs")],
            )
            sampled = nn.op.sample_top_p_top_k_from_sorted_prob(
                nn.wrap_nested(sorted_probs, name="sorted_probs"),
                nn.wrap_nested(sorted_idx, name="sorted_indices"),
                _column(bb, top_p, "top_p"),
                no_top_k,
                _column(bb, uniform, "uniform_samples"),
                _column(bb, sample_idx, "sample_indices"),
            )
            out = bb.emit_output(_flat(bb, sampled))
        bb.emit_func_output(out)


def _take_probs_te(
    probs: te.Tensor,
    idx: te.Tensor,
    sample_idx: te.Tensor,
    sampled: te.Tensor,
    offsets: te.Tensor,
) -> list[te.Tensor]:
    """sampled_probs[i] = probs[sample_idx[i], sampled[i]]; for offset o into the flattened
    sorted arrays (row o // V, rank o % V): the token idx[row, rank] and its probability."""
    vocab = probs.shape[1]

    def row_rank(p: Any) -> tuple[Any, Any]:
        flat = offsets[p].astype("int64")
        return tirx.floordiv(flat, vocab), tirx.floormod(flat, vocab)

    def top_token(p: Any) -> Any:
        row, rank = row_rank(p)
        return idx[row, rank]

    def top_prob(p: Any) -> Any:
        row, rank = row_rank(p)
        return probs[row, idx[row, rank]]

    sampled_probs = te.compute(
        sample_idx.shape, lambda i: probs[sample_idx[i], sampled[i]], name="sampled_probs"
    )
    top_probs = te.compute(offsets.shape, top_prob, name="top_probs")
    top_tokens = te.compute(offsets.shape, top_token, name="top_tokens")
    return [sampled_probs, top_probs, top_tokens]


def _sampler_take_probs(bb: relax.BlockBuilder) -> None:
    # The runtime reads back the probabilities of the sampled tokens and the top candidates
    # (logprobs) without copying whole [B, V] rows to the CPU.
    s = _Sizes()
    probs = s.probs("probs")
    sorted_idx = s.probs("sorted_indices", "int32")
    sample_idx = s.per_sample("sample_indices", "int32")
    sampled = s.per_sample("sampled_tokens", "int32")
    offsets = relax.Var("top_prob_offsets", relax.TensorType([s.positions], "int32"))
    params = [probs, sorted_idx, sample_idx, sampled, offsets]
    with bb.function("sampler_take_probs", params):
        with bb.dataflow():
            taken = bb.emit_te(_take_probs_te, *params, primfunc_name_hint="sampler_take_probs")
            out = bb.emit_output(taken)
        bb.emit_func_output(out)
