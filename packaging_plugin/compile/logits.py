"""The functions on logits every library exports, the same for every model (MLC attaches them in
its compile pipeline): `softmax_with_temperature` (Relax) and the in-place logit processors the
runtime calls before sampling (TIR).
"""

from __future__ import annotations

import functools
from typing import Any

import tvm
from tvm import relax, te, tirx
from tvm.script import tirx as T
from tvm.target import Target

GREEDY_TEMPERATURE = 1e-5  # at or below: one-hot on the argmax (uniform over ties)
TX_LEN = 256  # threads per block: the android/iphone targets' max_threads_per_block


def _softmax_with_temperature_te(logits: te.Tensor, temperature: te.Tensor) -> te.Tensor:
    """probs[b, 0, v] = softmax(logits[b, 0, :] / T[b])[v], or one-hot argmax when T ~ 0."""
    batch, _, vocab = logits.shape

    def numerator(b: Any, v: Any, row_max: te.Tensor) -> Any:
        x = logits[b, 0, v]
        # if_then_else, not Select: the greedy branch must not evaluate x / 0.
        return tirx.if_then_else(
            temperature[b] > GREEDY_TEMPERATURE,
            tirx.exp((x - row_max[b]) / temperature[b]),
            tirx.if_then_else(
                x == row_max[b], tirx.const(1.0, "float32"), tirx.const(0.0, "float32")
            ),
        )

    k = te.reduce_axis((0, vocab), name="k")
    row_max = te.compute((batch,), lambda b: te.max(logits[b, 0, k], axis=k), name="row_max")
    k2 = te.reduce_axis((0, vocab), name="k2")
    row_sum = te.compute(
        (batch,), lambda b: te.sum(numerator(b, k2, row_max), axis=k2), name="row_sum"
    )
    return te.compute(
        (batch, 1, vocab), lambda b, _, v: numerator(b, v, row_max) / row_sum[b], name="probs"
    )


def _processor_loops(gpu: bool) -> tuple[Any, Any]:
    """The processors' two loops: blocks and threads on GPUs, serial loops on CPUs."""
    if gpu:
        return (
            functools.partial(T.thread_binding, thread="blockIdx.x"),
            functools.partial(T.thread_binding, thread="threadIdx.x"),
        )
    return T.serial, T.serial


def logit_processors(gpu: bool) -> list[tirx.PrimFunc]:
    """The in-place logit processors, one element per thread on GPUs, serial loops on CPUs.

    Hand-scheduled (`tirx.is_scheduled`): they update `logits` in place through index arrays,
    which schedule primitives (and so dlight) refuse to bind to threads.
    """
    outer, inner = _processor_loops(gpu)
    return [
        _logit_bias_processor(outer, inner),
        _penalty_processor(outer, inner),
        _bitmask_processor(outer, inner),
    ]


