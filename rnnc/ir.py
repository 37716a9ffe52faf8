"""The model IR: what the user declared, resolved and checked.

Cells form a tree (`Leaf`, `Stack`, `Project`, `Residual`, `Bi`, `Dropout`, `Placed`) whose
leaves are StepCells with their input sizes known. The model's computation is a DAG of
`Expr` nodes (shared by identity); `Model` names its inputs, outputs, loss and metrics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cells import StepCell
from .errors import Span

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(map(str, self.shape))}]"


# ----- cells -----
@dataclass(frozen=True, eq=False)
class Leaf:
    cell: StepCell
    span: Span | None = None

    input_size = property(lambda self: self.cell.input_size)
    output_size = property(lambda self: self.cell.output_size)


@dataclass(frozen=True, eq=False)
class Stack:
    layers: tuple
    span: Span | None = None

    input_size = property(lambda self: self.layers[0].input_size)
    output_size = property(lambda self: self.layers[-1].output_size)


@dataclass(frozen=True, eq=False)
class Project:
    inner: object
    units: int
    span: Span | None = None

    input_size = property(lambda self: self.inner.input_size)
    output_size = property(lambda self: self.units)


@dataclass(frozen=True, eq=False)
class Residual:
    inner: object
    span: Span | None = None

    input_size = property(lambda self: self.inner.input_size)
    output_size = property(lambda self: self.inner.output_size)


@dataclass(frozen=True, eq=False)
class Bi:
    fw: object
    bw: object
    span: Span | None = None

    input_size = property(lambda self: self.fw.input_size)
    output_size = property(lambda self: self.fw.output_size + self.bw.output_size)


@dataclass(frozen=True, eq=False)
class Dropout:
    inner: object
    input_keep: float = 1.0
    output_keep: float = 1.0
    state_keep: float = 1.0
    variational: bool = False
    span: Span | None = None

    input_size = property(lambda self: self.inner.input_size)
    output_size = property(lambda self: self.inner.output_size)


@dataclass(frozen=True, eq=False)
class Placed:
    inner: object
    device: str
    span: Span | None = None

    input_size = property(lambda self: self.inner.input_size)
    output_size = property(lambda self: self.inner.output_size)


def state_layout(cell) -> list[tuple[str, int]]:
    """The flat list of (path, size) state parts of a cell tree, in the order used by
    `initial=` and by stateful models: layers in order, forward before backward."""
    if isinstance(cell, Leaf):
        return [(n, s) for n, s in cell.cell.state]
    if isinstance(cell, Stack):
        return [(f"{i}.{n}", s) for i, layer in enumerate(cell.layers) for n, s in state_layout(layer)]
    if isinstance(cell, Bi):
        return [(f"fw.{n}", s) for n, s in state_layout(cell.fw)] + [(f"bw.{n}", s) for n, s in state_layout(cell.bw)]
    return state_layout(cell.inner)


def top_h_paths(cell) -> list[str]:
    """Paths of the state parts that stand for a final state used as a tensor: the top
    layer's h (for bi, forward then backward)."""
    if isinstance(cell, Leaf):
        names = cell.cell.state_names
        return ["h" if "h" in names else names[-1]]
    if isinstance(cell, Stack):
        return [f"{len(cell.layers) - 1}.{p}" for p in top_h_paths(cell.layers[-1])]
    if isinstance(cell, Bi):
        return [f"fw.{p}" for p in top_h_paths(cell.fw)] + [f"bw.{p}" for p in top_h_paths(cell.bw)]
    return top_h_paths(cell.inner)


# ----- the computation -----
@dataclass(frozen=True, eq=False)
class Expr:
    """op(args) with attrs; `type` is a TensorType, or a StateType for final states."""

    op: str
    args: tuple
    attrs: dict = field(default_factory=dict)
    type: object = None
    span: Span | None = None

    def __repr__(self) -> str:
        attrs = "".join(f", {k}={v}" for k, v in self.attrs.items() if k not in ("cell", "block"))
        return f"{self.op}({', '.join(_short(a) for a in self.args)}{attrs}) : {self.type}"


def _short(a) -> str:
    if isinstance(a, Expr):
        return a.attrs.get("name") or a.op
    return repr(a)


