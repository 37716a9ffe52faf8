"""The eval model (loss and metrics) and the train model (one whole optimizer step).

Train model interface (README "The train model"):
  inputs   the data inputs the loss needs; every parameter by its name (`rnn.W`, ...);
           each optimizer slot `<param>.<slot>` (`.m`, `.v` for adam/adamw, `.momentum` for
           sgd with momentum); `lr` (scalar); `step` (i64 scalar, updates made so far); with
           tbptt, the initial state parts `state.<cell>.<path>`; with dropout, `seed` (i64
           scalar: the masks are a function of seed and step, lower/dropout.py).
  outputs  `loss`, each metric by name, `grad_norm` (global norm before clipping), then
           `<param>.next` and `<param>.<slot>.next` for every parameter and slot, then with
           tbptt the final state parts `state.<cell>.<path>.next`.
Initial parameter values are the initializers of the same names in eval.onnx (written
beside it); slots start at zero; `step` at 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .metadata import metadata
from .export import to_model
from .api import finalize
from .grad.reverse import param_gradients
from .ir import Model
from .lower.chunked import fallback_policy, parse_memory
from .lower.dropout import DropoutSource
from .lower.model import ModelLowering, _rename_output
from .grad.sink import sink_into_loops
from .lower.unroll import unroll_marked
from .optim import apply_updates, slot_names


@dataclass
class TrainModel:
    onnx: onnx.ModelProto
    params: dict[str, np.ndarray]          # initial values
    slots: dict[str, np.ndarray]           # "<param>.<slot>" -> zeros
    data_inputs: list[str]
    state_io: list[tuple[str, str, int]]
    metrics: list[str]
    strategies: list[tuple[str, str]]
    graph: object = None                   # the tensor graph exported (placement cuts it into segments)


def _lower_loss(model: Model, fdtype: str, seed: int, unroll: str, weights, stateful: bool,
                window: bool = False, training: bool = True, target: str = "cpu",
                memory: str = "store") -> tuple[ModelLowering, list]:
    if model.loss is None:
        raise ValueError("the spec has no loss")
    parse_memory(memory)          # a bad policy is refused before any work
    lw = ModelLowering(model, fdtype, seed, unroll, weights)
    lw.runner.target = target
    lw.training = training
    lw.memory = memory if training else "store"
    if training:     # dropout lives in differentiated graphs only (lower/dropout.py)
        lw.runner.dropout = DropoutSource(lw.b)
    lw.expose_state = stateful
    lw.window = window
    outs = [_rename_output(lw.b, lw.lower(model.loss), "loss")]
    for name, e in model.metrics:
        outs.append(_rename_output(lw.b, lw.lower(e), name))
    return lw, outs


def build_eval(model: Model, unroll: str = "auto", fdtype: str = "f32", seed: int = 0,
               weights: dict | None = None, target: str = "cpu") -> onnx.ModelProto:
    lw, outs = _lower_loss(model, fdtype, seed, unroll, weights, stateful=False, training=False, target=target)
    lw.g.outputs = [t.v for t in outs]
    g = finalize(lw.g)
    return to_model(g, model.name, metadata(model, {"rnnc.kind": "eval"}))


def _params_to_inputs(g, names: list[str]) -> None:
    """Parameters become plain inputs (fed each step, not baked in)."""
    for n in names:
        g.inputs.append(g.values[n])
        del g.initializers[n]
    g.params = []


def build_train(model: Model, unroll: str = "auto", fdtype: str = "f32", seed: int = 0,
                weights: dict | None = None, memory: str = "store") -> TrainModel:
    """One optimizer step as a model; `memory` is what loops keep for the backward pass:
    "store" (every value the gradient reads), "recompute" (only the states) or
    "checkpoint[:K]" (only the state every K steps: loops over chunks, lower/chunked.py)."""
    cfg = model.train
    tbptt = cfg.tbptt is not None
    lw, outs = _lower_loss(model, fdtype, seed, "loop" if tbptt else unroll, weights, stateful=tbptt,
                           window=tbptt, memory=memory)
    g, b = lw.g, lw.b
    loss = outs[0]
    param_names = list(g.params)
    init_values = {n: g.initializers[n] for n in param_names}
    data_inputs = [v.name for v in g.inputs]

    placed = {i: n.placement for n in g.nodes for i in n.inputs if i in set(param_names)}   # for updates
    grads = param_gradients(b, list(g.nodes), {loss.name: b.const(1.0)}, param_names,
                            memory=fallback_policy(memory))
    unroll_marked(b)              # static runs were loops until differentiated (lower/unroll.py)
    params = {n: b.tensor(n) for n in param_names}
    slot_kinds = slot_names(cfg.optimizer, dict(cfg.optimizer_args))
    slots = {n: {k: b.input(f"{n}.{k}", b.fdtype, params[n].shape) for k in slot_kinds} for n in param_names}
    lr = b.input("lr", b.fdtype, ())
    step = b.tensor("step") if "step" in {v.name for v in g.inputs} else b.input("step", "i64", ())
    new_params, new_slots, norm = apply_updates(b, cfg, params, grads, slots, lr, step, placed)

    outputs = outs + [_rename_output(b, norm, "grad_norm")]
    for n in param_names:
        outputs.append(_rename_output(b, new_params[n], f"{n}.next"))
    for n in param_names:
        for k in slot_kinds:
            outputs.append(_rename_output(b, new_slots[n][k], f"{n}.{k}.next"))
    outputs += lw.extra_outputs
    g.outputs = [t.v for t in outputs]

    _params_to_inputs(g, param_names)
    sink_into_loops(g, b.fresh)   # the stepwise pass's per-step work, back into the forward loop
    slot_values = {f"{n}.{k}": np.zeros_like(init_values[n]) for n in param_names for k in slot_kinds}
    g = finalize(g, keep_inputs=("lr", "step"))
    extra = {"rnnc.kind": "train", "rnnc.optimizer": cfg.optimizer,
             "rnnc.optimizer_args": dict(cfg.optimizer_args), "rnnc.params": param_names,
             "rnnc.slots": list(slot_kinds), "rnnc.metrics": [n for n, _ in model.metrics],
             "rnnc.state": [{"input": i, "output": o, "size": s} for i, o, s in lw.state_io]}
    proto = to_model(g, model.name, metadata(model, extra))
    data = [n for n in data_inputs if n in {v.name for v in g.inputs} and not n.startswith("state.")]
    return TrainModel(proto, init_values, slot_values, data, lw.state_io,
                      [n for n, _ in model.metrics], lw.strategies, g)



def build_grad(model: Model, unroll: str = "auto", fdtype: str = "f64", seed: int = 0,
               weights: dict | None = None, wrt_inputs: tuple[str, ...] = (),
               memory: str = "store") -> onnx.ModelProto:
    """loss and `grad.<name>` for every parameter (and each input in `wrt_inputs`), with the
    parameters as inputs: what gradient checks and apps computing gradients need."""
    lw, outs = _lower_loss(model, fdtype, seed, unroll, weights, stateful=False, memory=memory)
    g, b = lw.g, lw.b
    names = list(g.params) + [n for n in wrt_inputs]
    grads = param_gradients(b, list(g.nodes), {outs[0].name: b.const(1.0)}, names,
                            memory=fallback_policy(memory))
    unroll_marked(b)
    outputs = [outs[0]]
    for n in names:
        t = grads.get(n) or b.zeros_like(b.tensor(n))
        outputs.append(_rename_output(b, t, f"grad.{n}"))
    g.outputs = [t.v for t in outputs]
    _params_to_inputs(g, list(g.params))
    sink_into_loops(g, b.fresh)
    g = finalize(g)
    return to_model(g, model.name, metadata(model, {"rnnc.kind": "grad"}))
