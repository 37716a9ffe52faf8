"""`rnnc train`: run the train model step by step on a data file, with checkpoints.

Determinism: initial weights come from the seed; the validation split from the seed; the
batch order of epoch e from (seed, e). A checkpoint holds the parameters, optimizer slots,
step, epoch and the position within the epoch, so `--resume` continues exactly where the
last checkpoint was taken (same thread count → same numbers).

Run folder: infer.onnx and eval.onnx with the trained weights, train.onnx (parameters are its
inputs; their trained values are eval.onnx's initializers), model.onnx (a copy of
infer.onnx), encoder.onnx and decoder_step.onnx (seq2seq), checkpoints/step-NNNNNNNNN.npz,
metrics.jsonl, loss.png.

Text data (a spec with a seq2seq block): a .tsv file of pairs fills the source and target
inputs of the seq2seq call the loss reads (rnnc/textdata.py), and batches are bucketed by
source length, each trimmed to its longest sequence.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .api import build_infer, check, placed_files, refuse_unsupported, write_atomic
from .datafile import DataError, batches, load_data, split
from .errors import Diagnostic, SpecError
from .ir import Model, TrainConfig, length_inputs, sequence_time_dims
from .metrics_log import MetricsLog, plot_loss
from .resolve_train import OPTIMIZERS, SCHEDULES
from .schedule import learning_rate
from .seq2seq.export import seq2seq_files
from .seq2seq.meta import text_layout
from .textdata import bucketed_batches, length_pairs
from .lower.chunked import parse_memory
from .training_graph import build_eval, build_train


class TrainError(Exception):
    """A training run that cannot start or continue (bad options, mismatched checkpoint)."""


# ----- configuration: the spec's train block, then the command line -----
def override(cfg: TrainConfig, epochs=None, steps=None, batch=None, lr=None, sets=()) -> TrainConfig:
    values = dataclasses.asdict(cfg)
    opt_args = dict(cfg.optimizer_args)
    sched_args = dict(cfg.schedule_args)
    pairs = []
    for item in sets:
        if "=" not in item:
            raise TrainError(f"--set {item!r}: write key=value")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    pairs += [(k, v) for k, v in (("epochs", epochs), ("steps", steps), ("batch", batch), ("lr", lr))
              if v is not None]
    for key, raw in pairs:
        if key == "optimizer":
            if raw not in OPTIMIZERS:
                raise TrainError(f"--set optimizer={raw}: choose one of {', '.join(OPTIMIZERS)}")
            old = opt_args
            values["optimizer"] = raw
            opt_args = {k: old.get(k, d) for k, d in OPTIMIZERS[raw].items()}
            continue
        if key == "schedule":
            if raw not in SCHEDULES and raw != "none":
                raise TrainError(f"--set schedule={raw}: choose one of {', '.join(SCHEDULES)} or none")
            values["schedule"] = None if raw == "none" else raw
            continue
        known = ["optimizer", "schedule", "batch", "epochs", "steps", "tbptt", "validate"] + \
            list(OPTIMIZERS[values["optimizer"]])
        if key not in known and not key.startswith("schedule."):
            raise TrainError(f"unknown training option '{key}'; known: {', '.join(known + ['schedule.<option>'])}")
        value = _number(key, raw)
        if key in ("batch", "epochs", "steps", "tbptt"):
            if not isinstance(value, int) or value <= 0:
                raise TrainError(f"{key} must be a positive whole number, got {raw}")
            values[key] = value
            if key == "steps":
                values["epochs"] = None
            if key == "epochs":
                values["steps"] = None
        elif key == "validate":
            if not 0 <= value < 1:
                raise TrainError("validate is a fraction from 0 up to (not including) 1")
            values["validate"] = float(value)
        elif key in OPTIMIZERS[values["optimizer"]]:
            if key in ("lr", "eps", "clip_norm") and value <= 0:
                raise TrainError(f"{key} must be positive, got {raw}")
            opt_args[key] = value
        else:
            sched_args[key.split(".", 1)[1]] = value
    values["optimizer_args"] = tuple(opt_args.items())
    values["schedule_args"] = tuple(sched_args.items())
    if values["schedule"]:
        missing = [k for k, d in SCHEDULES[values["schedule"]].items() if d is None and k not in sched_args]
        if missing:
            raise TrainError(f"schedule {values['schedule']} needs {', '.join(missing)} (--set schedule.{missing[0]}=...)")
    return TrainConfig(**values)


def _number(key: str, raw):
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):   # from a typed option
        return raw
    try:
        return int(raw)
    except ValueError:
        try:
            return float(raw)
        except ValueError:
            raise TrainError(f"{key}={raw}: expected a number") from None


# ----- the run -----
@dataclass
class State:
    params: dict[str, np.ndarray]
    slots: dict[str, np.ndarray]
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def expected_inputs(model: Model, names: list[str]) -> dict:
    return {n: (t.dtype, t.shape) for n, t in model.inputs if n in names}


def initial_weights(init: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters of a compiled model (folder or .onnx) for `--init`: each of `params`
    by name, with its shape (a WeightsError, exit code 4, otherwise)."""
    from .weights import load_initial

    return load_initial(init, params)


