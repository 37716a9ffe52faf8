"""Model IR -> tensor graph: every Expr lowered once (the IR is a DAG shared by identity).

`lower_model` builds the forward computation of the requested outputs (and, for training
and evaluation graphs, the loss and metrics). Float inputs and parameters take the graph's
float type (f32 normally; f64 for gradient checks).
"""
from __future__ import annotations

import numpy as np

from .. import losses
from ..builder import Builder, Tensor
from ..cells import ParamSpec
from ..graph import FLOAT_DTYPES, Graph, Node, Value
from ..ir import Expr, Model, sequence_time_dims, state_layout
from ..params import initial_value
from .cells import CellRunner, initial_dict
from .chunked import chunked_strategy
from .recurrence import length_mask

AUTO_STATIC_MAX_STEPS = 64


def choose_strategy(unroll: str | None, default: str, time_dim, training: bool = False,
                    memory: str = "store") -> tuple[str, str, str]:
    """(loop lowering, why, which cells to fuse: "all" | "lstm" | "") for a cell run.
    `auto`: ONNX's fused LSTM where exact (onnxruntime's fused RNN and GRU kernels measured
    no faster than the unrolled step: bench/), else static when the time dim is fixed and at
    most 64 steps (no per-step loop overhead), else one loop.
    Training graphs: `auto` is one loop, whose backward step keeps only what reads the
    carried gradients (grad/stepwise.py); on W1-W4 this measured as fast as the unrolled
    graph or faster (the unrolled one copies every stored step into and out of stacks).
    `fused` runs LSTMs on onnxruntime's kernel with a backward that recomputes from the
    hidden states (grad/lstm.py), under the default memory policy only: `recompute` and
    `checkpoint` promise less memory."""
    u = unroll or default
    if training:
        fuse = "lstm" if u == "fused" and memory == "store" else ""
    else:
        fuse = {"fused": "all", "auto": "lstm"}.get(u, "")
    if u in ("static", "loop"):
        return u, f"unroll={u} asked for", fuse
    if training:
        why = f"{time_dim} fixed steps" if isinstance(time_dim, int) else "time dim is not fixed"
        return "loop", f"training graph: {why}, one loop with a shortened backward step", fuse
    if isinstance(time_dim, int) and time_dim <= AUTO_STATIC_MAX_STEPS:
        return "static", f"{time_dim} fixed steps ≤ {AUTO_STATIC_MAX_STEPS}: unrolled", fuse
    why = "time dim is not fixed" if not isinstance(time_dim, int) else f"{time_dim} steps > {AUTO_STATIC_MAX_STEPS}"
    return "loop", f"{why}: one loop", fuse


