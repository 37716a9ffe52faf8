"""Helpers shared by test modules: walking an ONNX graph with its subgraphs, and killing a
training run once it has written a checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import onnx
import pytest

from rnnc import checkpoint as ckpt


def all_nodes(graph: onnx.GraphProto):
    """Every node of `graph` and of the graphs its nodes hold (Scan, If and Loop bodies)."""
    for n in graph.node:
        yield n
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(a.g)
            for g in a.graphs:
                yield from all_nodes(g)


def kill_after_checkpoint(cmd: list[str], checkpoints, after: int, delay: float = 0.0) -> subprocess.Popen:
    """Start `cmd` (an `rnnc train` command line), wait until a checkpoint of step `after` or
    later is in `checkpoints`, wait `delay` seconds more (anywhere within a step), then kill
    it with SIGKILL. Returns the finished process; fails the test if the run ends first or
    no checkpoint appears within a minute."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while True:
            found = ckpt.list_checkpoints(checkpoints)
            if found and found[-1][0] >= after:
                break
            if proc.poll() is not None:
                _out, err = proc.communicate()
                pytest.fail(f"the run ended (rc {proc.returncode}) before it could be killed; "
                            f"make it longer\n{err.decode()}")
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    return proc
