"""Trace one step of a cell into a body graph, with `lengths` masking around it.

The body's inputs are the state parts, then the step's slices (x_t, mask_t when the run
has lengths, then any extra per-step inputs such as state-dropout masks); its outputs are the next state parts, then y_t. With a mask, a step past a
sequence's length keeps the previous state and outputs zeros (TF1 dynamic_rnn):

    state' = where(mask_t, cell_state', state) ;  y_t = where(mask_t, cell_y, 0)
"""
from __future__ import annotations

from dataclasses import dataclass

from ..builder import Builder, Tensor
from ..cells import StepCell
from ..graph import Graph


@dataclass
class TracedStep:
    body: Graph
    n_state: int
    seq_inputs: list[Tensor]  # outer time-major [T, B, ...] tensors feeding the body's slice inputs


def trace_step(b: Builder, cell: StepCell, params: dict[str, Tensor], x: Tensor, mask: Tensor | None,
               out_hint: str = "y", extra: list[Tensor] = ()) -> TracedStep:
    """`extra`: more [T, B, ...] sequences whose step slices the cell's step receives after
    the state (state-dropout masks)."""
    sub = b.subgraph()
    params = {k: Tensor(sub, t.v) for k, t in params.items()}
    batch = x.shape[1]          # x is time-major [T, B, ...]
    states = tuple(sub.input(sub.fresh(f"{n}_prev"), b.fdtype, (batch, size)) for n, size in cell.state)
    x_t = sub.input(sub.fresh("x_t"), x.dtype, tuple(x.shape[1:]))
    seq_inputs = [x]
    m_t = None
    if mask is not None:
        m_t = sub.input(sub.fresh("mask_t"), "bool", (batch, 1))
        seq_inputs.append(mask)
    extra_t = []
    for e in extra:
        extra_t.append(sub.input(sub.fresh("extra_t"), e.dtype, tuple(e.shape[1:])))
        seq_inputs.append(e)
    y, nxt = cell.step(sub, params, x_t, states, *extra_t)
    if m_t is not None:
        nxt = tuple(sub.where(m_t, new, old) for new, old in zip(nxt, states))
        y = sub.where(m_t, y, sub.const(0.0, y.dtype))
    # Body outputs must be distinct values that are not body inputs (a pass-through state
    # would otherwise alias its input's name).
    seen, outs = {t.name for t in states}, []
    for t in list(nxt) + [y]:
        if t.name in seen:
            t = sub.identity(t)
        seen.add(t.name)
        outs.append(t)
    sub.g.outputs = [t.v for t in outs]
    return TracedStep(sub.g, len(cell.state), seq_inputs)

