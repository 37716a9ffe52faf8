"""Where models run: `--device cpu|cuda|cuda:N|auto` and every onnxruntime session rnnc makes.

    dev = select("cuda:1", allow_cpu=False)   # a Device; DeviceError (exit code 5) if not there
    sess = session(path_or_proto_or_bytes)     # on the selected device (default: cpu)

CUDA is asked for → the CUDAExecutionProvider with that device_id and
`session.disable_cpu_ep_fallback=1`, so nothing silently runs on the CPU. Whether CUDA is
really there is probed once per device id with a tiny model (onnxruntime-gpu installs and
lists its CUDA provider even on a machine without a GPU, then logs a wall of errors and runs
on the CPU): logging off during the probe, `onnxruntime.preload_dlls()` first (it finds
CUDA and cuDNN in the nvidia-* wheels; its messages are captured, not printed), and the
session's `get_providers()` checked. Not there → one DeviceError; with `allow_cpu`, one
warning line on stderr and the CPU. `auto` is CUDA device 0 when it is really there, else
the CPU, without a warning.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from functools import lru_cache

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


class DeviceError(Exception):
    """The device asked for cannot be used (the command line's exit code 5)."""


@dataclass(frozen=True)
class Device:
    kind: str        # "cpu" | "cuda"
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"

    @property
    def ort_device(self) -> tuple[str, int]:
        """(device type, id) as OrtValue and IOBinding name them."""
        return ("cpu", 0) if self.kind == "cpu" else ("cuda", self.index)


CPU = Device("cpu")
_current: Device = CPU


def parse(spec: str) -> tuple[str, int | None]:
    """("cpu"|"cuda"|"auto", index or None)."""
    s = (spec or "cpu").strip().lower()
    if s in ("cpu", "auto"):
        return s, None
    if s == "cuda":
        return "cuda", 0
    if s.startswith("cuda:") and s[5:].isdigit():
        return "cuda", int(s[5:])
    raise DeviceError(f"unknown device '{spec}'; use {DEVICE_CHOICES}")


def select(spec: str = "cpu", allow_cpu: bool = False, warn=None) -> Device:
    """Resolve `spec` to a device that is there, make it the default of `session`, return it."""
    global _current
    kind, index = parse(spec)
    if kind == "cpu":
        dev = CPU
    elif kind == "auto":
        dev = Device("cuda", 0) if cuda_problem(0) is None else CPU
    else:
        problem = cuda_problem(index)
        if problem is None:
            dev = Device("cuda", index)
        elif allow_cpu:
            (warn or _warn)(f"warning: {spec} is not available ({problem}); running on the CPU (--allow-cpu)")
            dev = CPU
        else:
            raise DeviceError(f"--device {spec}: no usable CUDA device ({problem}). Run with --device cpu, "
                              "or add --allow-cpu to fall back to the CPU")
    _current = dev
    return dev


def current() -> Device:
    return _current


def use(dev: Device) -> None:
    """Make `dev` the default of `session` (no probe: the caller knows it is there)."""
    global _current
    _current = dev


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----- the probe -----
@lru_cache(maxsize=None)
def cuda_problem(index: int = 0) -> str | None:
    """None when CUDA device `index` really runs a model; else why not, in a few words."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime has no CUDA provider; pip install 'rnnc[cuda]'"
    loaded = _preload()
    import numpy as np

    ort.set_default_logger_severity(4)   # the provider bridge logs its load failures here
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        try:
            sess = ort.InferenceSession(_probe_model(), opts,
                                        providers=[("CUDAExecutionProvider", {"device_id": index})])
            if sess.get_providers()[:1] != ["CUDAExecutionProvider"]:
                return "the CUDA provider did not load"
            y = sess.run(None, {"x": np.ones(1, np.float32)})[0]
            if float(y[0]) != 2.0:
                return "the CUDA provider computed a wrong result"
        except Exception as e:   # onnxruntime's own exception types
            return _reason(str(e), loaded)
    finally:
        ort.set_default_logger_severity(3)
    return None


def _reason(message: str, loaded: str) -> str:
    if "fallback to CPU EP has been explicitly disabled" in message or "CUDA" in message and "load" in message:
        return loaded or "the CUDA provider could not load (no GPU, driver, CUDA 13 or cuDNN 9)"
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    return first[:200]


_preloaded: list[str] = []


def _preload() -> str:
    """Call onnxruntime.preload_dlls() once, its prints captured; the first library it could
    not load (e.g. 'libcublasLt.so.13 not found'), or ''."""
    if _preloaded:
        return _preloaded[0]
    import onnxruntime as ort

    text = io.StringIO()
    if hasattr(ort, "preload_dlls"):
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                ort.preload_dlls()
        except Exception as e:
            text.write(f"Failed to load CUDA libraries: {e}\n")
    missing = ""
    for line in text.getvalue().splitlines():
        if line.startswith("Failed to load "):
            missing = line[len("Failed to load "):].split(":", 1)[0] + " not found"
            break
    _preloaded.append(missing and f"{missing}: no CUDA 13 / cuDNN 9 libraries")
    return _preloaded[0]


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    return m.SerializeToString()


# ----- sessions -----
def session(model, threads: int | None = None, device: Device | None = None, training: bool = False):
    """An onnxruntime session of `model` (a path, an onnx.ModelProto or serialized bytes) on
    `device` (default: the selected one). On CUDA the CPU fallback is disabled: a model with
    a node the CUDA provider cannot run is refused (DeviceError), never run on the CPU."""
    import onnxruntime as ort

    dev = device or _current
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if training:
        # onnxruntime's memory pattern plans one block for every intermediate of the step at
        # once; a train step's per-step loop values are large, and without the pattern the
        # peak is what is live at a time (W6, T=500: 278 → 155 MiB, no slower: bench/)
        opts.enable_mem_pattern = False
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = str(model)
    if dev.kind == "cpu":
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        return ort.InferenceSession(model, opts, providers=[("CUDAExecutionProvider", {"device_id": dev.index}),
                                                            "CPUExecutionProvider"])
    except Exception as e:
        if "fallback to CPU EP has been explicitly disabled" in str(e):
            raise DeviceError(f"the model has nodes the CUDA provider cannot run, and rnnc never runs them on "
                              f"the CPU behind your back; run with --device cpu ({str(e).strip()[:200]})") from None
        raise
