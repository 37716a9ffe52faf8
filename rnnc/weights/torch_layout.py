"""PyTorch layout: an `nn.RNN` / `nn.LSTM` / `nn.GRU` state_dict (plus `nn.Linear`s).

One cell run's tree is one PyTorch module: a stack's layer k is `_l{k}`, the backward
cell of `bi` is `_l{k}_reverse` (so `stack(bi(lstm(64)), bi(lstm(64)))` is
`nn.LSTM(I, 64, num_layers=2, bidirectional=True)`). The module's name prefix is the cell
run's name (`rnn` → `rnn.weight_ih_l0`), or `--map rnn=encoder.lstm`, or `--map rnn=` for
a bare module's state_dict (found by itself when the spec runs one cell and the file has
no `rnn.` names). A `dense` target `logits` is an `nn.Linear` named `logits` (`--map
logits=fc`: `fc.weight` [out, in], `fc.bias`); a `project` wrapper of `rnn` is `rnn.project`.

    basic  W = weight_ih.T, U = weight_hh.T, b = bias_ih + bias_hh            (b folded)
    lstm   gates i,f,g,o → rnnc i,j,f,o; W = weight_ih.T, U = weight_hh.T, P = weight_hr.T;
           b = bias_ih + bias_hh − forget_bias on the f block                  (b folded)
    gru    gates r,z,n = rnnc r,z,candidate; reset_after=true only;
           W = weight_ih.T, U = weight_hh.T, b = bias_ih, bU = bias_hh        (nothing folded)
Export writes bias_ih = b and bias_hh = 0 (lstm: forget_bias on the f block), so
export → import → export is bit-exact. PyTorch has no peepholes, no cell clip and no
reset-before GRU: those cells are refused.
"""
from __future__ import annotations

import numpy as np

from .common import Source, blocks, f32, forget_bias_vector, join, source_prefix
from .structure import Structure

NAME = "PyTorch"
GATES = {"basic": 1, "lstm": 4, "gru": 3}
LSTM_PERM = [0, 2, 1, 3]      # rnnc block k = PyTorch block LSTM_PERM[k] (and back)


def render(head, rest):
    return join(".", head, rest)


def unsupported(st: Structure, diag) -> set[str]:
    """Report the cells PyTorch cannot express; the paths of every cell of their modules."""
    refused = set()
    for inst in st.instances:
        bad = False
        for u in inst.leaves:
            if not u.builtin:
                diag(f"user cell {u.kind} '{u.path}' has no PyTorch form", u.span); bad = True
            elif u.kind == "lstm" and u.options["peepholes"]:
                diag(f"{u.describe()}: PyTorch's nn.LSTM has no peepholes", u.span); bad = True
            elif u.kind == "lstm" and u.options["clip"] is not None:
                diag(f"{u.describe()}: PyTorch's nn.LSTM does not clip its cell state", u.span); bad = True
            elif u.kind == "gru" and not u.options["reset_after"]:
                diag(f"{u.describe()}: PyTorch's nn.GRU applies the reset gate after the recurrent matmul; "
                     "this is TF1's form (reset before)", u.span, f"write gru({u.units}, reset_after=true)")
                bad = True
        if not bad and inst.problem:
            diag(f"cell run '{inst.name}': {inst.problem}", inst.span)
        if bad or inst.problem:
            refused |= {u.path for u in inst.leaves}
    return refused


def _units(st: Structure, skip=frozenset()):
    for inst in st.instances:
        if inst.layers is None or any(u.path in skip for u in inst.leaves):
            continue
        for k, layer in enumerate(inst.layers):
            for d, u in enumerate(layer):
                yield inst, k, d, u


def _prefixes(st: Structure, maps: dict, tensors: dict | None) -> dict[str, str]:
    modules = [i for i in st.instances if i.layers is not None]
    out = {}
    for inst in modules:
        p, mapped = source_prefix(inst.name, maps, render)
        if tensors is not None and not mapped and len(modules) == 1 and f"{p}.weight_ih_l0" not in tensors \
                and "weight_ih_l0" in tensors:
            p = ""          # a bare module's state_dict
        out[inst.name] = p + "." if p else ""
    return out