class ModelLowering:
    def __init__(self, model: Model, fdtype: str = "f32", seed: int = 0, unroll: str = "auto",
                 weights: dict[str, np.ndarray] | None = None):
        if model.unsupported:   # every entry point that lowers refuses what it cannot compile yet
            from ..api import refuse_unsupported
            refuse_unsupported(model)
        self.model, self.fdtype, self.seed, self.unroll = model, fdtype, seed, unroll
        self.weights = weights or {}
        self.g = Graph()
        self.b = Builder(self.g, fdtype)
        self.memo: dict[int, object] = {}
        self.runner = CellRunner(self.b, self.param)
        self.inputs: dict[str, Tensor] = {}
        # state parts of runs exposed as extra inputs/outputs (stateful models, tbptt)
        self.expose_state = False
        self.window = False
        self.training = False         # a graph that will be differentiated: fused LSTMs only
        self.memory = "store"         # what its loops keep for the backward pass: store|recompute|checkpoint[:K]
        self.state_io: list[tuple[str, str, int]] = []      # (input name, output name, size)
        self.extra_outputs: list[Tensor] = []

    # ----- parameters -----
    def param(self, name: str, spec: ParamSpec) -> Tensor:
        if name in self.g.initializers:
            return self.b.tensor(name)
        if name in self.weights:
            value = np.asarray(self.weights[name]).astype(np.float64 if self.fdtype == "f64" else np.float32)
            if value.shape != spec.shape:
                raise ValueError(f"weights for '{name}' have shape {value.shape}, the model needs {spec.shape}")
        else:
            value = initial_value(name, spec, self.seed, self.fdtype)
        return self.b.initializer(name, value, trainable=True)

    def input(self, name: str) -> Tensor:
        if name not in self.inputs:
            t = self.model.input_type(name)
            dtype = self.fdtype if t.dtype in FLOAT_DTYPES else t.dtype
            shape = t.shape
            if self.window and len(shape) >= 2 and shape[1] in sequence_time_dims(self.model):
                shape = (shape[0], "window") + tuple(shape[2:])   # truncated BPTT: any window length
            self.inputs[name] = self.b.input(name, dtype, shape)
        return self.inputs[name]

    # ----- expressions -----
    @property
    def strategies(self) -> list[tuple[str, str]]:
        """(cell path, lowering) of every leaf cell run."""
        return [(p, s) for p, s, _ in self.runner.decisions]

    def lower(self, e: Expr):
        key = id(e)
        if key not in self.memo:
            self.memo[key] = self._lower(e)
        return self.memo[key]

    def _lower(self, e: Expr):
        b = self.b
        op = e.op
        if op == "input":
            return self.input(e.attrs["name"])
        if op == "const":
            return b.const(e.attrs["value"])
        args = [self.lower(a) if isinstance(a, Expr) else a for a in e.args]
        if op in ("add", "sub", "mul", "div", "matmul"):
            return getattr(b, op)(*args)
        if op == "neg":
            return b.neg(args[0])
        if op in ("softmax", "sigmoid", "tanh", "relu", "exp", "log", "log_softmax"):
            return getattr(b, op)(args[0])
        if op == "concat":
            return b.concat(args, axis=-1)
        if op == "dense":
            t = args[0]
            name = e.attrs["name"]
            W = self.param(f"{name}.W", ParamSpec((t.shape[-1], e.attrs["units"]), "glorot"))
            bias = self.param(f"{name}.b", ParamSpec((e.attrs["units"],), "zeros"))
            return t @ W + bias
        if op == "run":
            return self._run(e, args)
        if op == "run_seq":
            return args[0][0]
        if op == "run_final":
            return args[0][1]
        if op == "state_layer":
            prefix = f"{e.attrs['layer']}."
            return {k[len(prefix):]: v for k, v in args[0].items() if k.startswith(prefix)}
        if op == "state_tensor":
            parts = [args[0][p] for p in e.attrs["paths"]]
            return parts[0] if len(parts) == 1 else b.concat(parts, axis=-1)
        if op.startswith("s2s_"):          # seq2seq blocks (LANGUAGE.md section 5)
            from ..seq2seq.lower import lower_expr
            return lower_expr(self, e, args)
        if op in ("mse", "softmax_xent", "accuracy"):
            w = args[2] if len(args) > 2 else None
            return getattr(losses, op)(b, args[0], args[1], e.attrs.get("weighting"), w)
        raise ValueError(f"cannot lower '{op}'")

    def _run(self, e: Expr, args):
        x, lengths, *initial = args
        cell, instance = e.attrs["cell"], e.attrs["instance"]
        strategy = choose_strategy(e.attrs["unroll"], self.unroll, x.shape[1], self.training,
                                   getattr(self, "memory", "store"))
        if self.training:             # --memory checkpoint: loops over chunks (lower/chunked.py)
            strategy = chunked_strategy(strategy, self.memory, x.shape[1])
        self.runner.training = self.training
        xt = self.b.transpose(x, [1, 0, 2])       # the recurrence runs time-major
        mask = None
        if lengths is not None:
            lengths = self.b.cast(lengths, "i64")
            mask = length_mask(self.b, xt, lengths)
        init = initial_dict(cell, initial)
        if self.expose_state and not initial:
            init = self._state_inputs(cell, instance, x)
        y, final = self.runner.run(cell, instance, xt, mask, lengths, init, strategy)
        if self.expose_state and not initial:
            self._state_outputs(cell, instance, final)
        return self.b.transpose(y, [1, 0, 2]), final

    def _state_inputs(self, cell, instance: str, x: Tensor) -> dict[str, Tensor]:
        """Initial state parts as inputs `state.<instance>.<path>` (stateful models, tbptt)."""
        runs = sum(1 for i, _, _ in self.state_io if i.startswith(f"state.{instance}."))
        tag = instance if runs == 0 else f"{instance}#{runs}"
        out = {}
        for path, size in state_layout(cell):
            name = f"state.{tag}.{path}"
            out[path] = self.b.input(name, self.fdtype, (x.shape[0], size))
            self.state_io.append((name, f"{name}.next", size))
        return out

    def _state_outputs(self, cell, instance: str, final: dict[str, Tensor]) -> None:
        """Final state parts as outputs `state.<instance>.<path>.next`."""
        layout = state_layout(cell)
        for (path, _), (_, out_name, _) in zip(layout, self.state_io[-len(layout):]):
            self.extra_outputs.append(_rename_output(self.b, final[path], out_name))


def lower_model(model: Model, outputs: list[tuple[str, Expr]], fdtype: str = "f32", seed: int = 0,
                unroll: str = "auto", weights: dict | None = None, stateful: bool = False,
                target: str = "cpu") -> ModelLowering:
    """Lower `outputs` (name, Expr) into a graph whose outputs carry those names; `target` is
    the device the unplaced work will run on (lowerings are picked for it, by static rules)."""
    lw = ModelLowering(model, fdtype, seed, unroll, weights)
    lw.runner.target = target
    lw.expose_state = stateful
    named = []
    for name, e in outputs:
        t = lw.lower(e)
        named.append(_rename_output(lw.b, t, name))
    lw.g.outputs = [t.v for t in named + lw.extra_outputs]
    return lw


def _rename_output(b: Builder, t: Tensor, name: str) -> Tensor:
    """Graph outputs carry the spec's names: an Identity named after the output."""
    b.g.values[name] = Value(name, t.dtype, t.shape)
    b.g.nodes.append(Node("Identity", [t.name], [name], placement=b.root.placement))
    return b.tensor(name)
