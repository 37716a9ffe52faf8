"""TF1 layout: `tf.compat.v1.nn.rnn_cell` variable names (a checkpoint's variables saved to .npz).

The scope of an rnnc cell path follows TF1's defaults: a cell run `rnn` is the scope `rnn`
(`dynamic_rnn`'s default); stack layer k adds `multi_rnn_cell/cell_k`; `bi`'s cells add
`fw` and `bw` (`bidirectional_dynamic_rnn` uses the scope `bidirectional_rnn`: write
`--map enc=bidirectional_rnn`). Under the scope, by cell:

    basic  basic_rnn_cell/kernel [I+H, H], basic_rnn_cell/bias [H]
    lstm   basic_lstm_cell/… or lstm_cell/…: kernel [I+R, 4H], bias [4H] (gates i,j,f,o as
           rnnc's), w_i_diag, w_f_diag, w_o_diag [H] (peepholes), projection/kernel [H, P]
    gru    gru_cell/gates/kernel [I+H, 2H], gru_cell/gates/bias [2H] (r, u),
           gru_cell/candidate/kernel [I+H, H], gru_cell/candidate/bias [H]
A kernel's first I rows are W, the rest U; nothing is reordered or folded, every tensor
maps bit for bit. TF1 adds forget_bias at every step as rnnc does, but it is a constructor
argument, not a variable: the spec's lstm(forget_bias=…) must be the one the TF1 cell was
built with (BasicLSTMCell and LSTMCell default to 1.0, as rnnc does). TF1's GRUCell is
the reset-before form: gru(reset_after=true) is refused. A `dense` target `logits` is
`logits/kernel`, `logits/bias` (tf.layers.dense). Export writes `lstm_cell` for an lstm
with peepholes or a projection, else `basic_lstm_cell`.
"""
from __future__ import annotations

import numpy as np

from .common import Source, f32, import_denses, join, source_prefix
from .structure import Structure

NAME = "TF1"


def render(head, rest):
    parts = []
    for c in rest:
        parts += ["multi_rnn_cell", f"cell_{c}"] if c.isdigit() else [c]
    return join("/", head, parts)


def unsupported(st: Structure, diag) -> set[str]:
    """Report the cells TF1 cannot express; their paths."""
    bad = set()
    for u in st.cells:
        if not u.builtin:
            diag(f"user cell {u.kind} '{u.path}' has no TF1 form", u.span)
            bad.add(u.path)
        elif u.kind == "gru" and u.options["reset_after"]:
            diag(f"{u.describe()}: TF1's GRUCell applies the reset gate before the recurrent matmul", u.span,
                 f"write gru({u.units}) (reset_after=false) for a TF1 GRUCell")
            bad.add(u.path)
    return bad


def _lstm_scope(u) -> str:
    return "lstm_cell" if u.options["peepholes"] or u.options["proj"] else "basic_lstm_cell"


def import_(st: Structure, src: Source, maps: dict, skip: set[str]) -> dict[str, np.ndarray]:
    out = {}
    for u in st.cells:
        if u.path in skip:
            continue
        n, _ = source_prefix(u.path, maps, render)
        H, I, p, what = u.units, u.input_size, u.path, u.describe()
        if u.kind == "basic":
            k = src.get(render(n, ["basic_rnn_cell", "kernel"]), (I + H, H), what, u.span)
            b = src.get(render(n, ["basic_rnn_cell", "bias"]), (H,), what, u.span)
            if k is not None and b is not None:
                out[f"{p}.W"], out[f"{p}.U"], out[f"{p}.b"] = f32(k[:I]), f32(k[I:]), f32(b)
        elif u.kind == "lstm":
            R = u.options["proj"] or H
            scope = next((s for s in ("lstm_cell", "basic_lstm_cell") if src.has(render(n, [s, "kernel"]))),
                         _lstm_scope(u))
            k = src.get(render(n, [scope, "kernel"]), (I + R, 4 * H), what, u.span)
            b = src.get(render(n, [scope, "bias"]), (4 * H,), what, u.span)
            if k is not None and b is not None:
                out[f"{p}.W"], out[f"{p}.U"], out[f"{p}.b"] = f32(k[:I]), f32(k[I:]), f32(b)
            if u.options["peepholes"]:
                for ours, theirs in (("wi", "w_i_diag"), ("wf", "w_f_diag"), ("wo", "w_o_diag")):
                    v = src.get(render(n, [scope, theirs]), (H,), what, u.span)
                    if v is not None:
                        out[f"{p}.{ours}"] = f32(v)
            if u.options["proj"]:
                v = src.get(render(n, [scope, "projection", "kernel"]), (H, R), what, u.span)
                if v is not None:
                    out[f"{p}.P"] = f32(v)
        else:
            gk = src.get(render(n, ["gru_cell", "gates", "kernel"]), (I + H, 2 * H), what, u.span)
            gb = src.get(render(n, ["gru_cell", "gates", "bias"]), (2 * H,), what, u.span)
            ck = src.get(render(n, ["gru_cell", "candidate", "kernel"]), (I + H, H), what, u.span)
            cb = src.get(render(n, ["gru_cell", "candidate", "bias"]), (H,), what, u.span)
            if all(a is not None for a in (gk, gb, ck, cb)):
                out[f"{p}.W"] = f32(np.concatenate([gk[:I], ck[:I]], 1))
                out[f"{p}.U"] = f32(np.concatenate([gk[I:], ck[I:]], 1))
                out[f"{p}.b"] = f32(np.concatenate([gb, cb]))
    import_denses(st, src, maps, render, out)
    return out


def export(st: Structure, params: dict, maps: dict) -> dict[str, np.ndarray]:
    out = {}
    for u in st.cells:
        n, _ = source_prefix(u.path, maps, render)
        p, H = u.path, u.units
        W, U, b = params[f"{p}.W"], params[f"{p}.U"], params[f"{p}.b"]
        if u.kind == "basic":
            out[render(n, ["basic_rnn_cell", "kernel"])] = f32(np.concatenate([W, U]))
            out[render(n, ["basic_rnn_cell", "bias"])] = f32(b)
        elif u.kind == "lstm":
            s = _lstm_scope(u)
            out[render(n, [s, "kernel"])] = f32(np.concatenate([W, U]))
            out[render(n, [s, "bias"])] = f32(b)
            if u.options["peepholes"]:
                for ours, theirs in (("wi", "w_i_diag"), ("wf", "w_f_diag"), ("wo", "w_o_diag")):
                    out[render(n, [s, theirs])] = f32(params[f"{p}.{ours}"])
            if u.options["proj"]:
                out[render(n, [s, "projection", "kernel"])] = f32(params[f"{p}.P"])
        else:
            out[render(n, ["gru_cell", "gates", "kernel"])] = f32(np.concatenate([W[:, :2 * H], U[:, :2 * H]]))
            out[render(n, ["gru_cell", "gates", "bias"])] = f32(b[:2 * H])
            out[render(n, ["gru_cell", "candidate", "kernel"])] = f32(np.concatenate([W[:, 2 * H:], U[:, 2 * H:]]))
            out[render(n, ["gru_cell", "candidate", "bias"])] = f32(b[2 * H:])
    for dn in st.denses:
        n, _ = source_prefix(dn.path, maps, render)
        out[render(n, ["kernel"])], out[render(n, ["bias"])] = f32(params[f"{dn.path}.W"]), f32(params[f"{dn.path}.b"])
    return out
