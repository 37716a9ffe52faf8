"""Keras layout (Keras 3 `SimpleRNN`, `LSTM`, `GRU`, `Dense` weights, saved to .npz by path).

Each built-in cell is one Keras cell with the tensors `<prefix>/kernel` (input, G·H),
`<prefix>/recurrent_kernel` (H, G·H) and `<prefix>/bias`. The prefix of an rnnc cell path
(`rnn`, `deep.1`, `enc.fw`) is the path with '/' for '.', unless `--map` gives it: Keras 3
names its variables `sequential/lstm/lstm_cell/kernel`, so write
`--map rnn=sequential/lstm/lstm_cell`, and for `bi`
`--map enc.fw=sequential/bidirectional/forward_gru/gru_cell --map enc.bw=.../backward_gru/gru_cell`.
Save a model's weights with `np.savez(f, **{v.path: v.numpy() for v in model.weights})`.
A `dense` target `logits` is `<prefix>/kernel` (in, out) and `<prefix>/bias`.

    basic  (SimpleRNN) W = kernel, U = recurrent_kernel, b = bias               (nothing folded)
    lstm   gates i,f,c,o → rnnc i,j,f,o; b = bias − forget_bias on the f block  (b folded
           unless forget_bias=0.0; export adds it back)
    gru    gates z,r,h → rnnc r,z,candidate; reset_after=true: bias (2, 3H) = [b; bU];
           reset_after=false: bias (3H) = b                                      (nothing folded)
Keras' LSTM has no peepholes, projection or cell clip: those cells are refused. Keras'
default activations (tanh, recurrent sigmoid) are assumed.
"""
from __future__ import annotations

import numpy as np

from .common import Source, blocks, f32, forget_bias_vector, import_denses, join, source_prefix
from .structure import Structure

NAME = "Keras"
GATES = {"basic": 1, "lstm": 4, "gru": 3}
LSTM_PERM = [0, 2, 1, 3]     # rnnc i,j,f,o  <- keras i,f,c,o (its own inverse)
GRU_PERM = [1, 0, 2]         # rnnc r,z,h   <- keras z,r,h (its own inverse)


def render(head, rest):
    return join("/", head, rest)


def unsupported(st: Structure, diag) -> set[str]:
    """Report the cells Keras cannot express; their paths."""
    bad = set()
    for u in st.cells:
        if not u.builtin:
            diag(f"user cell {u.kind} '{u.path}' has no Keras form", u.span)
            bad.add(u.path)
        elif u.kind == "lstm":
            for opt, why in (("peepholes", "has no peepholes"), ("proj", "has no projection (proj=)"),
                             ("clip", "does not clip its cell state")):
                if u.options[opt] not in (None, False):
                    diag(f"{u.describe()}: Keras' LSTM {why}", u.span)
                    bad.add(u.path)
                    break
    return bad


def import_(st: Structure, src: Source, maps: dict, skip: set[str]) -> dict[str, np.ndarray]:
    out = {}
    for u in st.cells:
        if u.path in skip:
            continue
        n, _ = source_prefix(u.path, maps, render)
        G, H, I = GATES[u.kind], u.units, u.input_size
        what = u.describe()
        k = src.get(render(n, ["kernel"]), (I, G * H), what, u.span)
        r = src.get(render(n, ["recurrent_kernel"]), (H, G * H), what, u.span)
        bname = render(n, ["bias"])
        ra = u.kind == "gru" and u.options["reset_after"]
        hint = None
        if u.kind == "gru" and src.has(bname):
            shape = np.shape(src.tensors[bname])
            if shape == (2, 3 * H) and not ra:
                hint = f"a bias of shape (2, {3 * H}) is a Keras GRU with reset_after=True: write gru({H}, reset_after=true)"
            elif shape == (3 * H,) and ra:
                hint = f"a bias of shape ({3 * H},) is a Keras GRU with reset_after=False: write gru({H})"
        b = src.get(bname, (2, 3 * H) if ra else (G * H,), what, u.span, hint)
        if k is None or r is None or b is None:
            continue
        p = u.path
        if u.kind == "basic":
            out[f"{p}.W"], out[f"{p}.U"], out[f"{p}.b"] = f32(k), f32(r), f32(b)
        elif u.kind == "lstm":
            out[f"{p}.W"], out[f"{p}.U"] = f32(blocks(k, LSTM_PERM, 1)), f32(blocks(r, LSTM_PERM, 1))
            out[f"{p}.b"] = f32(blocks(b, LSTM_PERM, 0) - forget_bias_vector(u))
        else:
            out[f"{p}.W"], out[f"{p}.U"] = f32(blocks(k, GRU_PERM, 1)), f32(blocks(r, GRU_PERM, 1))
            if ra:
                out[f"{p}.b"], out[f"{p}.bU"] = f32(blocks(b[0], GRU_PERM, 0)), f32(blocks(b[1], GRU_PERM, 0))
            else:
                out[f"{p}.b"] = f32(blocks(b, GRU_PERM, 0))
    import_denses(st, src, maps, render, out)
    return out


def export(st: Structure, params: dict, maps: dict) -> dict[str, np.ndarray]:
    out = {}
    for u in st.cells:
        n, _ = source_prefix(u.path, maps, render)
        p = u.path
        W, U, b = params[f"{p}.W"], params[f"{p}.U"], params[f"{p}.b"]
        if u.kind == "basic":
            t = (W, U, b)
        elif u.kind == "lstm":
            t = (blocks(W, LSTM_PERM, 1), blocks(U, LSTM_PERM, 1), blocks(b, LSTM_PERM, 0) + blocks(forget_bias_vector(u), LSTM_PERM, 0))
        elif u.options["reset_after"]:
            t = (blocks(W, GRU_PERM, 1), blocks(U, GRU_PERM, 1),
                 np.stack([blocks(b, GRU_PERM, 0), blocks(params[f"{p}.bU"], GRU_PERM, 0)]))
        else:
            t = (blocks(W, GRU_PERM, 1), blocks(U, GRU_PERM, 1), blocks(b, GRU_PERM, 0))
        for name, v in zip(("kernel", "recurrent_kernel", "bias"), t):
            out[render(n, [name])] = f32(v)
    for dn in st.denses:
        n, _ = source_prefix(dn.path, maps, render)
        out[render(n, ["kernel"])], out[render(n, ["bias"])] = f32(params[f"{dn.path}.W"]), f32(params[f"{dn.path}.b"])
    return out
