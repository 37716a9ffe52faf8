"""One decoder step: every layer of the decoder stack, then attention (MultiRNNCell inside
TF1's AttentionWrapper). All layers run inside one step because the attention vector of
step t feeds the bottom layer at step t+1 ("input feeding"):

    x_t      = [embed(y_{t-1}); att_{t-1}]          (att_0 = 0; without attention: embed(y_{t-1}))
    h_t, S_t = decoder(x_t, S_{t-1})                (each layer's output feeds the next)
    att_t, a_t = attend(h_t, memory)                (attention.py)
    output     att_t (without attention: h_t);  logits_t = output·W + b   (NAME.output.W, .b)

State: the decoder's state parts in `state_layout` order (`0.c`, `0.h`, `1.c`, ... for a
stack), then `attention` [B, Hd] when there is attention. Memory, keys and the mask are
loop-invariant tensors the step reads (`P["memory"]`, `P["keys"]`, `P["mask"]`).

The same function serves the teacher-forced training run (a StepCell under Scan or static
unrolling), the in-graph greedy and beam loops, and decoder_step.onnx.
"""
from __future__ import annotations

from ..cells import ParamSpec, StepCell
from ..ir import Leaf, Project, Residual, Seq2SeqBlock, Stack, state_layout
from . import attention as A


def tree_params(cell, prefix: str) -> dict[str, ParamSpec]:
    """Parameters of a decoder cell tree, named as rnnc.lower.cells names them."""
    if isinstance(cell, Leaf):
        return {f"{prefix}.{k}": spec for k, spec in cell.cell.params.items()}
    if isinstance(cell, Stack):
        out: dict[str, ParamSpec] = {}
        for i, layer in enumerate(cell.layers):
            out |= tree_params(layer, f"{prefix}.{i}")
        return out
    if isinstance(cell, Project):
        return tree_params(cell.inner, prefix) | {
            f"{prefix}.project.W": ParamSpec((cell.inner.output_size, cell.units), "glorot"),
            f"{prefix}.project.b": ParamSpec((cell.units,), "zeros")}
    if isinstance(cell, Residual):
        return tree_params(cell.inner, prefix)
    raise ValueError(f"a decoder cannot contain {type(cell).__name__}")


def tree_step(ops, cell, P: dict, prefix: str, x, state: dict):
    """One step of a cell tree: (output, next state by path)."""
    if isinstance(cell, Leaf):
        params = {k: P[f"{prefix}.{k}"] for k in cell.cell.params}
        y, nxt = cell.cell.step(ops, params, x, tuple(state[n] for n in cell.cell.state_names))
        return y, dict(zip(cell.cell.state_names, nxt))
    if isinstance(cell, Stack):
        out: dict = {}
        for i, layer in enumerate(cell.layers):
            sub = {k[len(f"{i}."):]: v for k, v in state.items() if k.startswith(f"{i}.")}
            x, st = tree_step(ops, layer, P, f"{prefix}.{i}", x, sub)
            out |= {f"{i}.{k}": v for k, v in st.items()}
        return x, out
    if isinstance(cell, Project):
        y, st = tree_step(ops, cell.inner, P, prefix, x, state)
        return y @ P[f"{prefix}.project.W"] + P[f"{prefix}.project.b"], st
    if isinstance(cell, Residual):
        y, st = tree_step(ops, cell.inner, P, prefix, x, state)
        return y + x, st
    raise ValueError(f"a decoder cannot contain {type(cell).__name__}")


class DecoderStep:
    def __init__(self, blk: Seq2SeqBlock):
        self.blk = blk
        self.prefix = f"{blk.name}.decoder"
        self.layout = state_layout(blk.decoder)
        self.state = list(self.layout) + ([("attention", blk.out_size)] if blk.attention else [])

    def params(self) -> dict[str, ParamSpec]:
        """Decoder and attention parameters (the output layer and embeddings are the caller's)."""
        return tree_params(self.blk.decoder, self.prefix) | A.attention_params(self.blk)

    def step(self, ops, P: dict, x_emb, states):
        """(output [B, out_size], next states, alignments [B, S] or None)."""
        n = len(self.layout)
        dec_state = {p: s for (p, _), s in zip(self.layout, states[:n])}
        x = ops.concat([x_emb, states[n]], axis=-1) if self.blk.attention else x_emb
        h, nxt = tree_step(ops, self.blk.decoder, P, self.prefix, x, dec_state)
        nxt = [nxt[p] for p, _ in self.layout]
        if not self.blk.attention:
            return h, nxt, None
        att, align = A.attend(ops, self.blk, P, h, P["keys"], P["memory"], P["mask"])
        return att, nxt + [att], align

    def step_cell(self, alignments: bool = False) -> StepCell:
        """The step as a StepCell (teacher forcing: one run over the target sequence); its
        output is the attention vector, or with `alignments` the attention weights."""
        def step(ops, P, x, states):
            y, nxt, align = self.step(ops, P, x, states)
            return (align if alignments else y), tuple(nxt)

        return StepCell("seq2seq_decoder", self.blk.target.dim, tuple(self.state), self.blk.out_size,
                        {}, step, __doc__)
