"""Placement: cut a graph into segments, one per `on DEVICE` (LANGUAGE.md §3), and run them.

Every node carries the placement it was made under (`Node.placement`: "<k>:<device>" for
the k-th `on` of the spec, None for the run's device); gradient nodes take the placement of
the forward node they differentiate, optimizer updates that of their parameter. Cutting the
node list into maximal runs of one placement gives the segments in execution order — for a
train graph: the forward segments in order, then the backward segments in reverse order on
the same devices, then the updates. Each segment is a standalone ONNX model whose inputs
are the values it reads from outside (model inputs, earlier segments) and whose outputs are
the values later segments or the model's outputs read; initializers go with the segments
that read them.

`PlacedModel` runs a manifest's segments as one onnxruntime session each, on its device,
handing tensors across as OrtValues with I/O binding; `run_pipelined` splits the batch into
micro-batches so that the segments work at the same time (threads; onnxruntime releases the
GIL), which changes where and when work runs, never the numbers.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .export import to_model
from .graph import Graph, Node

RUN_DEVICE = "run"


@dataclass
class Segment:
    placement: str | None
    graph: Graph

    @property
    def device(self) -> str:
        return RUN_DEVICE if self.placement is None else self.placement.split(":", 1)[1]


def is_placed(graph: Graph) -> bool:
    return any(n.placement is not None for n in graph.nodes)


def partition(graph: Graph) -> list[Segment]:
    groups: list[tuple[str | None, list[Node]]] = []
    for node in graph.nodes:
        if groups and groups[-1][0] == node.placement:
            groups[-1][1].append(node)
        else:
            groups.append((node.placement, [node]))
    later_reads: list[set[str]] = []
    reads_after: set[str] = {v.name for v in graph.outputs}
    for _, nodes in reversed(groups):
        later_reads.append(set(reads_after))
        for n in nodes:
            reads_after.update(i for i in n.inputs if i)
            if n.body is not None:
                reads_after.update(n.body.captures())
            for a in n.attrs.values():
                if isinstance(a, Graph):
                    reads_after.update(a.captures())
    later_reads.reverse()
    segments = []
    for (placement, nodes), needed_later in zip(groups, later_reads):
        seg = Graph()
        seg.nodes = nodes
        defined: set[str] = set()
        reads: list[str] = []
        for n in nodes:
            names = [i for i in n.inputs if i]
            names += n.body.captures() if n.body is not None else []
            names += [c for a in n.attrs.values() if isinstance(a, Graph) for c in a.captures()]
            for i in names:
                if i not in defined and i not in reads:
                    reads.append(i)
            defined.update(n.outputs)
            for o in n.outputs:
                seg.values[o] = graph.values[o]
            for sub in [n.body] + [a for a in n.attrs.values() if isinstance(a, Graph)]:
                if sub is not None:
                    sub.parent = seg
        for i in reads:
            if i in graph.initializers:
                seg.initializers[i] = graph.initializers[i]
                seg.values[i] = graph.values[i]
            else:
                seg.values[i] = graph.values[i]
                seg.inputs.append(graph.values[i])
        seg.outputs = [seg.values[o] for n in nodes for o in n.outputs if o in needed_later]
        segments.append(Segment(placement, seg))
    return segments


def segment_models(graph: Graph, kind: str, name: str, metadata: dict) -> tuple[dict, list]:
    """The manifest entry for `kind` and the (relative path, ONNX model) of each segment."""
    entries, files = [], []
    for k, seg in enumerate(partition(graph)):
        rel = f"segments/{kind}-{k:02d}-{seg.device.replace(':', '')}.onnx"
        files.append((rel, to_model(seg.graph, f"{name}_{kind}_{k}", {**metadata, "rnnc.segment": str(k)})))
        entries.append({"file": rel, "device": seg.device, "placement": seg.placement,
                        "inputs": [v.name for v in seg.graph.inputs],
                        "outputs": [v.name for v in seg.graph.outputs]})
    entry = {"inputs": [v.name for v in graph.inputs], "outputs": [v.name for v in graph.outputs],
             "segments": entries}
    return entry, files


# ----- running -----
class PlacedModel:
    """A manifest's segments as sessions on their devices; `run` hands OrtValues across."""

    def __init__(self, folder: str | Path, kind: str = "infer", run_device: str = "cpu",
                 allow_cpu: bool = False, threads: int | None = None, segments: list[dict] | None = None,
                 protos: list | None = None, training: bool = False):
        import onnxruntime as ort

        self.ort = ort
        folder = Path(folder)
        if segments is None:
            manifest = json.loads((folder / "manifest.json").read_text())
            entry = manifest[kind]
            segments = entry["segments"]
            self.inputs, self.outputs = entry["inputs"], entry["outputs"]
        else:
            self.inputs = self.outputs = None
        from . import devices

        self.segments = segments
        self.sessions, self.devices = [], []
        chosen: dict[str, object] = {}
        for k, seg in enumerate(segments):
            spec = run_device if seg["device"] == RUN_DEVICE else seg["device"]
            if spec not in chosen:      # probed once per device; on a missing GPU: DeviceError
                chosen[spec] = devices.select(spec, allow_cpu=allow_cpu)
            dev = chosen[spec]
            model = protos[k] if protos is not None else folder / seg["file"]
            self.sessions.append(devices.session(model, threads, dev, training=training))
            self.devices.append(dev.ort_device)

    def run(self, feeds: dict[str, np.ndarray], fetch: list[str] | None = None) -> dict[str, np.ndarray]:
        env = {k: self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}
        env = self.run_values(env)
        names = fetch or self.outputs or list(env)
        return {n: env[n].numpy() for n in names}

    def run_values(self, env: dict) -> dict:
        """Run every segment in order on OrtValues; returns the environment of all values."""
        env = dict(env)
        for k in range(len(self.sessions)):
            env.update(self._run_segment(k, env))
        return env

    def _run_segment(self, k: int, env: dict) -> dict:
        """One segment: inputs bound from wherever they live, outputs left on its device."""
        seg, sess = self.segments[k], self.sessions[k]
        io = sess.io_binding()
        for name in seg["inputs"]:
            io.bind_ortvalue_input(name, env[name])
        kind, index = self.devices[k]
        for name in seg["outputs"]:
            io.bind_output(name, kind, index)
        sess.run_with_iobinding(io)
        return dict(zip(seg["outputs"], io.get_outputs()))

    def run_pipelined(self, feeds: dict[str, np.ndarray], micro_batches: int,
                      trace: list | None = None) -> dict[str, np.ndarray]:
        """Split the batch (axis 0 of every input) into micro-batches; segment k works on
        micro-batch j while segment k+1 works on j-1. Rows are independent, so the outputs
        are those of one call."""
        n = len(next(iter(feeds.values())))
        bounds = np.linspace(0, n, micro_batches + 1).astype(int)
        chunks = [{k: v[a:b] for k, v in feeds.items()} for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        queues = [queue.Queue() for _ in range(len(self.sessions) + 1)]
        errors: list[BaseException] = []

        def stage(k: int) -> None:
            while True:
                item = queues[k].get()
                if item is None:
                    queues[k + 1].put(None)
                    return
                j, env = item
                try:
                    start = time.perf_counter()
                    env = {**env, **self._run_segment(k, env)}
                    if trace is not None:       # (segment, micro-batch, start, end): who worked when
                        trace.append((k, j, start, time.perf_counter()))
                except BaseException as e:   # reported after the pipeline drains
                    errors.append(e)
                queues[k + 1].put((j, env))

        threads = [threading.Thread(target=stage, args=(k,), daemon=True) for k in range(len(self.sessions))]
        for t in threads:
            t.start()
        for j, chunk in enumerate(chunks):
            env = {k: self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v)) for k, v in chunk.items()}
            queues[0].put((j, env))
        queues[0].put(None)
        done = {}
        while True:
            item = queues[-1].get()
            if item is None:
                break
            done[item[0]] = item[1]
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        names = self.outputs
        return {k: np.concatenate([done[j][k].numpy() for j in sorted(done)], axis=0) for k in names}

