"""rnnc against PyTorch eager and onnxruntime-on-torch-export, interleaved in one run.

    python bench/bench.py [--workloads W1,W2] [--repeats 21] [--json out.json] [--memory] [--compile]

For each workload: rnnc inference per lowering (static, loop, auto) and one training step
(auto), PyTorch eager forward and training step (nn.RNN/LSTM + Adam), and onnxruntime on
the torch-exported forward; medians of `repeats` runs after warm-up, 2 threads, libraries
interleaved with a short pause between them. Prints a table of ratios to PyTorch eager and
writes JSON. torch is a bench-only extra (`pip install torch==2.13.0`).

--memory: W6's training memory, each framework (and rnnc memory policy) in a fresh
subprocess: peak RSS over 3 training steps minus the RSS just before the first step (model,
weights, optimizer state and batch already loaded), at T=500 and T=2000.
--compile: the wall time of `rnnc compile` as a whole command for every bundled spec.
--placement: W4's stack as two CPU segments (`on cpu`), inference segment after segment vs
pipelined over micro-batches (each segment in its own thread, one onnxruntime thread each).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = 2

WORKLOADS = {
    "W1": dict(B=150, T=28, I=28, cell="basic", H=150, head="classify", classes=10),
    "W2": dict(B=150, T=28, I=28, cell="lstm", H=150, head="classify", classes=10),
    "W3": dict(B=50, T=20, I=1, cell="basic_relu", H=100, head="regress"),
    "W4": dict(B=64, T=50, I=32, cell="lstm", H=100, layers=3, head="regress"),
    "W5": dict(B=64, T=20, vocab=1000, embed=128, cell="lstm", H=256, head="seq2seq"),   # bench/w5.py
    "W6": dict(B=32, T=500, I=64, cell="lstm", H=128, head="regress"),
}


def spec_for(w: dict) -> str:
    cell = {"basic": f"basic({w['H']})", "basic_relu": f"basic({w['H']}, activation=relu)",
            "lstm": f"lstm({w['H']}, forget_bias=0.0)"}[w["cell"]]
    if w.get("layers", 1) > 1:
        cell = f"stack({w['layers']} * {cell})"
    lines = ["model bench", f"input x: f32[batch, {w['T']}, {w['I']}]"]
    if w["head"] == "classify":
        lines += ["input y: i64[batch]", f"cell rnn = {cell}", "_, last = rnn(x)",
                  f"logits = dense(last, {w['classes']})", "loss = softmax_cross_entropy(logits, y)",
                  "output logits"]
    else:
        lines += [f"input y: f32[batch, {w['T']}, 1]", f"cell rnn = {cell} | project(1)", "pred, _ = rnn(x)",
                  "loss = mse(pred, y)", "output pred"]
    lines.append("train { optimizer adam(lr=0.001) }")
    return "\n".join(lines) + "\n"


def data_for(w: dict, rng) -> dict:
    x = rng.normal(size=(w["B"], w["T"], w["I"])).astype(np.float32)
    if w["head"] == "classify":
        y = rng.integers(0, w["classes"], size=w["B"]).astype(np.int64)
    else:
        y = rng.normal(size=(w["B"], w["T"], 1)).astype(np.float32)
    return {"x": x, "y": y}


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def ort_session(proto_bytes: bytes, training: bool = False):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_mem_pattern = not training     # as `rnnc train` sessions (rnnc/devices.py)
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(proto_bytes, opts, providers=["CPUExecutionProvider"])


# ----- rnnc -----
def rnnc_runners(w: dict, data: dict):
    from rnnc.api import build_infer, check
    from rnnc.training_graph import build_train

    model = check("bench.rnn", text=spec_for(w))
    runners = {}
    for unroll in ("static", "loop", "auto"):
        sess = ort_session(build_infer(model, unroll).onnx.SerializeToString())
        feeds = {"x": data["x"]}
        runners[f"rnnc {unroll} fwd"] = (lambda s=sess, f=feeds: s.run(None, f))
    runners["rnnc train step"] = rnnc_train_step(build_train(model, "auto"), data)
    return runners


def rnnc_train_step(tm, data: dict):
    """One step of the train model as a user's app runs it: parameters and slots fed back."""
    sess = ort_session(tm.onnx.SerializeToString(), training=True)
    state = {**tm.params, **tm.slots}
    feeds = {**data, "lr": np.array(0.001, np.float32), "step": np.array(0, np.int64)}
    names = ["loss"] + [f"{k}.next" for k in state]

    def step():
        out = sess.run(names, {**feeds, **state})
        state.update(zip(state, out[1:]))
    return step


