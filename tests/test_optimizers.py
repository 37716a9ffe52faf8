"""The train model's optimizer step against the numpy reference (tests/reference.py).

For each optimizer (sgd, sgd with momentum 0.9, adam, adam with its own betas/eps, adamw
with weight_decay=0.1, adam and sgd with a clip_norm small enough to clip), three steps of
the float64 train model are run with onnxruntime — feeding `<param>.next` and the slots'
`.next` back, `step` = 0, 1, 2, a fixed `lr`, a different data batch each step — and after
each step every parameter and slot is compared (≤ 1e-10) with the reference optimizer
(PyTorch semantics; clipping as TF1's clip_by_global_norm) applied to the gradients of
`build_grad` at the same parameters. `grad_norm` must be the global norm of those
gradients (before clipping), `loss` the gradient model's loss. Also: `lr` is an input
(the step is linear in lr, and the spec's lr is not baked in).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from rnnc.api import check
from rnnc.training_graph import build_grad, build_train

try:
    from tests import reference as R
    from tests.test_gradients import _seed, session
except ImportError:  # tests/ itself on sys.path
    import reference as R
    from test_gradients import _seed, session

B, T, I = 3, 4, 3
TOL = 1e-10

BASE = """
model opt
input x: f32[batch, 4, 3]
input n: i64[batch]
input y: i64[batch]
cell rnn = gru(3)
seq, last = rnn(x, lengths=n)
logits = dense(last, 3)
loss = softmax_cross_entropy(logits, y)
metric accuracy(logits, y)
output probs = softmax(logits)
train {{ optimizer {opt}  batch 3  steps 10 }}
"""

OPTIMIZERS = {
    # name: (optimizer call in the spec, reference kind, reference kwargs, clip_norm, lr fed)
    "sgd": ("sgd(lr=0.1)", "sgd", {}, None, 0.1),
    "sgd_momentum": ("sgd(lr=0.1, momentum=0.9)", "sgd", {"momentum": 0.9}, None, 0.1),
    "sgd_clip": ("sgd(lr=0.1, clip_norm=0.05)", "sgd", {}, 0.05, 0.1),
    "adam": ("adam(lr=0.01)", "adam", {}, None, 0.01),
    "adam_betas": ("adam(lr=0.01, beta1=0.8, beta2=0.99, eps=0.001)", "adam",
                   {"beta1": 0.8, "beta2": 0.99, "eps": 1e-3}, None, 0.01),
    "adamw": ("adamw(lr=0.01, weight_decay=0.1)", "adamw", {"weight_decay": 0.1}, None, 0.01),
    "adam_clip": ("adam(lr=0.01, clip_norm=0.05)", "adam", {}, 0.05, 0.01),
}
SPECS = {k: BASE.format(opt=v[0]) for k, v in OPTIMIZERS.items()}
SLOTS = {"sgd": (), "sgd_momentum": ("momentum",), "sgd_clip": ()}


def batch(rng) -> dict[str, np.ndarray]:
    return {"x": rng.normal(size=(B, T, I)),
            "n": np.array([0, T, 2], dtype=np.int64),
            "y": rng.integers(0, 3, size=B).astype(np.int64)}


@functools.lru_cache(maxsize=None)
def built(name: str, unroll: str):
    model = check("o.rnn", text=SPECS[name])
    tm = build_train(model, unroll=unroll, fdtype="f64")
    grad = build_grad(model, unroll=unroll, fdtype="f64")
    return tm, session(tm.onnx), session(grad)


def random_params(tm, name):
    rng = np.random.default_rng(_seed(name, "params"))
    return {k: rng.normal(scale=0.5, size=v.shape) for k, v in sorted(tm.params.items())}


def grads_at(gsess, params, data):
    outs = gsess.run(None, {**data, **params})
    names = [o.name for o in gsess.get_outputs()]
    got = dict(zip(names, outs))
    return float(got["loss"]), {k[len("grad."):]: v for k, v in got.items() if k.startswith("grad.")}


def train_step(tsess, tm, params, slots, data, lr, step):
    feeds = {**data, **params, **slots, "lr": np.array(lr, np.float64), "step": np.array(step, np.int64)}
    names = {i.name for i in tsess.get_inputs()}
    assert names <= set(feeds), names - set(feeds)
    # (`step` is documented as always an input; test_train_model_interface checks that)
    outs = tsess.run(None, {k: v for k, v in feeds.items() if k in names})
    return dict(zip([o.name for o in tsess.get_outputs()], outs))


def reference_step(kind, kwargs, clip, params, grads, state, lr):
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    if clip is not None:
        grads, norm2 = R.clip_by_global_norm(grads, clip)
        assert norm2 == pytest.approx(norm, rel=1e-14)
    fn = {"sgd": R.sgd, "adam": R.adam, "adamw": R.adamw}[kind]
    new, state = fn(params, grads, state, lr, **kwargs)
    return new, state, norm


def ref_slots(kind, state, names):
    """The reference optimizer state as the train model's slot names."""
    if kind == "sgd":
        bufs = state.get("momentum_buffer")
        return {} if bufs is None else {f"{n}.momentum": bufs[n] for n in names}
    return {**{f"{n}.m": state["m"][n] for n in names}, **{f"{n}.v": state["v"][n] for n in names}}


