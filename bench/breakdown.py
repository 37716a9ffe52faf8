"""Where a training step's time goes: each loop of the train model timed alone.

    python bench/breakdown.py [--workloads W2,W4] [--repeats 30]

onnxruntime's own profiler adds ~7 µs to every node it times, which for loop bodies of
1–5 µs nodes swamps what it measures. This script instead runs the step once with the
inputs of every top-level loop (Scan, inside its empty-input If) added as outputs, then
times each loop as a model of its own on those real values: in blocks (sessions interleaved
run by run slow each other down through their spinning threads), the blocks of all parts
interleaved over 5 rounds, medians.
It prints per loop: ms, nodes per step and µs per step; then the whole step, what is left
outside the loops, how much of that the top-level matmuls take (each timed alone the same
way), and (not for W5) the throughput of the loop's matmul shape against the hoisted one. "The rest" is
the elementwise work on whole sequences, the optimizer and the glue, plus whatever the
loops and matmuls lose inside the step to caches that timing them alone keeps warm; with
this machine's ±10% noise it can come out slightly negative. Same workloads as bench.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import WORKLOADS, data_for, median_ms, ort_session, rnnc_train_step, spec_for


def captured(graph: onnx.GraphProto) -> list[str]:
    """Names a (sub)graph reads from enclosing scopes, in first-use order."""
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    out: list[str] = []
    for node in graph.node:
        subs = [c for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for c in captured(a.g)]
        for name in list(node.input) + subs:
            if name and name not in defined and name not in out:
                out.append(name)
        defined.update(node.output)
    return out


def top_loops(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The top-level Scans, unwrapped from the If that guards each against empty input."""
    loops = []
    for node in model.graph.node:
        if node.op_type == "Scan":
            loops.append(node)
        elif node.op_type == "If":
            for a in node.attribute:
                if a.name == "else_branch" and len(a.g.node) == 1 and a.g.node[0].op_type == "Scan":
                    loops.append(a.g.node[0])
    return loops


def block_ms(fn, repeats: int) -> float:
    """One block: a pause (the previous part's threads go idle), then bench's median."""
    time.sleep(0.2)
    return median_ms(fn, repeats)


def node_model(model: onnx.ModelProto, node: onnx.NodeProto, values: dict) -> tuple[bytes, dict]:
    """`node` (of model's top-level graph) alone, fed the values it read in a real step."""
    inits = {i.name: i for i in model.graph.initializer}
    names = list(node.input)
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            names += [c for c in captured(a.g) if c not in names]
    inputs, feeds, used = [], {}, []
    for n in names:
        if n in inits:
            used.append(inits[n])
        else:
            arr = values[n]
            inputs.append(helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
            feeds[n] = arr
    body = next((a.g for a in node.attribute if a.name == "body"), None)     # a Scan's outputs: its body's types
    types = [v.type.tensor_type.elem_type for v in body.output] if body is not None else [onnx.TensorProto.FLOAT]
    outs = [helper.make_tensor_value_info(o, t, None) for o, t in zip(node.output, types)]
    g = helper.make_graph([node], "alone", inputs, outs, initializer=used)
    m = helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)
    return m.SerializeToString(), feeds


def matmul_gflops(m: int, k: int, n: int, repeats: int) -> float:
    a = np.random.default_rng(0).normal(size=(m, k)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["c"])], "mm",
                          [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [m, k]),
                           helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, [k, n])],
                          [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [m, n])])
    sess = ort_session(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10).SerializeToString())
    w = np.ones((k, n), np.float32)
    ms = block_ms(lambda: sess.run(None, {"a": a, "w": w}), repeats)
    return 2 * m * k * n / ms / 1e6