# ----- PyTorch -----
def torch_runners(w: dict, data: dict, export: bool = True):
    import torch

    torch.set_num_threads(THREADS)
    layers = w.get("layers", 1)
    if w["cell"] == "lstm":
        rnn = torch.nn.LSTM(w["I"], w["H"], num_layers=layers, batch_first=True)
    else:
        rnn = torch.nn.RNN(w["I"], w["H"], num_layers=layers, batch_first=True,
                           nonlinearity="relu" if w["cell"] == "basic_relu" else "tanh")
    head = torch.nn.Linear(w["H"], w.get("classes", 1))

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = rnn, head

        def forward(self, x):
            seq, _ = self.rnn(x)
            return self.head(seq[:, -1]) if w["head"] == "classify" else self.head(seq)

    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    lossf = torch.nn.CrossEntropyLoss() if w["head"] == "classify" else torch.nn.MSELoss()
    return torch_runners_of(Net(), (x,), lambda out: lossf(out, y), {"x": data["x"]}, ort_session, export)


def torch_runners_of(net, args: tuple, loss_of, feeds: dict, ort_session, export: bool = True,
                     output_names: list[str] | None = None, fetch: list[str] | None = None) -> dict:
    """PyTorch eager forward (no_grad) and training step (Adam) of `net` on `args`, whose
    outputs `loss_of` turns into the loss; and, with `export`, onnxruntime on the module
    exported with `feeds`' names (batch dims dynamic), fetching `fetch` (all by default)."""
    import torch

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def fwd():
        with torch.no_grad():
            net(*args)

    def step():
        opt.zero_grad()
        loss_of(net(*args)).backward()
        opt.step()

    runners = {"torch eager fwd": fwd, "torch train step": step}
    if not export:
        return runners
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        torch.onnx.export(net, args, str(path), input_names=list(feeds), output_names=output_names,
                          dynamo=False, dynamic_axes={k: {0: "batch"} for k in feeds})
        sess = ort_session(path.read_bytes())
    runners["ORT torch-export fwd"] = lambda: sess.run(fetch, feeds)
    return runners


