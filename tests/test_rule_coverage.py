"""Every operator the lowering and the gradient code emit has a gradient rule, and every
rule is checked numerically.

1. Op coverage: the ops of the forward graphs (eval models) of every spec with a loss (the
   cases of tests/test_gradients.py, the optimizer specs, specs/*.rnn) are each in
   ``RULES`` ∪ ``NON_DIFFERENTIABLE`` ∪ {Scan}. Ops that appear in grad / train models
   but in no forward graph are emitted by differentiation or the optimizer only
   (``ReduceSumSquare``, ``Pow``, ...): they are collected separately and need no rule.
   Every graph is walked recursively through GRAPH attributes (Scan bodies).

2. Rule exercise: while building the gradient models of the FD-checked cases of
   tests/test_gradients.py, every call of a rule is recorded. Every rule must be
   exercised by some FD-checked case, except the few in ``NOT_IN_FORWARD`` (documented
   below) — and every rule, those included, has its own finite-difference test on a
   hand-made graph here (``test_rule_finite_differences``).

Which case exercises which rule (as recorded: a gradient reaching a non-constant float
input; both lowerings):
    Add Mul MatMul Identity Split Tanh ReduceMean   nearly every case
    Sigmoid Slice                lstm*, gru*, mgu*, stack*, bi*, project, residual
    Concat                       static unrolling (steps joined), bi (directions joined), odd
    Sub Neg                      gru, mgu (1 - z), mse, softmax_cross_entropy
    Div                          odd (`/`), losses with lengths= / weights=
    Where                        every case with lengths= (masking), odd (min/max/relu)
    LogSoftmax                   every softmax_cross_entropy case
    ReduceSum                    losses with lengths= / weights=, softmax_cross_entropy
    Relu                         basic_relu, basic_relu_lengths, odd, odd_lengths
    Min                          lstm_clip, odd, odd_lengths
    Max                          lstm_clip, odd, odd_lengths (and the Σw guard of weighted losses)
    Exp Log Softmax              odd, odd_lengths (user cell)
    ReverseSequence              bi, bi_lengths
    Squeeze GatherElements       every softmax_cross_entropy case (the label's log-probability)
    Cast Expand Unsqueeze Sqrt Reshape Transpose Pad LSTM    see NOT_IN_FORWARD
`test_rule_case_table` prints the recorded table (pytest -s).
"""

from __future__ import annotations

import functools
import glob
import os

import numpy as np
import onnx
import pytest

import rnnc.grad.rules as rules_mod
from rnnc.api import check
from rnnc.builder import Builder
from rnnc.export import to_model
from rnnc.grad.reverse import backprop
from rnnc.grad.rules import NON_DIFFERENTIABLE, RULES
from rnnc.graph import Graph
from rnnc.lower.model import _rename_output
from rnnc.training_graph import build_eval, build_grad, build_train

try:
    from tests import test_gradients as TG
    from tests import test_optimizers as TO
except ImportError:  # tests/ itself on sys.path
    import test_gradients as TG
    import test_optimizers as TO

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_DIR = os.path.join(os.path.dirname(HERE), "specs")

# Rules no forward graph of an FD-checked case sends a gradient through, and why. Each is
# still checked by finite differences on a hand-made graph below.
NOT_IN_FORWARD = {
    "Sqrt": "only in the optimizer update (after differentiation); second order only",
    "Reshape": "emitted only by gradient rules (MatMul/Gather flatten); second order only",
    "Pad": "emitted only by gradient rules (Slice, Gather); second order only",
    "Expand": "forward Expands build zero states / full lengths from constants: no gradient flows",
    "Cast": "forward Casts are of integers and booleans (masks, labels): no float gradient",
    "Gather": "row lookups (embeddings) come with seq2seq; the static unroll slices steps with Split",
    "Unsqueeze": "training graphs differentiate static runs as loops and unroll them after "
                 "(lower/unroll.py); seq2seq's static decoder and the fused LSTM's states use it",
    "LSTM": "onnxruntime's LSTM runs float32 only: tests/test_fused_training.py checks its rule "
            "against the float64 loop gradient and a central difference",
}
FLOAT32_ONLY = {"LSTM"}      # no float64 hand-made case can run these


# --------------------------------------------------------------------------------------
# walking ONNX graphs
# --------------------------------------------------------------------------------------


