"""The `fused` lowering: ONNX's own RNN / LSTM / GRU operators, where they compute exactly
what the cell computes (inference graphs only).

Exact where:
- basic: RNN with activation Tanh or Relu;
- lstm without `proj` and `clip` (ONNX's clip bounds gate pre-activations, TF1's the cell
  state; ONNX has no projection); peepholes map to P (o's peephole reads the new c in both);
  forget_bias is folded into the input bias of the f gate;
- gru: linear_before_reset=0 is TF1's reset-before form, 1 the reset-after form.
Gate blocks are reordered by ops on the weights (onnxruntime folds them at load): rnnc's
i, j, f, o → ONNX i, o, f, c; r, z, candidate → z, r, h. Weights multiply on the right in
rnnc, so they are transposed. onnxruntime gives a final state of zeros for a sequence of
length 0 where rnnc keeps the initial state, so that case is fixed up with a Where.
"""
from __future__ import annotations

import numpy as np

from ..builder import Builder, Tensor
from ..cells import StepCell


def fusable(cell: StepCell, dtype: str = "f32", target: str = "cpu") -> str | None:
    """Why `cell` cannot be fused for a run on `target`, or None when it can. For CUDA,
    variants the CUDA provider sends to the CPU are refused (rnnc disables that fallback):
    peepholes, non-default activations, GRU with linear_before_reset=0
    (onnxruntime cuda_execution_provider.cc, RNNNeedFallbackToCPU)."""
    o = cell.options
    if dtype != "f32" and cell.kind in ("lstm", "gru", "basic"):
        return "onnxruntime's RNN operators run float32 only"
    if target.startswith("cuda"):
        if cell.kind == "lstm" and o.get("peepholes"):
            return "the CUDA provider runs ONNX LSTM with peepholes on the CPU"
        if cell.kind == "gru" and not o.get("reset_after"):
            return "the CUDA provider runs ONNX GRU only with linear_before_reset=1 (reset_after=true)"
        if cell.kind == "basic" and o.get("activation") != "tanh":
            return "the CUDA provider runs ONNX RNN only with its default tanh"
    if cell.kind == "basic":
        return None
    if cell.kind == "lstm":
        if o.get("proj"):
            return "lstm with proj has no ONNX LSTM equivalent"
        if o.get("clip") is not None:
            return "ONNX LSTM's clip bounds the gates, not the cell state"
        return None
    if cell.kind == "gru":
        return None
    return f"user cell '{cell.kind}' has no ONNX operator"


def _blocks(b: Builder, t: Tensor, order: list[int], k: int) -> Tensor:
    parts = b.split(t, k)
    return b.concat([parts[i] for i in order], axis=-1)


def _weights(b: Builder, w: Tensor, order: list[int], k: int) -> Tensor:
    """[in, k·H] (rnnc, gates reordered) -> [1, k·H, in] (ONNX)."""
    return b.unsqueeze(b.transpose(_blocks(b, w, order, k), [1, 0]), [0])


def run_fused(b: Builder, cell: StepCell, p: dict[str, Tensor], x: Tensor, initial: list[Tensor],
              lengths: Tensor | None) -> tuple[Tensor, list[Tensor]]:
    """x time-major [T, B, I]; returns y [T, B, H] and the final state parts."""
    kind, o = cell.kind, cell.options
    units = cell.state[-1][1]
    seq_lens = b.cast(lengths, "i32") if lengths is not None else None
    batch, T = x.shape[1], x.shape[0]
    init = [b.unsqueeze(s, [0]) for s in initial]
    if kind == "lstm":
        order = [0, 3, 2, 1]                     # i, j, f, o -> i, o, f, c(=j)
        bias = p["b"]
        if o["forget_bias"]:
            fb = np.zeros(4 * units)
            fb[2 * units:3 * units] = o["forget_bias"]
            bias = bias + fb
        B = b.unsqueeze(b.concat([_blocks(b, bias, order, 4), b.zeros_like(bias)], axis=-1), [0])
        c0, h0 = init
        ins = [x, _weights(b, p["W"], order, 4), _weights(b, p["U"], order, 4), B, seq_lens, h0, c0]
        if o["peepholes"]:
            ins.append(b.unsqueeze(b.concat([p["wi"], p["wo"], p["wf"]], axis=-1), [0]))
        dt = x.dtype
        y, yh, yc = b.node("LSTM", ins,
                           [(dt, (T, 1, batch, units)), (dt, (1, batch, units)), (dt, (1, batch, units))],
                           {"hidden_size": units})
        finals = [b.squeeze(yc, [0]), b.squeeze(yh, [0])]
    elif kind == "gru":
        order = [1, 0, 2]                        # r, z, candidate -> z, r, h
        rb = _blocks(b, p["bU"], order, 3) if o["reset_after"] else b.zeros_like(p["b"])
        B = b.unsqueeze(b.concat([_blocks(b, p["b"], order, 3), rb], axis=-1), [0])
        ins = [x, _weights(b, p["W"], order, 3), _weights(b, p["U"], order, 3), B, seq_lens, init[0]]
        dt = x.dtype
        y, yh = b.node("GRU", ins,
                       [(dt, (T, 1, batch, units)), (dt, (1, batch, units))],
                       {"hidden_size": units, "linear_before_reset": int(o["reset_after"])})
        finals = [b.squeeze(yh, [0])]
    else:
        act = "Tanh" if o["activation"] == "tanh" else "Relu"
        B = b.unsqueeze(b.concat([p["b"], b.zeros_like(p["b"])], axis=-1), [0])
        ins = [x, _weights(b, p["W"], [0], 1), _weights(b, p["U"], [0], 1), B, seq_lens, init[0]]
        dt = x.dtype
        y, yh = b.node("RNN", ins,
                       [(dt, (T, 1, batch, units)), (dt, (1, batch, units))],
                       {"hidden_size": units, "activations": [act]})
        finals = [b.squeeze(yh, [0])]
    if lengths is not None:   # onnxruntime zeroes the final state of empty sequences
        empty = b.unsqueeze(b.equal(lengths, b.const(np.array(0, np.int64), "i64")), [1])
        finals = [b.where(empty, s0, s) for s0, s in zip(initial, finals)]
    return b.squeeze(y, [1]), finals

