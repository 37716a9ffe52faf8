"""Resident training state: parameters and optimizer slots stay on the run's device between
steps, as OrtValues bound with I/O binding.

The train model reads `<name>` and writes `<name>.next` for every parameter and slot. Two
sets of OrtValues take turns (ping-pong): step k reads set A and writes set B, step k+1
reads B and writes A, so no value is copied and an output never aliases an input. Each step
binds only what changes (the batch, lr, step, seed) and fetches only the loss and the logged
scalars (grad_norm, metrics) to the host; carried tbptt states stay on the device too. The
arrays come back to numpy only when asked for (checkpoints, evaluation, the written models),
through `ArrayView`.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class Resident:
    def __init__(self, sess, device: tuple[str, int], arrays: dict[str, np.ndarray]):
        from onnxruntime import OrtValue

        self.sess, self.device = sess, device
        self.names = list(arrays)
        kind, index = device
        self.sets = [{n: OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), kind, index)
                      for n, a in arrays.items()},
                     {n: OrtValue.ortvalue_from_shape_and_type(list(a.shape), a.dtype, kind, index)
                      for n, a in arrays.items()}]
        self.turn = 0          # self.sets[turn] holds the current values
        # one binding per direction, with the resident values bound once, for good
        self.bindings, self.order = [], []     # per binding: its output names in binding order
        for t in (0, 1):
            io = sess.io_binding()
            for n in self.names:
                io.bind_ortvalue_input(n, self.sets[t][n])
                io.bind_ortvalue_output(f"{n}.next", self.sets[1 - t][n])
            self.bindings.append(io)
            self.order.append([f"{n}.next" for n in self.names])

    def step(self, feeds: dict, fetch: list[str], keep: list[str] = ()) -> dict:
        """One run: `feeds` (numpy arrays, or OrtValues already on the device) bound as inputs;
        `fetch` outputs come back as numpy, `keep` outputs stay on the device as OrtValues."""
        from onnxruntime import OrtValue

        io, order = self.bindings[self.turn], self.order[self.turn]
        for k, v in feeds.items():
            if isinstance(v, OrtValue):
                io.bind_ortvalue_input(k, v)
            else:
                io.bind_cpu_input(k, np.ascontiguousarray(v))
        kind, index = self.device
        for o in list(fetch) + list(keep):
            if o in fetch:
                io.bind_output(o, "cpu")
            else:
                io.bind_output(o, kind, index)
            if o not in order:            # a name bound again keeps its place
                order.append(o)
        self.sess.run_with_iobinding(io)
        outs = dict(zip(order, io.get_outputs()))
        values = {o: np.array(outs[o].numpy(), copy=True) for o in fetch}
        values |= {o: outs[o] for o in keep}
        self.turn = 1 - self.turn
        return values

    def numpy(self, name: str) -> np.ndarray:
        return np.array(self.sets[self.turn][name].numpy(), copy=True)


class ArrayView(Mapping):
    """The current values of some resident arrays, read into numpy on access."""

    def __init__(self, resident: Resident, names: list[str]):
        self.resident, self._names = resident, list(names)
        self._known = set(names)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._known:
            raise KeyError(name)
        return self.resident.numpy(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
