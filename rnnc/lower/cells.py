"""Run a cell tree over a time-major [T, B, ...] sequence: stacks layer by layer, wrappers
after the loop.

Parameters are named by their place in the tree: `rnn.W`, `deep.1.W`, `enc.fw.W`,
`deep.project.W`. Running the same instance twice reuses its parameters (shared weights).
Past a sequence's length every output is zero, wrappers included (project adds a bias,
residual adds the input, so both are masked again).
"""
from __future__ import annotations

from ..builder import Builder, Tensor
from ..cells import ParamSpec
from ..ir import Bi, Dropout, Leaf, Project, Residual, Stack, state_layout, Placed
from .fused import fusable, run_fused
from .recurrence import run_cell, zero_state


class CellRunner:
    def __init__(self, b: Builder, param):
        self.b = b
        self.param = param   # (name, ParamSpec) -> Tensor, shared by name
        self.decisions: list[tuple[str, str, str]] = []   # (cell path, lowering, why) per leaf
        self.placements = 0
        self.target = "cpu"            # the device the lowering is for: `rnnc compile --device`, or an `on`
        self.providers: dict[str, str] = {}   # cell path -> the provider its nodes land on
        self.dropout = None   # a lower.dropout.DropoutSource in training graphs; None: no dropout
        self.training = False  # a graph to differentiate: only what grad/lstm.py differentiates is fused

    def run(self, cell, prefix: str, x: Tensor, mask: Tensor | None, lengths: Tensor | None,
            initial: dict[str, Tensor], strategy) -> tuple[Tensor, dict[str, Tensor]]:
        """`strategy` is (loop lowering "static"|"loop", why, cells to fuse "all"|"lstm"|"")."""
        b = self.b
        if isinstance(cell, Leaf):
            params = {k: self.param(f"{prefix}.{k}", spec) for k, spec in cell.cell.params.items()}
            init = [initial.get(n) if initial.get(n) is not None else zero_state(b, x, size)
                    for n, size in cell.cell.state]
            base, why, fuse = strategy
            if self.training and fuse and cell.cell.kind != "lstm":
                fuse, why = "", f"training graphs fuse only LSTMs (the recomputing backward is an LSTM's); {why}"
            elif fuse == "lstm" and cell.cell.kind != "lstm":
                fuse, why = "", f"auto fuses only LSTMs (onnxruntime's fused {cell.cell.kind} kernel is no faster); {why}"
            elif self.training and fuse and cell.cell.options.get("peepholes"):
                fuse, why = "", f"the fused LSTM backward has no peepholes; {why}"
            step_cell, extra = self.dropout.wrap_leaf(cell.cell, x) if self.dropout else (cell.cell, [])
            dropped = step_cell is not cell.cell
            not_fusable = (fusable(cell.cell, x.dtype, self.target) if not dropped else "state dropout") if fuse else None
            self.providers[prefix] = "CUDAExecutionProvider" if self.target.startswith("cuda") else "CPUExecutionProvider"
            if fuse and not_fusable is None:
                self.decisions.append((prefix, "fused", "ONNX's own operator computes exactly this cell"))
                y, final = run_fused(b, cell.cell, params, x, init, lengths)
            else:
                self.decisions.append((prefix, base, f"{not_fusable}; {why}" if not_fusable else why))
                y, final = run_cell(b, step_cell, params, x, init, mask, base, extra, unroll_later=self.training)
            return y, dict(zip(cell.cell.state_names, final))
        if isinstance(cell, Stack):
            final: dict[str, Tensor] = {}
            y = x
            for i, layer in enumerate(cell.layers):
                sub = _sub(initial, f"{i}.")
                y, st = self.run(layer, f"{prefix}.{i}", y, mask, lengths, sub, strategy)
                final.update({f"{i}.{k}": v for k, v in st.items()})
            return y, final
        if isinstance(cell, Project):
            y, final = self.run(cell.inner, prefix, x, mask, lengths, initial, strategy)
            W = self.param(f"{prefix}.project.W", ParamSpec((cell.inner.output_size, cell.units), "glorot"))
            bias = self.param(f"{prefix}.project.b", ParamSpec((cell.units,), "zeros"))
            return _masked(b, y @ W + bias, mask), final
        if isinstance(cell, Residual):
            y, final = self.run(cell.inner, prefix, x, mask, lengths, initial, strategy)
            return _masked(b, y + x, mask), final
        if isinstance(cell, Dropout):   # training graphs only; elsewhere the inner cell (keep = 1)
            if self.dropout is None:
                return self.run(cell.inner, prefix, x, mask, lengths, initial, strategy)
            return self.dropout.run(self, cell, prefix, x, mask, lengths, initial, strategy)
        if isinstance(cell, Placed):      # each `on` is its own segment (rnnc/placement.py)
            saved, saved_target = b.root.placement, self.target
            self.placements += 1
            b.root.placement = f"{self.placements}:{cell.device}"
            self.target = cell.device
            try:
                return self.run(cell.inner, prefix, x, mask, lengths, initial, strategy)
            finally:
                b.root.placement, self.target = saved, saved_target
        if isinstance(cell, Bi):
            yf, sf = self.run(cell.fw, f"{prefix}.fw", x, mask, lengths, _sub(initial, "fw."), strategy)
            full = lengths if lengths is not None else _full_lengths(b, x)
            xr = b.reverse_sequence(x, full, time_axis=0, batch_axis=1)
            yr, sb = self.run(cell.bw, f"{prefix}.bw", xr, mask, lengths, _sub(initial, "bw."), strategy)
            yb = b.reverse_sequence(yr, full, time_axis=0, batch_axis=1)
            final = {f"fw.{k}": v for k, v in sf.items()} | {f"bw.{k}": v for k, v in sb.items()}
            return b.concat([yf, yb], axis=-1), final
        raise ValueError(f"cannot lower {type(cell).__name__} yet")


def _sub(initial: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in initial.items() if k.startswith(prefix)}


def _masked(b: Builder, y: Tensor, mask: Tensor | None) -> Tensor:
    return y if mask is None else b.where(mask, y, b.const(0.0, y.dtype))


def _full_lengths(b: Builder, x: Tensor) -> Tensor:
    """[T, T, ..., T] of the batch's size: every sequence at full length."""
    T = b.shape_of(x, 0, 1)
    batch = b.shape_of(x, 1, 2)
    return b.expand(T, batch, (x.shape[1],))


def initial_dict(cell, flat: list[Tensor]) -> dict[str, Tensor]:
    return {p: t for (p, _), t in zip(state_layout(cell), flat)}