def bench(names: list[str], repeats: int) -> dict:
    results = {}
    for name in names:
        w = WORKLOADS[name]
        if w["head"] == "seq2seq":          # W5: fwd is the eval model (teacher-forced logits + loss)
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from w5 import w5_runners
            runners = w5_runners(w, ort_session, rnnc_train_step, THREADS)
        else:
            data = data_for(w, np.random.default_rng(0))
            runners = {}
            runners.update(rnnc_runners(w, data))
            runners.update(torch_runners(w, data))
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(3):                  # rounds interleave the libraries
            for k, fn in runners.items():
                times[k].append(median_ms(fn, max(repeats // 3, 7)))
                time.sleep(1.0)             # let the other library's threads go idle (torch spins ~200 ms)
        results[name] = {k: statistics.median(v) for k, v in times.items()}
        print_row(name, results[name])
    return results


def print_row(name: str, r: dict) -> None:
    tf, tt = r["torch eager fwd"], r["torch train step"]
    print(f"\n{name}: " + spec_summary(WORKLOADS[name]))
    print(f"  {'':24} {'ms':>9} {'× torch':>8}")
    for k, v in r.items():
        base = tt if "train" in k else tf
        print(f"  {k:24} {v:9.2f} {v / base:8.2f}")
    sys.stdout.flush()


def spec_summary(w: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in w.items())


# ----- memory (one framework per fresh process) -----
def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(framework: str, T: int, policy: str) -> None:
    w = dict(WORKLOADS["W6"], T=T)
    data = data_for(w, np.random.default_rng(0))
    if framework == "torch":
        step = torch_runners(w, data, export=False)["torch train step"]
    else:
        from rnnc.api import check
        from rnnc.training_graph import build_train

        step = rnnc_train_step(build_train(check("bench.rnn", text=spec_for(w)), "auto", memory=policy), data)
    Path("/proc/self/clear_refs").write_text("5")      # reset the peak (VmHWM) to the current RSS
    before = _rss_kib("VmRSS")
    for _ in range(3):
        step()
    print(json.dumps({"peak_minus_before_mib": (_rss_kib("VmHWM") - before) / 1024, "before_mib": before / 1024}))


def memory(out: dict) -> None:
    import subprocess

    print("\nW6 training memory (MiB): peak RSS over 3 steps minus RSS before the first step")
    runs = [("torch", "-"), ("rnnc", "store"), ("rnnc", "recompute"), ("rnnc", "checkpoint")]
    for T in (500, 2000):
        for fw, policy in runs:
            r = subprocess.run([sys.executable, __file__, "--memory-child", fw, str(T), policy],
                               capture_output=True, text=True)
            if r.returncode:
                print(f"  T={T} {fw} {policy}: failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            m = json.loads(r.stdout.strip().splitlines()[-1])
            out[f"mem {fw} {policy} T={T}"] = m
            print(f"  T={T:5d} {fw:6s} {policy:10s} {m['peak_minus_before_mib']:8.1f}   (before: {m['before_mib']:.0f})")


def compile_times(out: dict) -> None:
    import subprocess

    print("\nrnnc compile, whole command (s)")
    exe = Path(sys.executable).with_name("rnnc")
    for spec in sorted(Path(__file__).resolve().parents[1].glob("specs/*.rnn")):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([str(exe), "compile", str(spec), "-o", tmp], check=True, capture_output=True)
            dt = time.perf_counter() - t
        out[f"compile {spec.name}"] = dt
        print(f"  {spec.name:24s} {dt:6.2f}")


def placement_bench(out: dict, repeats: int) -> None:
    from rnnc.api import compile as rnnc_compile
    from rnnc.placement import PlacedModel

    w = WORKLOADS["W4"]
    spec = (f"model two\ninput x: f32[batch, {w['T']}, {w['I']}]\n"
            f"cell deep = stack(lstm({w['H']}) on cpu, lstm({w['H']}) on cpu) | project(1)\n"
            "pred, _ = deep(x)\noutput pred\n")
    x = data_for(w, np.random.default_rng(0))["x"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "two.rnn").write_text(spec)
        rnnc_compile(Path(tmp) / "two.rnn", out=Path(tmp) / "two")
        seq = PlacedModel(Path(tmp) / "two", threads=THREADS)
        pipe = PlacedModel(Path(tmp) / "two", threads=1)
        runners = {"segment after segment": lambda: seq.run({"x": x}),
                   "segment after segment, 1 thread": lambda: pipe.run({"x": x}),
                   "pipelined, 4 micro-batches": lambda: pipe.run_pipelined({"x": x}, 4),
                   "pipelined, 8 micro-batches": lambda: pipe.run_pipelined({"x": x}, 8)}
        times: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(3):
            for k, fn in runners.items():
                times[k].append(median_ms(fn, max(repeats // 3, 7)))
                time.sleep(0.2)
    print(f"\nplacement: W4 as 2 CPU segments (B={w['B']}, T={w['T']}), inference")
    base = statistics.median(times["segment after segment"])
    for k, v in times.items():
        m = statistics.median(v)
        out[f"placement {k}"] = m
        print(f"  {k:28s} {m:8.2f} ms  {m / base:5.2f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", default="bench/results.json")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--placement", action="store_true")
    ap.add_argument("--memory-child", nargs=3, metavar=("FRAMEWORK", "T", "POLICY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("bench needs torch: pip install torch==2.13.0")
    if args.memory_child:
        fw, T, policy = args.memory_child
        memory_child(fw, int(T), policy)
        return
    results = bench([w for w in args.workloads.split(",") if w], args.repeats)
    if args.memory:
        memory(results)
    if args.compile:
        compile_times(results)
    if args.placement:
        placement_bench(results, args.repeats)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