def ops_of(graph: onnx.GraphProto) -> set[str]:
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                ops |= ops_of(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    ops |= ops_of(g)
    return ops


def _spec_files() -> list[str]:
    return sorted(glob.glob(os.path.join(SPEC_DIR, "*.rnn")))


def _labels() -> list[str]:
    out = [f"case:{c.name}" for c in TG.CASES] + [f"optim:{k}" for k in TO.SPECS]
    return out + [f"spec:{os.path.basename(p)}" for p in _spec_files()]


@functools.lru_cache(maxsize=None)
def _model(label: str):
    kind, name = label.split(":", 1)
    if kind == "case":
        return TG.model_of(TG.CASE_BY_NAME[name].spec)
    if kind == "optim":
        return check("o.rnn", text=TO.SPECS[name])
    return check(os.path.join(SPEC_DIR, name))


def _fixed_time(model) -> bool:
    from rnnc.lower.model import sequence_time_dims  # noqa: PLC0415
    return all(isinstance(d, int) for d in sequence_time_dims(model))


def _unrolls(model) -> list[str]:
    return ["static", "loop"] if _fixed_time(model) else ["loop"]


@functools.lru_cache(maxsize=None)
def op_sets(label: str) -> tuple[frozenset, frozenset]:
    """(ops of the forward graphs, ops of the grad and train models), both lowerings."""
    m = _model(label)
    if m.loss is None or m.unsupported:
        pytest.skip("no loss" if m.loss is None else "uses constructs this release does not compile")
    fw, dv = set(), set()
    for u in _unrolls(m):
        fw |= ops_of(build_eval(m, unroll=u, fdtype="f64").graph)
        dv |= ops_of(build_grad(m, unroll=u, fdtype="f64").graph)
        dv |= ops_of(build_train(m, unroll=u, fdtype="f64").onnx.graph)
    return frozenset(fw), frozenset(dv)


# --------------------------------------------------------------------------------------
# 1. every op emitted has a rule or is declared non-differentiable
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", _labels())
def test_forward_ops_have_rules(label):
    forward, derived = op_sets(label)
    # If: the guard against empty input wrapped around each loop at export
    # (rnnc/lower/guard.py), after differentiation: never differentiated itself
    known = set(RULES) | set(NON_DIFFERENTIABLE) | {"Scan", "If"}
    assert not forward - known, f"forward ops with neither a rule nor a NON_DIFFERENTIABLE entry: " \
                                f"{sorted(forward - known)}"
    assert "MatMul" in forward and "Identity" in derived


def test_ops_only_after_differentiation_are_collected():
    """Ops only in grad/train models need no rule; they are listed, not required. (Those that
    are also in RULES, e.g. Transpose and Pad, are differentiable anyway.)"""
    forward, derived = set(), set()
    for label in _labels():
        try:
            fw, dv = op_sets(label)
        except pytest.skip.Exception:
            continue
        forward |= fw
        derived |= dv
    only_after = derived - forward
    known = set(RULES) | set(NON_DIFFERENTIABLE) | {"Scan"}
    print("\nops only after differentiation:", sorted(only_after))
    print("  ... of which without a rule:", sorted(only_after - known))
    # the optimizer's own ops are among them (they are never differentiated)
    assert "ReduceSumSquare" in only_after


def test_spec_files_are_included():
    assert "spec:digits.rnn" in _labels()


# --------------------------------------------------------------------------------------
# 2. every rule is exercised by an FD-checked case
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rule_table():
    """op -> set of FD-checked cases whose gradient construction called its rule."""
    table: dict[str, set] = {op: set() for op in RULES}
    current = {"case": None}
    saved = dict(RULES)

    def recorder(op, fn):
        def wrapped(b, node, ins, outs, gouts):
            gins = fn(b, node, ins, outs, gouts)
            # counted only where a gradient reaches a float input that is not a constant
            # (the Expand of a zero state or the Cast of a bool mask call their rules
            # with nothing to differentiate)
            root = b.root.g
            consts = set(root.initializers) - set(root.params)
            if any(g is not None and t is not None and t.dtype in ("f32", "f64") and t.name not in consts
                   for g, t in zip(gins, ins)):
                table[op].add(current["case"])
            return gins
        return wrapped

    try:
        for op, fn in saved.items():
            RULES[op] = recorder(op, fn)
        for c in TG.CASES:
            for u in c.unrolls:
                current["case"] = c.name
                build_grad(TG.model_of(c.spec), unroll=u, fdtype="f64", wrt_inputs=c.wrt)
    finally:
        RULES.clear()
        RULES.update(saved)
    assert rules_mod.RULES is RULES
    return table


def test_every_rule_is_exercised_by_an_fd_checked_case(rule_table):
    unexercised = {op for op, cases in rule_table.items() if not cases}
    undocumented = unexercised - set(NOT_IN_FORWARD)
    assert not undocumented, f"rules no FD-checked case exercises: {sorted(undocumented)}"
    # and the documented exceptions are still true (a case now covering one is welcome,
    # but then it should leave the list)
    stale = set(NOT_IN_FORWARD) - unexercised
    assert not stale, f"now exercised by a case, remove from NOT_IN_FORWARD: {sorted(stale)}"


def test_rule_case_table(rule_table):
    for op in sorted(rule_table):
        cases = sorted(rule_table[op])
        shown = ", ".join(cases[:6]) + (f", ... ({len(cases)})" if len(cases) > 6 else "")
        print(f"{op:16s} {shown or '— ' + NOT_IN_FORWARD.get(op, '?')}")
    assert rule_table["ReverseSequence"] >= {"bi", "bi_lengths"}
    assert {"odd", "odd_lengths"} <= rule_table["Min"] & rule_table["Max"] & rule_table["Softmax"]
    assert rule_table["Relu"] >= {"basic_relu", "basic_relu_lengths"}


# --------------------------------------------------------------------------------------
# 3. every rule on its own: finite differences on a hand-made graph
# --------------------------------------------------------------------------------------

_I64 = lambda b, v: b.const(np.array(v, np.int64), "i64")  # noqa: E731

# op -> (input shapes, input sampler kind, graph builder)
#   kinds: "any" normal values; "pos" in [0.5, 1.5]; "away" |v| in [0.3, 1.3], random sign
HAND = {
    "Add": ([(2, 3), (3,)], "any", lambda b, x, y: b.add(x, y)),
    "Sub": ([(2, 3), (2, 1)], "any", lambda b, x, y: b.sub(x, y)),
    "Mul": ([(2, 3), (2, 3)], "any", lambda b, x, y: b.mul(x, y)),
    "Div": ([(2, 3), (3,)], "pos", lambda b, x, y: b.div(x, y)),
    "Neg": ([(2, 3)], "any", lambda b, x: b.neg(x)),
    "Identity": ([(2, 3)], "any", lambda b, x: b.identity(x)),
    "MatMul": ([(2, 4, 3), (3, 2)], "any", lambda b, x, w: b.matmul(x, w)),
    "MatMul/2d": ([(2, 3), (3, 2)], "any", lambda b, x, w: b.matmul(x, w)),
    "MatMul/batched": ([(2, 4, 3), (2, 3, 2)], "any", lambda b, x, w: b.matmul(x, w)),
    "Sigmoid": ([(2, 3)], "any", lambda b, x: b.sigmoid(x)),
    "Tanh": ([(2, 3)], "any", lambda b, x: b.tanh(x)),
    "Relu": ([(2, 3)], "away", lambda b, x: b.relu(x)),
    "Exp": ([(2, 3)], "any", lambda b, x: b.exp(x)),
    "Log": ([(2, 3)], "pos", lambda b, x: b.log(x)),
    "Sqrt": ([(2, 3)], "pos", lambda b, x: b.sqrt(x)),
    "Min": ([(2, 3), (2, 3)], "any", lambda b, x, y: b.minimum(x, y)),
    "Max": ([(2, 3), (3,)], "any", lambda b, x, y: b.maximum(x, y)),
    "Where": ([(2, 3), (2, 3)], "any",
              lambda b, x, y: b.where(b.const(np.array([[True, False, True], [False, False, True]]), "bool"),
                                      x, y)),
    "Softmax": ([(2, 4)], "any", lambda b, x: b.softmax(x)),
    "LogSoftmax": ([(2, 4)], "any", lambda b, x: b.log_softmax(x)),
    "Cast": ([(2, 3)], "any", lambda b, x: b.op("Cast", [x], x.shape, dtype="f64", attrs={"to": "f64"})),
    "Concat": ([(2, 2), (2, 3)], "any", lambda b, x, y: b.concat([x, y], axis=-1)),
    "Concat/axis1": ([(2, 1, 3), (2, 2, 3)], "any", lambda b, x, y: b.concat([x, y], axis=1)),
    "Slice": ([(2, 5)], "any", lambda b, x: b.slice(x, 1, 4, -1)),
    "Slice/axis0": ([(4, 2)], "any", lambda b, x: b.slice(x, 2, 4, 0)),
    "Gather": ([(2, 4, 3)], "any", lambda b, x: b.gather(x, _I64(b, 2), axis=1)),
    "Split": ([(2, 6)], "any", lambda b, x: b.concat(b.split_sizes(x, [1, 2, 3])[::-1], axis=-1)),
    "Split/one": ([(2, 4, 3)], "any", lambda b, x: b.split_sizes(x, [1, 3], axis=1)[1]),
    # rows (embeddings, repeated ids): seq2seq only, so checked here and nowhere else
    "Gather/rows": ([(5, 3)], "any", lambda b, x: b.gather(x, _I64(b, [[0, 2], [2, 4], [2, 2]]), axis=0)),
    "Unsqueeze": ([(2, 3)], "any", lambda b, x: b.unsqueeze(x, [1])),
    "Squeeze": ([(2, 1, 3)], "any", lambda b, x: b.squeeze(x, [1])),
    "Reshape": ([(2, 3)], "any", lambda b, x: b.reshape_to(x, [3, 2], (3, 2))),
    "Transpose": ([(2, 3, 4)], "any", lambda b, x: b.transpose(x, [2, 0, 1])),
    "Expand": ([(1, 3)], "any", lambda b, x: b.expand(x, _I64(b, [4, 3]), (4, 3))),
    "ReduceSum": ([(2, 3, 4)], "any", lambda b, x: b.reduce_sum(x, [1])),
    "ReduceSum/keepdims": ([(2, 3, 4)], "any", lambda b, x: b.reduce_sum(x, [0, 2], keepdims=True)),
    "ReduceMean": ([(2, 3, 4)], "any",
                   lambda b, x: b.op("ReduceMean", [x, _I64(b, [-1])], (2, 3), attrs={"keepdims": 0})),
    "ReduceMean/all": ([(2, 3)], "any",
                       lambda b, x: b.op("ReduceMean", [x, _I64(b, [0, 1])], (), attrs={"keepdims": 0})),
    "ReverseSequence": ([(3, 4, 2)], "any", lambda b, x: b.reverse_sequence(x, _I64(b, [0, 4, 2]))),
    "GatherElements": ([(3, 4)], "any",
                       lambda b, x: b.op("GatherElements", [x, _I64(b, [[1], [3], [1]])], (3, 1), attrs={"axis": 1})),
    "Pad": ([(2, 3)], "any", lambda b, x: b.op("Pad", [x, _I64(b, [1, 0, 0, 2])], (3, 5))),
}


def _sample(rng, shape, kind):
    if kind == "pos":
        return rng.uniform(0.5, 1.5, size=shape)
    if kind == "away":
        return rng.uniform(0.3, 1.3, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return rng.normal(size=shape)


def _hand_model(key: str, rng):
    shapes, _, fn = HAND[key]
    g = Graph()
    b = Builder(g, "f64")
    xs = [b.input(f"in{i}", "f64", s) for i, s in enumerate(shapes)]
    y = fn(b, *xs)
    assert y.v.name in {o for n in g.nodes for o in n.outputs}
    assert all(isinstance(d, int) for d in y.shape)
    weight = b.const(rng.normal(size=y.shape))
    loss = b.reduce_sum(b.mul(y, weight), list(range(y.rank))) if y.rank else b.mul(y, weight)
    grads = backprop(b, list(g.nodes), {loss.name: b.const(1.0)}, {x.name for x in xs})
    outs = [_rename_output(b, loss, "loss")]
    for x in xs:
        outs.append(_rename_output(b, grads[x.name], f"grad.{x.name}"))
    g.outputs = [t.v for t in outs]
    return to_model(g, key.replace("/", "_")), [x.name for x in xs]


def test_hand_made_cases_cover_every_rule():
    assert set(RULES) - FLOAT32_ONLY <= {k.split("/")[0] for k in HAND}


@pytest.mark.parametrize("key", sorted(HAND))
def test_rule_finite_differences(key):
    rng = np.random.default_rng(TG._seed(key, "hand"))
    proto, names = _hand_model(key, rng)
    op = key.split("/")[0]
    assert op in ops_of(proto.graph)
    shapes, kind, _ = HAND[key]
    feeds = {n: _sample(rng, s, kind) for n, s in zip(names, shapes)}
    sess = TG.session(proto)
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    fwd = TG.session(TG.loss_only(proto))
    for n in names:
        fd = np.zeros_like(feeds[n])
        flat, gflat = feeds[n].reshape(-1), fd.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + TG.FD_EPS
            fp = float(fwd.run(["loss"], feeds)[0])
            flat[i] = old - TG.FD_EPS
            fm = float(fwd.run(["loss"], feeds)[0])
            flat[i] = old
            gflat[i] = (fp - fm) / (2 * TG.FD_EPS)
        err = TG.rel_err(got[f"grad.{n}"], fd)
        assert err <= TG.FD_TOL, f"{key}: d loss / d {n}: relative error {err}"