def probe(model: onnx.ModelProto, feeds: dict, names: list[str]) -> dict:
    """The values `names` (of model's top-level graph) take in one run on `feeds`, with
    the feeds themselves; initializers are left out (node_model reads them from the model)."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    inits = {i.name for i in extended.graph.initializer}
    known = {o.name for o in extended.graph.output} | {i.name for i in extended.graph.input}
    elem = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for n in dict.fromkeys(names):
        if n not in inits and n not in known:
            extended.graph.output.append(helper.make_tensor_value_info(n, elem.get(n, onnx.TensorProto.FLOAT), None))
    sess = ort_session(extended.SerializeToString(), training=True)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds))) | feeds


def breakdown(name: str, repeats: int) -> None:
    from rnnc.api import check
    from rnnc.training_graph import build_train

    w = WORKLOADS[name]
    if w["head"] == "seq2seq":
        import w5
        model, data = w5.check_model(w), w5.data_for(w, np.random.default_rng(0))
    else:
        model, data = check("bench.rnn", text=spec_for(w)), data_for(w, np.random.default_rng(0))
    tm = build_train(model, "auto")
    feeds = {**data, "lr": np.array(0.001, np.float32), "step": np.array(0, np.int64), **tm.params, **tm.slots}
    step = rnnc_train_step(tm, data)
    loops = top_loops(tm.onnx)
    matmuls = [n for n in tm.onnx.graph.node if n.op_type in ("MatMul", "Gemm")]
    wanted = [i for n in matmuls for i in n.input]
    for scan in loops:
        body = next(a.g for a in scan.attribute if a.name == "body")
        wanted += list(scan.input) + captured(body)
    values = probe(tm.onnx, feeds, wanted)

    # every part is timed in each round, rounds interleave them: this machine's speed drifts
    # over minutes, and parts timed minutes apart would not add up
    parts: dict[str, object] = {"whole step": step}
    rows = []
    for scan in loops:
        proto, lfeeds = node_model(tm.onnx, scan, values)
        lsess = ort_session(proto, training=True)
        body = next(a.g for a in scan.attribute if a.name == "body")
        n_scan = next(a.i for a in scan.attribute if a.name == "num_scan_inputs")
        steps = lfeeds[scan.input[len(scan.input) - n_scan]].shape[0]
        backward = any(a.name == "scan_input_directions" and any(a.ints) for a in scan.attribute)
        label = f"{scan.name[:18]} {'backward' if backward else 'forward'}"
        parts[label] = (lambda s=lsess, f=lfeeds: s.run(None, f))
        rows.append((label, len(body.node), steps))
    for k, node in enumerate(matmuls):
        proto, mfeeds = node_model(tm.onnx, node, values)
        msess = ort_session(proto, training=True)
        parts[f"matmul {k}"] = (lambda s=msess, f=mfeeds: s.run(None, f))
    rounds: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(5):
        for k, fn in parts.items():
            rounds[k].append(block_ms(fn, repeats))
    ms = {k: statistics.median(v) for k, v in rounds.items()}

    whole = ms["whole step"]
    total = sum(ms[label] for label, _, _ in rows)
    mm_total = sum(ms[f"matmul {k}"] for k in range(len(matmuls)))
    print(f"\n{name}: " + ", ".join(f"{k}={v}" for k, v in w.items()))
    print(f"  {'loop':28} {'ms':>7} {'nodes/step':>11} {'µs/step':>8}")
    for label, nodes, steps in rows:
        print(f"  {label:28} {ms[label]:7.2f} {nodes:11d} {ms[label] * 1e3 / steps:8.1f}")
    print(f"  {'all loops':28} {total:7.2f}")
    print(f"  {'whole step':28} {whole:7.2f}")
    print(f"  {'outside the loops':28} {whole - total:7.2f}")
    print(f"  {f'  of which {len(matmuls)} matmuls':28} {mm_total:7.2f}  (input projections, weight and input gradients)")
    print(f"  {'  the rest':28} {whole - total - mm_total:7.2f}  (sequence-wide elementwise work, optimizer, glue, cold caches)")
    if w["head"] == "seq2seq":
        return
    B, T, H = w["B"], w["T"], w["H"]
    G = 4 * H if w["cell"] == "lstm" else H
    print(f"  matmul per step  [{B}x{H}]·[{H}x{G}]: {matmul_gflops(B, H, G, repeats):6.1f} GFLOP/s; "
          f"hoisted [{B * T}x{H}]·[{H}x{G}]: {matmul_gflops(B * T, H, G, repeats):6.1f} GFLOP/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    for name in [w for w in args.workloads.split(",") if w]:
        breakdown(name, args.repeats)


if __name__ == "__main__":
    main()