def _logit_bias_processor(outer: Any, inner: Any) -> tirx.PrimFunc:
    """`apply_logit_bias_inplace`: logits[pos2seq[i], token_ids[i]] += bias[i]."""
    tx_len = TX_LEN  # read by the TVMScript below

    @T.prim_func
    def apply_logit_bias_inplace(
        var_logits: T.handle, var_pos2seq: T.handle, var_token_ids: T.handle, var_bias: T.handle
    ) -> None:
        # logits[pos2seq[i], token_ids[i]] += bias[i]
        T.func_attr(
            {
                "global_symbol": "apply_logit_bias_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_token = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        pos2seq = T.match_buffer(var_pos2seq, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        bias = T.match_buffer(var_bias, (num_token,), "float32")
        for bx in outer((num_token + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_token:
                    i = bx * tx_len + tx
                    logits[pos2seq[i], token_ids[i]] = logits[pos2seq[i], token_ids[i]] + bias[i]

    return apply_logit_bias_inplace


def _penalty_processor(outer: Any, inner: Any) -> tirx.PrimFunc:
    """`apply_penalty_inplace`: presence, frequency and repetition penalties."""
    tx_len = TX_LEN  # read by the TVMScript below

    @T.prim_func
    def apply_penalty_inplace(
        var_logits: T.handle,
        var_seq_ids: T.handle,
        var_pos2seq: T.handle,
        var_token_ids: T.handle,
        var_token_cnt: T.handle,
        var_penalties: T.handle,
    ) -> None:
        # penalties[s] = (presence, frequency, repetition) of the s-th sequence of the call,
        # whose logits row is seq_ids[s].
        T.func_attr(
            {
                "global_symbol": "apply_penalty_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_token = T.int32()
        num_seq = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        pos2seq = T.match_buffer(var_pos2seq, (num_token,), "int32")
        token_ids = T.match_buffer(var_token_ids, (num_token,), "int32")
        token_cnt = T.match_buffer(var_token_cnt, (num_token,), "int32")
        penalties = T.match_buffer(var_penalties, (num_seq, 3), "float32")
        for bx in outer((num_token + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_token:
                    i = bx * tx_len + tx
                    s = pos2seq[i]
                    shifted = logits[seq_ids[s], token_ids[i]] - (
                        penalties[s, 0] + T.Cast("float32", token_cnt[i]) * penalties[s, 1]
                    )
                    logits[seq_ids[s], token_ids[i]] = T.if_then_else(
                        shifted < T.float32(0), shifted * penalties[s, 2], shifted / penalties[s, 2]
                    )

    return apply_penalty_inplace


def _bitmask_processor(outer: Any, inner: Any) -> tirx.PrimFunc:
    """`apply_bitmask_inplace`: the grammar's token bitmask."""
    tx_len = TX_LEN  # read by the TVMScript below

    @T.prim_func
    def apply_bitmask_inplace(
        var_logits: T.handle, var_seq_ids: T.handle, var_bitmask: T.handle
    ) -> None:
        # Token v of row seq_ids[s] survives iff bit v % 32 of word v // 32 is set; the others
        # get the lowest float32 (finite: a fully masked row still has a defined softmax).
        T.func_attr(
            {
                "global_symbol": "apply_bitmask_inplace",
                "tirx.noalias": True,
                "tirx.is_scheduled": True,
            }
        )
        batch_size = T.int32()
        vocab_size = T.int32()
        num_seq = T.int32()
        logits = T.match_buffer(var_logits, (batch_size, vocab_size), "float32")
        seq_ids = T.match_buffer(var_seq_ids, (num_seq,), "int32")
        bitmask = T.match_buffer(var_bitmask, (batch_size, (vocab_size + 31) // 32), "int32")
        for bx in outer((num_seq * vocab_size + tx_len - 1) // tx_len):
            for tx in inner(tx_len):
                if bx * tx_len + tx < num_seq * vocab_size:
                    row = seq_ids[(bx * tx_len + tx) // vocab_size]
                    v = (bx * tx_len + tx) % vocab_size
                    word = bitmask[row, v // 32]
                    logits[row, v] = T.if_then_else(
                        T.bitwise_and(T.shift_right(word, v % 32), 1) == 1,
                        logits[row, v],
                        T.min_value("float32"),
                    )

    return apply_bitmask_inplace


def attach_logit_functions(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """Add `softmax_with_temperature` (Relax) and the three in-place logit processors (TIR).

    The processors carry a `global_symbol`, which both exports them (the runtime looks them up
    by name) and keeps dead-code elimination from dropping them: nothing in the module calls them.
    """
    bb = relax.BlockBuilder(mod)
    batch, vocab = tirx.Var("batch_size", "int64"), tirx.Var("vocab_size", "int64")
    logits = relax.Var("logits", relax.TensorType([batch, 1, vocab], "float32"))
    temperature = relax.Var("temperature", relax.TensorType([batch], "float32"))
    with bb.function("softmax_with_temperature", [logits, temperature]):
        with bb.dataflow():
            probs = bb.emit_te(
                _softmax_with_temperature_te,
                logits,
                temperature,
                primfunc_name_hint="softmax_with_temperature_kernel",
            )
            out = bb.emit_output(probs)
        bb.emit_func_output(out)
    for func in logit_processors(gpu="gpu" in target.keys):
        bb.add_func(func, str(func.attrs["global_symbol"]))
    return bb.finalize()