@dataclass(frozen=True)
class StateType:
    """The final state of a run of `cell`: a structure of [batch, size] tensors."""

    cell: object
    batch: Dim

    def __str__(self) -> str:
        return "state(" + ", ".join(f"{p}[{s}]" for p, s in state_layout(self.cell)) + ")"


# ----- seq2seq (LANGUAGE.md section 5) -----
@dataclass(frozen=True, eq=False)
class Embedding:
    """`embed(vocab, dim)`: a [vocab.size, dim] table looked up by id; `pretrained` an
    array to start from (a .npy the spec names), `frozen` keeps it constant."""

    vocab: object            # rnnc.vocab.Vocab
    dim: int
    pretrained: object = None
    frozen: bool = False
    span: Span | None = None


@dataclass(frozen=True)
class Attention:
    kind: str                # luong | bahdanau
    score: str               # general | dot (luong); additive (bahdanau)
    span: Span | None = None


@dataclass(frozen=True)
class Decode:
    kind: str                # greedy | beam
    max_len: int
    width: int = 1
    alpha: float = 0.6       # beam length penalty ((5 + |Y|) / 6)^alpha
    span: Span | None = None


@dataclass(frozen=True, eq=False)
class Seq2SeqBlock:
    """A `seq2seq NAME { ... }` block: parameters `NAME.source.embed`, `NAME.encoder.*`,
    `NAME.target.embed`, `NAME.decoder.*`, `NAME.attention.*`, `NAME.output.W/b`."""

    name: str
    source: Embedding
    reversed: bool
    encoder: object          # a cell tree
    target: Embedding
    decoder: object          # a cell tree (Leaf / Stack / Project / Residual)
    attention: Attention | None
    decode: Decode
    span: Span | None = None

    @property
    def out_size(self) -> int:
        """Size of the vector the output layer reads: the attention vector, else the
        decoder's output."""
        return self.decoder.output_size


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    optimizer_args: tuple = (("lr", 0.001),)
    schedule: str | None = None
    schedule_args: tuple = ()
    batch: int = 32
    epochs: int | None = 10
    steps: int | None = None
    tbptt: int | None = None
    validate: float = 0.0

@dataclass(frozen=True)
class Run:
    """One application of a cell to a sequence (for summaries and lowering choices)."""

    instance: str
    cell: object
    unroll: str | None
    span: Span | None


@dataclass(frozen=True, eq=False)
class Model:
    name: str
    file: str
    source: str
    inputs: tuple[tuple[str, TensorType], ...]
    outputs: tuple[tuple[str, Expr], ...]
    loss: Expr | None
    metrics: tuple[tuple[str, Expr], ...]
    train: TrainConfig
    runs: tuple[Run, ...]
    unsupported: tuple[tuple[str, Span | None], ...] = ()   # constructs later issues compile
    vocabs: tuple = ()                                        # rnnc.vocab.Vocab, as declared

    def input_type(self, name: str) -> TensorType:
        return dict(self.inputs)[name]


def walk(model: Model):
    """Every Expr the model's outputs, loss and metrics depend on, each once."""
    stack = [e for _, e in model.outputs] + ([model.loss] if model.loss is not None else []) + \
        [e for _, e in model.metrics]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if not isinstance(e, Expr) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack.extend(a for a in e.args if isinstance(a, Expr))


def length_inputs(model: Model) -> set[str]:
    """Inputs used as `lengths=` (of a cell run or a loss): truncated BPTT clips them per window."""
    names = set()
    for e in walk(model):
        cand = []
        if e.op == "run" and e.args[1] is not None:
            cand.append(e.args[1])
        if e.attrs.get("weighting") == "lengths":
            cand.append(e.args[2])
        names |= {c.attrs["name"] for c in cand if c.op == "input"}
    return names


def sequence_time_dims(model: Model) -> set:
    """The time dims of the sequences cells run over (seq2seq: the source's and target's):
    truncated BPTT slices inputs indexed by them."""
    dims = {e.args[0].type.shape[1] for e in walk(model) if e.op == "run"}
    for e in walk(model):
        if e.op in ("s2s_logits", "s2s_sampled_loss", "s2s_decode", "s2s_alignments"):
            dims.add(e.args[0].type.shape[1])
            if e.op != "s2s_decode":
                dims.add(e.args[2].type.shape[1])
    return dims