class Trainer:
    def __init__(self, spec: str, data: str, out: str, *, seed: int = 0, resume: bool = False,
                 unroll: str = "auto", checkpoint_every: int = 0, threads: int | None = None,
                 progress: bool = True, init: str | None = None, device: str | None = None,
                 allow_cpu: bool = False, resident: bool = True, memory: str = "store", **overrides):
        from . import devices

        # the device first: a missing GPU is reported before any work (rnnc/devices.py)
        self.device = devices.select(device, allow_cpu) if device is not None else devices.current()
        self.resident = resident   # parameters and slots stay on the device between steps (resident.py)
        self._res = None
        model = check(spec, unroll=unroll)
        refuse_unsupported(model)
        if model.loss is None:
            raise SpecError([Diagnostic("the spec has no loss, so there is nothing to train",
                                        None, "add e.g. `loss = mse(pred, y)`")], model.source)
        self.model = dataclasses.replace(model, train=override(model.train, **overrides))
        self.cfg = self.model.train
        if self.cfg.tbptt and text_layout(self.model) is not None:
            raise TrainError("tbptt cuts sequences into windows; a seq2seq model trains on whole pairs")
        self.out = Path(out)
        self.seed, self.unroll, self.threads = seed, unroll, threads
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.ckpt_dir = self.out / "checkpoints"
        _remove_stale_temp_files(self.ckpt_dir)
        if not resume and ckpt.latest(self.ckpt_dir) is not None:
            raise TrainError(f"{self.out} already holds a training run; continue it with --resume "
                             "or choose another -o")
        try:       # --memory: what the train model's loops keep for the backward pass
            parse_memory(memory)
        except ValueError as e:
            raise TrainError(str(e)) from None
        self.tm = build_train(self.model, unroll, seed=seed, memory=memory)
        if init is not None:   # --init: start from a compiled model's weights instead of the seed's
            self.tm.params = initial_weights(init, self.tm.params)
        need = self.tm.data_inputs
        self.data_path = data
        self.text = text_layout(self.model)       # seq2seq: .tsv columns -> inputs, bucketing
        vocabs = {v.name: v for v in self.model.vocabs}
        self.data = load_data(data, expected_inputs(self.model, need), text=(self.text, vocabs))
        self._check_labels()
        self.train_data, self.val_data = (split(self.data, self.cfg.validate, seed) if self.cfg.validate
                                          else (self.data, None))
        self.n = len(next(iter(self.train_data.values())))
        if self.n == 0:
            raise DataError(data, "no examples to train on")
        self.state = State(dict(self.tm.params), dict(self.tm.slots))
        if resume:
            self._resume()
        self.sess = session_from_proto(self.tm.onnx, threads, training=True)
        self.placed = self._placed_segments(threads, allow_cpu)
        self.time_dims = sequence_time_dims(self.model)
        self.len_inputs = length_inputs(self.model)

    # ----- data checks -----
    def _check_labels(self) -> None:
        """Class labels must index the logits: out-of-range labels would train on nothing."""
        from .ir import walk

        for e in walk(self.model):
            if e.op in ("softmax_xent", "accuracy") and e.args[1].op == "input":
                name = e.args[1].attrs["name"]
                classes = e.args[0].type.shape[-1]
                labels = self.data.get(name)
                if labels is not None and labels.size and (labels.min() < 0 or labels.max() >= classes):
                    raise DataError(self.data_path, f"'{name}' holds class ids from {labels.min()} to "
                                    f"{labels.max()}, but the logits have {classes} classes (0..{classes - 1})")


    # ----- checkpoints -----
    def _meta(self) -> dict:
        s = self.state
        return {"step": s.step, "epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "seed": self.seed,
                "spec_sha256": self.model_sha(), "config": dataclasses.asdict(self.cfg)}

    def model_sha(self) -> str:
        import hashlib
        return hashlib.sha256(self.model.source.encode()).hexdigest()

    def save(self) -> Path:
        arrays = {f"param/{k}": v for k, v in self.state.params.items()}
        arrays |= {f"slot/{k}": v for k, v in self.state.slots.items()}
        path = ckpt.save(ckpt.checkpoint_path(self.ckpt_dir, self.state.step), arrays, self._meta())
        ckpt.prune(self.ckpt_dir, keep=3)
        return path

    def _resume(self) -> None:
        path = ckpt.latest(self.ckpt_dir)
        if path is None:
            raise TrainError(f"--resume: no checkpoint in {self.ckpt_dir}")
        arrays, meta = ckpt.load(path)
        if meta.get("spec_sha256") != self.model_sha():
            raise ckpt.CheckpointError(path, "it was written for a different spec; resume with the same spec")
        if meta.get("seed") != self.seed:
            raise ckpt.CheckpointError(path, f"it was written with --seed {meta.get('seed')}, not {self.seed}")
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        slots = {k[5:]: v for k, v in arrays.items() if k.startswith("slot/")}
        for k, v in self.state.params.items():
            if k not in params or params[k].shape != v.shape:
                raise ckpt.CheckpointError(path, f"parameter '{k}' is missing or has another shape")
        for k in self.state.slots:
            if k not in slots:
                raise ckpt.CheckpointError(path, f"optimizer slot '{k}' is missing (another optimizer?)")
        self.state = State(params, slots, meta["step"], meta["epoch"], meta["batch_in_epoch"])

    # ----- steps -----
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.cfg.batch)

    def total_steps(self) -> int:
        if self.cfg.steps:
            return self.cfg.steps
        return (self.cfg.epochs or 10) * self.steps_per_epoch()

    def _windows(self, feeds: dict):
        """Truncated BPTT: the batch cut into windows of tbptt steps along time, in order."""
        if not self.cfg.tbptt:
            yield feeds
            return
        seq = [k for k, v in feeds.items() if v.ndim >= 2 and self._is_timed(k)]
        T = feeds[seq[0]].shape[1]
        for s in range(0, T, self.cfg.tbptt):
            e = min(T, s + self.cfg.tbptt)
            w = {}
            for k, v in feeds.items():
                if k in seq:
                    w[k] = v[:, s:e]
                elif k in self.len_inputs:
                    w[k] = np.clip(v - s, 0, e - s).astype(v.dtype)
                else:
                    w[k] = v
            yield w

    def _is_timed(self, name: str) -> bool:
        t = self.model.input_type(name)
        return len(t.shape) >= 2 and t.shape[1] in self.time_dims

    def run_step(self, feeds: dict, lr: float, carry: dict) -> dict:
        s = self.state
        inputs = dict(feeds)
        inputs["lr"] = np.asarray(lr, np.float32)
        inputs["step"] = np.asarray(s.step, np.int64)
        if "seed" in {i.name for i in self.sess.get_inputs()}:   # dropout masks: f(seed, step)
            inputs["seed"] = np.asarray(self.seed, np.int64)
        batch = len(next(iter(feeds.values())))
        for i, _, size in self.tm.state_io:
            inputs[i] = carry.get(i, np.zeros((batch, size), np.float32))
        if self.placed is not None:
            values = self._placed_step(inputs)
        elif self.resident:
            values = self._resident_step(inputs)
        else:
            inputs |= s.params
            inputs |= s.slots
            names = [o.name for o in self.sess.get_outputs()]
            values = dict(zip(names, self.sess.run(names, inputs)))
            s.params = {k: values[f"{k}.next"] for k in s.params}
            s.slots = {k: values[f"{k}.next"] for k in s.slots}
        for i, o, _ in self.tm.state_io:
            carry[i] = values[o]
        s.step += 1
        return values

    def _placed_segments(self, threads, allow_cpu):
        """A spec that places cells trains segment by segment, each on its device: the
        forward segments in order, then the backward ones in reverse (rnnc/placement.py)."""
        from .placement import PlacedModel, is_placed, segment_models

        if not is_placed(self.tm.graph):
            return None
        entry, segs = segment_models(self.tm.graph, "train", self.model.name, {})
        return PlacedModel(self.out, segments=entry["segments"], protos=[p for _, p in segs], training=True,
                           run_device=str(self.device), allow_cpu=allow_cpu, threads=threads)

    def _placed_step(self, inputs: dict) -> dict:
        s = self.state
        names = [o.name for o in self.sess.get_outputs()]
        values = self.placed.run(inputs | dict(s.params) | dict(s.slots), fetch=names)
        s.params = {k: values[f"{k}.next"] for k in s.params}
        s.slots = {k: values[f"{k}.next"] for k in s.slots}
        return values

    def _resident_step(self, inputs: dict) -> dict:
        """Parameters and slots stay bound on the device (rnnc/resident.py); only the loss
        and the logged scalars come back. `state.params`/`state.slots` read them on access."""
        from .resident import ArrayView, Resident

        s = self.state
        if self._res is None or s.params is not self._res[1] or s.slots is not self._res[2]:
            res = Resident(self.sess, self.device.ort_device, dict(s.params) | dict(s.slots))
            s.params, s.slots = ArrayView(res, list(s.params)), ArrayView(res, list(s.slots))
            self._res = (res, s.params, s.slots)
        fetch = ["loss", "grad_norm"] + list(self.tm.metrics)
        return self._res[0].step(inputs, fetch, keep=[o for _, o, _ in self.tm.state_io])

    def train(self) -> dict:
        cfg, s = self.cfg, self.state
        total = self.total_steps()
        log = MetricsLog(self.out, resume_step=s.step)
        started, seqs, last_print = time.time(), 0, 0.0
        summary = {}
        try:
            while s.step < total:
                rng = np.random.default_rng([self.seed, s.epoch])
                order = list(self._batches(rng))
                for bi in range(s.batch_in_epoch, len(order)):
                    carry: dict = {}
                    for w in self._windows(order[bi]):
                        if s.step >= total:
                            break
                        lr = learning_rate(float(dict(cfg.optimizer_args)["lr"]), cfg.schedule,
                                           dict(cfg.schedule_args), s.step)
                        values = self.run_step(w, lr, carry)
                        n_seq = len(next(iter(w.values())))
                        seqs += n_seq
                        rate = seqs / max(time.time() - started, 1e-9)
                        rec = {"step": s.step, "epoch": s.epoch, "lr": lr, "loss": float(values["loss"]),
                               "grad_norm": float(values["grad_norm"]), "seq_per_s": round(rate, 1)}
                        rec |= {m: float(values[m]) for m in self.tm.metrics}
                        log.log(rec)
                        summary = rec
                        if self.progress and time.time() - last_print > 0.5:
                            last_print = time.time()
                            self._progress(rec, total)
                    s.batch_in_epoch = bi + 1
                    if self.checkpoint_every and s.step % self.checkpoint_every == 0:
                        self.save()
                    if s.step >= total:
                        break
                if s.batch_in_epoch >= len(order):
                    s.epoch, s.batch_in_epoch = s.epoch + 1, 0
                    if self.val_data is not None:
                        val = self.evaluate(self.val_data)
                        log.log({"step": s.step, "epoch": s.epoch, **{f"val_{k}": v for k, v in val.items()}})
                        summary |= {f"val_{k}": v for k, v in val.items()}
                    self.save()
        finally:
            log.close()
        self.save()
        if self.progress:
            self._progress(summary, total, end=True)
        self.write_models()
        return summary

    def _batches(self, rng):
        if self.text:
            fixed = {n for n, t in self.model.inputs if len(t.shape) >= 2 and isinstance(t.shape[1], int)}
            return bucketed_batches(self.train_data, self.cfg.batch, rng, length_pairs(self.text), fixed)
        return batches(self.train_data, self.cfg.batch, rng, shuffle=True)

    def _progress(self, rec: dict, total: int, end: bool = False) -> None:
        if not rec:
            return
        parts = [f"step {rec['step']}/{total}", f"epoch {rec['epoch']}", f"loss {rec.get('loss', float('nan')):.4f}"]
        parts += [f"{m} {rec[m]:.4f}" for m in self.tm.metrics if m in rec]
        parts += [f"{k} {v:.4f}" for k, v in rec.items() if k.startswith("val_")]
        parts.append(f"{rec.get('seq_per_s', 0):.0f} seq/s")
        line = "  ".join(parts)
        if sys.stderr.isatty() and not end:
            sys.stderr.write("\r" + line + " " * 8)
        else:
            sys.stderr.write(("\r" if sys.stderr.isatty() else "") + line + "\n")
        sys.stderr.flush()

    def evaluate(self, data: dict) -> dict:
        proto = build_eval(self.model, self.unroll, weights=self.state.params, target=self.device.kind)
        return evaluate_proto(proto, data, self.threads)

    def write_models(self) -> None:
        w = self.state.params
        infer = build_infer(self.model, self.unroll, seed=self.seed, weights=w, target=self.device.kind)
        files = {"infer.onnx": infer.onnx.SerializeToString(),
                 "eval.onnx": build_eval(self.model, self.unroll, weights=w, target=self.device.kind).SerializeToString(),
                 "train.onnx": self.tm.onnx.SerializeToString()}
        files |= {k: v.SerializeToString() for k, v in seq2seq_files(self.model, self.unroll, self.seed, w).items()}
        # a placed spec: segments/ and manifest.json as `rnnc compile` writes them, trained
        for path, data in placed_files(self.model, self.out, infer, self.tm):
            files[str(path.relative_to(self.out))] = data if isinstance(data, bytes) else data.SerializeToString()
        for name, data in files.items():
            write_atomic(self.out / name, data)
        shutil.copyfile(self.out / "infer.onnx", self.out / ".model.onnx.tmp")
        (self.out / ".model.onnx.tmp").replace(self.out / "model.onnx")
        plot_loss(self.out)