@pytest.mark.parametrize("unroll", ["static", "loop"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_three_steps_match_reference(name, unroll):
    _, kind, kwargs, clip, lr = OPTIMIZERS[name]
    tm, tsess, gsess = built(name, unroll)
    slot_kinds = SLOTS.get(name, ("m", "v"))
    assert set(tm.slots) == {f"{p}.{k}" for p in tm.params for k in slot_kinds}
    assert all(np.all(v == 0) for v in tm.slots.values())
    assert set(tm.data_inputs) == {"x", "n", "y"}

    params = random_params(tm, name)
    slots = {k: np.zeros_like(v) for k, v in tm.slots.items()}
    ref_params, ref_state = dict(params), None
    rng = np.random.default_rng(_seed(name, "data"))
    clipped = False
    for step in range(3):
        data = batch(rng)
        loss, grads = grads_at(gsess, ref_params, data)
        assert set(grads) == set(tm.params)
        ref_params, ref_state, norm = reference_step(kind, kwargs, clip, ref_params, grads, ref_state, lr)
        clipped |= clip is not None and norm > clip
        out = train_step(tsess, tm, params, slots, data, lr, step)

        assert float(out["loss"]) == pytest.approx(loss, rel=1e-12, abs=1e-12)
        assert "accuracy" in out
        assert float(out["grad_norm"]) == pytest.approx(norm, rel=1e-12, abs=1e-14), "grad_norm"
        for p in params:
            np.testing.assert_allclose(out[f"{p}.next"], ref_params[p], rtol=TOL, atol=TOL,
                                       err_msg=f"{name}/{unroll} step {step}: {p}")
        want_slots = ref_slots(kind, ref_state, list(params))
        assert set(want_slots) == set(slots)
        for s in slots:
            np.testing.assert_allclose(out[f"{s}.next"], want_slots[s], rtol=TOL, atol=TOL,
                                       err_msg=f"{name}/{unroll} step {step}: slot {s}")
        # feed the model's own outputs back
        params = {p: out[f"{p}.next"] for p in params}
        slots = {s: out[f"{s}.next"] for s in slots}
    if clip is not None:
        assert clipped, "clip_norm chosen too large: clipping never happened"


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_train_model_interface(name):
    """training_graph.py / the brief: inputs are the data inputs, every parameter, every slot,
    `lr` (scalar, float) and `step` (i64 scalar) — whatever the optimizer (a driver such as
    rnnc/train.py feeds `step` every time); outputs `loss`, the metrics, `grad_norm`,
    `<param>.next`, `<slot>.next`."""
    tm, tsess, _ = built(name, "loop")
    inputs = {i.name: i for i in tsess.get_inputs()}
    want = set(tm.data_inputs) | set(tm.params) | set(tm.slots) | {"lr", "step"}
    assert set(inputs) == want, f"missing {sorted(want - set(inputs))}, extra {sorted(set(inputs) - want)}"
    assert inputs["lr"].type == "tensor(double)" and inputs["lr"].shape == []
    assert inputs["step"].type == "tensor(int64)" and inputs["step"].shape == []
    outputs = [o.name for o in tsess.get_outputs()]
    assert outputs[:3] == ["loss", "accuracy", "grad_norm"]
    assert set(outputs[3:]) == {f"{k}.next" for k in list(tm.params) + list(tm.slots)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lr_is_an_input(name):
    """One step from the same state: the change of every parameter is linear in lr (adamw's
    decay included), and the spec's lr is not baked in."""
    _, kind, kwargs, clip, lr = OPTIMIZERS[name]
    tm, tsess, gsess = built(name, "loop")
    params = random_params(tm, name)
    rng = np.random.default_rng(_seed(name, "lr"))
    data = batch(rng)
    # a non-zero state, so momentum / adam slots take part
    slots = {k: rng.normal(scale=0.1, size=v.shape) ** 2 for k, v in tm.slots.items()}
    a = train_step(tsess, tm, params, slots, data, lr, 1)
    b = train_step(tsess, tm, params, slots, data, 3 * lr, 1)
    for p in params:
        da, db = a[f"{p}.next"] - params[p], b[f"{p}.next"] - params[p]
        assert np.max(np.abs(da)) > 0
        np.testing.assert_allclose(db, 3 * da, rtol=1e-9, atol=1e-13, err_msg=p)
    for s in slots:        # slots do not depend on lr
        np.testing.assert_allclose(a[f"{s}.next"], b[f"{s}.next"], rtol=0, atol=0)
    # and the reference agrees on the lr fed, not the spec's
    _, grads = grads_at(gsess, params, data)
    if kind == "sgd":
        state = {"momentum_buffer": {p: slots[f"{p}.momentum"] for p in params}} if slots else None
    else:
        state = {"step": 1, "m": {p: slots[f"{p}.m"] for p in params}, "v": {p: slots[f"{p}.v"] for p in params}}
    ref, _, _ = reference_step(kind, kwargs, clip, params, grads, state, 3 * lr)
    for p in params:
        np.testing.assert_allclose(b[f"{p}.next"], ref[p], rtol=TOL, atol=TOL, err_msg=p)


def test_grad_norm_is_global_norm_before_clipping():
    tm, tsess, gsess = built("adam_clip", "loop")
    params = random_params(tm, "adam_clip")
    data = batch(np.random.default_rng(7))
    _, grads = grads_at(gsess, params, data)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    out = train_step(tsess, tm, params, {k: np.zeros_like(v) for k, v in tm.slots.items()}, data, 0.01, 0)
    assert norm > 0.05
    assert float(out["grad_norm"]) == pytest.approx(norm, rel=1e-12)


def test_default_optimizer_without_train_block():
    """LANGUAGE.md §6: without a `train` block the optimizer is adam(lr=0.001) — with adam's
    default betas and eps. build_train must build it and step like the reference."""
    text = SPECS["adam"].split("train {")[0]
    model = check("o.rnn", text=text)
    tm = build_train(model, unroll="loop", fdtype="f64")
    tsess = session(tm.onnx)
    gsess = session(build_grad(model, unroll="loop", fdtype="f64"))
    params = random_params(tm, "default")
    data = batch(np.random.default_rng(3))
    _, grads = grads_at(gsess, params, data)
    ref, _, _ = reference_step("adam", {}, None, params, grads, None, 0.001)
    out = train_step(tsess, tm, params, dict(tm.slots), data, 0.001, 0)
    for p in params:
        np.testing.assert_allclose(out[f"{p}.next"], ref[p], rtol=TOL, atol=TOL, err_msg=p)
