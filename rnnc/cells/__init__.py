"""Recurrent cells, each one step function `(ops, params, x, state) -> (output, next_state)`.

A `StepCell` is a cell with its options resolved and its input size known: the names and
sizes of its state parts, its output size, its parameters (shape and initializer), and the
step. Every lowering (static unroll, Scan) and the differentiation trace this one step.
Built-in cells register a constructor here; user cells are built from their equations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

Step = Callable[..., tuple]


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    init: str  # glorot | zeros | ones | uniform


@dataclass(frozen=True)
class StepCell:
    kind: str
    input_size: int
    state: tuple[tuple[str, int], ...]   # ordered state parts, e.g. (("c", 100), ("h", 100))
    output_size: int
    params: dict[str, ParamSpec]
    step: Step = field(compare=False)
    doc: str = ""
    options: dict = field(default_factory=dict, compare=False)   # resolved options of a built-in

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.state)


BUILTINS: dict[str, Callable[..., StepCell]] = {}


def builtin(name: str):
    def register(fn):
        BUILTINS[name] = fn
        return fn
    return register


def glorot(rows: int, cols: int) -> ParamSpec:
    return ParamSpec((rows, cols), "glorot")


def vector(n: int, init: str = "zeros") -> ParamSpec:
    return ParamSpec((n,), init)


from . import basic, gru, lstm  # noqa: E402,F401  (registration)