def import_(st: Structure, src: Source, maps: dict, skip: set[str]) -> dict[str, np.ndarray]:
    out = {}
    pre = _prefixes(st, maps, src.tensors)
    for inst, k, d, u in _units(st, skip):
        sfx = f"_l{k}" + ("_reverse" if d else "")
        n = pre[inst.name]
        G, H, I = GATES[u.kind], u.units, u.input_size
        R = u.options.get("proj") or H
        what = f"{u.describe()} (PyTorch layer {k}{' reverse' if d else ''})"
        w_ih = src.get(f"{n}weight_ih{sfx}", (G * H, I), what, u.span)
        w_hh = src.get(f"{n}weight_hh{sfx}", (G * H, R), what, u.span)
        b_ih = src.get(f"{n}bias_ih{sfx}", (G * H,), what, u.span)
        b_hh = src.get(f"{n}bias_hh{sfx}", (G * H,), what, u.span)
        w_hr = src.get(f"{n}weight_hr{sfx}", (R, H), what, u.span) if u.options.get("proj") else None
        if any(a is None for a in (w_ih, w_hh, b_ih, b_hh)) or (u.options.get("proj") and w_hr is None):
            continue
        p = u.path
        if u.kind == "basic":
            out[f"{p}.W"], out[f"{p}.U"], out[f"{p}.b"] = f32(w_ih.T), f32(w_hh.T), f32(b_ih + b_hh)
        elif u.kind == "lstm":
            out[f"{p}.W"] = f32(blocks(w_ih, LSTM_PERM, 0).T)
            out[f"{p}.U"] = f32(blocks(w_hh, LSTM_PERM, 0).T)
            out[f"{p}.b"] = f32(blocks(b_ih, LSTM_PERM, 0) + (blocks(b_hh, LSTM_PERM, 0) - forget_bias_vector(u)))
            if w_hr is not None:
                out[f"{p}.P"] = f32(w_hr.T)
        else:
            out[f"{p}.W"], out[f"{p}.U"], out[f"{p}.b"], out[f"{p}.bU"] = f32(w_ih.T), f32(w_hh.T), f32(b_ih), f32(b_hh)
    for dn in st.denses:
        n, _ = source_prefix(dn.path, maps, render)
        what = f"{dn.describe()} (an nn.Linear)"
        w = src.get(render(n, ["weight"]), (dn.out_size, dn.in_size), what, dn.span)
        b = src.get(render(n, ["bias"]), (dn.out_size,), what, dn.span)
        if w is not None and b is not None:
            out[f"{dn.path}.W"], out[f"{dn.path}.b"] = f32(w.T), f32(b)
    return out


def export(st: Structure, params: dict, maps: dict) -> dict[str, np.ndarray]:
    out = {}
    pre = _prefixes(st, maps, None)
    for inst, k, d, u in _units(st):
        sfx = f"_l{k}" + ("_reverse" if d else "")
        n, p = pre[inst.name], u.path
        W, U, b = params[f"{p}.W"], params[f"{p}.U"], params[f"{p}.b"]
        if u.kind == "basic":
            t = {"weight_ih": W.T, "weight_hh": U.T, "bias_ih": b, "bias_hh": np.zeros_like(b)}
        elif u.kind == "lstm":
            t = {"weight_ih": blocks(W.T, LSTM_PERM, 0), "weight_hh": blocks(U.T, LSTM_PERM, 0),
                 "bias_ih": blocks(b, LSTM_PERM, 0), "bias_hh": blocks(forget_bias_vector(u), LSTM_PERM, 0)}
            if u.options.get("proj"):
                t["weight_hr"] = params[f"{p}.P"].T
        else:
            t = {"weight_ih": W.T, "weight_hh": U.T, "bias_ih": b, "bias_hh": params[f"{p}.bU"]}
        out.update({f"{n}{name}{sfx}": f32(v) for name, v in t.items()})
    for dn in st.denses:
        n, _ = source_prefix(dn.path, maps, render)
        out[render(n, ["weight"])], out[render(n, ["bias"])] = f32(params[f"{dn.path}.W"].T), f32(params[f"{dn.path}.b"])
    return out
