"""What every layout shares: the tensor source with its checks, name prefixes, gate blocks."""
from __future__ import annotations

import difflib

import numpy as np

from ..errors import Diagnostic, Span


def fmt_shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


class Source:
    """The tensors of a weights file; every lookup is checked (presence, shape) and
    remembered, so what was never read can be reported as extra."""

    def __init__(self, tensors: dict[str, np.ndarray], file: str):
        self.tensors, self.file = tensors, file
        self.used: set[str] = set()
        self.diagnostics: list[Diagnostic] = []

    def error(self, message: str, span: Span | None = None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(message, span, hint))

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str, shape: tuple, what: str, span: Span | None, hint: str | None = None):
        if name not in self.tensors:
            close = difflib.get_close_matches(name, [k for k in self.tensors if k not in self.used], n=1, cutoff=0.7)
            h = hint or (f"did you mean '{close[0]}'? (rename with --map)" if close else
                         "give the source's name prefix with --map RNNC_PREFIX=SOURCE_PREFIX")
            self.error(f"{self.file}: tensor '{name}' is missing ({what} needs it with shape {fmt_shape(shape)})",
                       span, h)
            return None
        self.used.add(name)
        a = np.asarray(self.tensors[name])
        if a.dtype.kind != "f":
            self.error(f"{self.file}: tensor '{name}' holds {a.dtype} values; {what} needs floats", span)
            return None
        if tuple(a.shape) != tuple(shape):
            self.error(f"{self.file}: tensor '{name}' has shape {fmt_shape(a.shape)}, but {what} needs "
                       f"{fmt_shape(shape)}", span, hint)
            return None
        return a.astype(np.float32, copy=False)

    def report_extra(self, hint: str | None = None) -> None:
        for name in sorted(set(self.tensors) - self.used):
            self.error(f"{self.file}: tensor '{name}' {fmt_shape(np.shape(self.tensors[name]))} matches no "
                       "parameter of the spec", None,
                       hint or "is the spec missing a layer, a direction, peepholes or a projection? "
                       "(--allow-extra ignores such tensors)")


def source_prefix(path: str, maps: dict[str, str], render) -> tuple[str, bool]:
    """The source's name prefix for an rnnc path: the longest `--map` key that is the path or
    a dotted prefix of it, then the remaining components as `render(head, rest)` writes
    them. Returns (prefix, whether a map applied)."""
    comps = path.split(".")
    for n in range(len(comps), 0, -1):
        key = ".".join(comps[:n])
        if key in maps:
            return render(maps[key], comps[n:]), True
    return render(comps[0], comps[1:]), False


def join(sep: str, head: str, rest) -> str:
    return sep.join([p for p in [head, *rest] if p != ""])


def blocks(a: np.ndarray, order, axis: int) -> np.ndarray:
    """Gate blocks of `a` along `axis` in a new order: result block k = block order[k]."""
    parts = np.split(a, len(order), axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def forget_bias_vector(unit) -> np.ndarray:
    """An LSTM's forget_bias on the f block of rnnc's i, j, f, o layout (what rnnc adds at
    every step, and what a framework that has no forget_bias keeps in its bias)."""
    v = np.zeros(4 * unit.units, np.float32)
    v[2 * unit.units:3 * unit.units] = np.float32(unit.options["forget_bias"])
    return v


def import_denses(st, src, maps: dict, render, out: dict) -> None:
    """Dense layers as `<name>/kernel [in, out]` and `<name>/bias [out]` (Keras and TF1 alike)."""
    for dn in st.denses:
        n, _ = source_prefix(dn.path, maps, render)
        k = src.get(render(n, ["kernel"]), (dn.in_size, dn.out_size), dn.describe(), dn.span)
        b = src.get(render(n, ["bias"]), (dn.out_size,), dn.describe(), dn.span)
        if k is not None and b is not None:
            out[f"{dn.path}.W"], out[f"{dn.path}.b"] = f32(k), f32(b)