def _remove_stale_temp_files(directory: Path) -> None:
    """A checkpoint write killed midway leaves a hidden temp file; it is never a checkpoint."""
    if directory.is_dir():
        for p in directory.glob(".tmp-*"):
            p.unlink(missing_ok=True)


def session_from_proto(proto, threads=None, training: bool = False):
    """A session on the selected device (rnnc/devices.py)."""
    from .devices import session

    return session(proto, threads, training=training)


def evaluate_proto(proto, data: dict, threads=None, chunk: int = 512) -> dict:
    """Loss and metrics over `data`, averaged over chunks weighted by their rows."""
    sess = session_from_proto(proto, threads)
    names = [o.name for o in sess.get_outputs()]
    need = {i.name for i in sess.get_inputs()}
    n = len(next(iter(data.values())))
    totals = dict.fromkeys(names, 0.0)
    for start in range(0, n, chunk):
        feeds = {k: v[start:start + chunk] for k, v in data.items() if k in need}
        rows = len(next(iter(feeds.values())))
        for k, v in zip(names, sess.run(names, feeds)):
            totals[k] += float(v) * rows
    return {k: v / n for k, v in totals.items()}


def evaluate(model_path: str, data_path: str, decode: str | None = None) -> dict:
    """`rnnc eval RUN|eval.onnx --data FILE`: loss and metrics of a model on a data file; for
    a seq2seq model also exact-match and token accuracy of its decoding (infer.onnx beside
    eval.onnx; `decode` = e.g. "beam(width=4, max_len=12)" decodes another way)."""
    import onnx

    from .runtime import model_file, spec_dtype
    from .seq2seq.evaluate import decode_metrics, text_of

    path = model_file(model_path, "eval.onnx")
    proto = onnx.load(str(path))
    sess = session_from_proto(proto)
    expected = {}
    for i in sess.get_inputs():
        expected[i.name] = (spec_dtype(i.type), tuple(d if isinstance(d, int) else str(d) for d in i.shape))
    text = text_of(proto)
    if text is not None:     # the decode model also reads the target's lengths
        expected |= {c["lengths"]: ("i64", ("batch",)) for c in text[0] if c.get("lengths")}
        expected |= {c["input"]: ("i64", ("batch", "time")) for c in text[0] if c["input"] not in expected}
    data = load_data(data_path, expected, text=text)
    results = evaluate_proto(proto, {k: v for k, v in data.items() if k in {i.name for i in sess.get_inputs()}})
    if text is not None:
        results |= decode_metrics(path.parent, proto, data, decode)
    return results
