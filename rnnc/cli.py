"""The `rnnc` command line: click commands over the Python API.

Exit codes: 0 success; 1 an unexpected internal error; 2 a usage error (bad option);
3 a bad spec (`SpecError`: every error with file:line:col); 4 bad data, inputs, model
files or checkpoints; 5 the device asked for (`--device cuda`) is not there (`DeviceError`;
`--allow-cpu` runs on the CPU instead, with a one-line warning).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .errors import EXIT_SPEC_ERROR, SpecError

EXIT_DATA_ERROR = 4
EXIT_DEVICE_ERROR = 5


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def guarded(fn):
    """Turn the errors a user can cause into one message and an exit code, never a traceback."""
    import functools

    from .checkpoint import CheckpointError
    from .datafile import DataError
    from .devices import DeviceError
    from .runtime import InputError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecError as e:
            _fail(e.report(), EXIT_SPEC_ERROR)
        except (DataError, InputError, CheckpointError) as e:
            _fail(f"error: {e}", EXIT_DATA_ERROR)
        except DeviceError as e:
            _fail(f"error: {e}", EXIT_DEVICE_ERROR)
        except OSError as e:   # an output path that cannot be written, a full disk
            _fail(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), EXIT_DATA_ERROR)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (click.ClickException, click.exceptions.Exit, SystemExit):
            raise
        except Exception as e:   # a bug in rnnc, not in the user's input
            if os.environ.get("RNNC_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e}\n(this is a bug in rnnc; rerun with RNNC_DEBUG=1 "
                  "for the traceback and report it)", 1)
    return wrapper


def device_options(fn):
    """`--device` and `--allow-cpu` (rnnc/devices.py)."""
    fn = click.option("--allow-cpu", is_flag=True,
                      help="If the device asked for is not there, warn once and run on the CPU.")(fn)
    return click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda|cuda:N|auto",
                        callback=_check_device,
                        help="Device of the run; auto: CUDA when it is really there, else the CPU.")(fn)


def _check_device(ctx, param, value):
    from .devices import DeviceError, parse

    try:
        parse(value)
    except DeviceError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _select_device(device: str, allow_cpu: bool):
    from .devices import select

    return select(device, allow_cpu)


MEMORY_HELP = ("What train.onnx's loops keep for the backward pass: every value it reads (store), the "
               "states only (recompute), or the state every K steps, each chunk rerun (checkpoint; K ≈ √T "
               "by default).")


def _check_memory(ctx, param, value):
    from .lower.chunked import parse_memory

    try:
        parse_memory(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnc")
def main():
    """rnnc — compile recurrent networks written as specs into ONNX models, and train them."""


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@guarded
def check(spec):
    """Parse and check SPEC; print a one-line summary or every error."""
    from . import api

    model = api.check(spec)
    ins = ", ".join(f"{n}: {t}" for n, t in model.inputs)
    click.echo(f"{spec}: ok — model {model.name} ({ins}); outputs: {', '.join(n for n, _ in model.outputs) or '-'}"
               + ("; loss: yes" if model.loss is not None else ""))
    for what, span in model.unsupported:
        click.echo(f"  note: {span}: checked, but compiled only by a later release: {what}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Output folder (default: ./<model name>/).")
@click.option("--unroll", type=click.Choice(["static", "loop", "fused", "auto"]), default="auto", show_default=True,
              help="Lowering for cell runs that name none in the spec.")
@click.option("--stateful", is_flag=True, help="Also write infer_stateful.onnx (state inputs and outputs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights.")
@click.option("--memory", default="store", show_default=True, metavar="store|recompute|checkpoint[:K]",
              callback=_check_memory, help=MEMORY_HELP)
@click.option("--explain", is_flag=True, help="Print the lowering chosen for each cell run, why, and its provider.")
@click.option("--device", "target", default="cpu", show_default=True, metavar="cpu|cuda|cuda:N",
              help="The device the models will run on: lowerings are picked for it by static rules "
                   "(compiling never needs it to be there).")
@guarded
def compile(spec, out, unroll, stateful, seed, memory, explain, target):
    """Compile SPEC into ONNX models in a folder."""
    from . import api
    from .devices import DeviceError, parse
    from .summary import summarize

    try:
        parse(target)     # a misspelt device is a usage error, found before any work
    except DeviceError as e:
        raise click.UsageError(str(e)) from None
    result = api.compile(spec, out=out, unroll=unroll, seed=seed, stateful=stateful, memory=memory,
                         device=target)
    click.echo(summarize(result, explain))


@main.command()
@click.argument("model", type=click.Path(exists=False))
@click.argument("inputs", nargs=-1)
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="Write the outputs to this .npz file.")
@click.option("--text", "text_file", type=click.Path(dir_okay=False),
              help="Models with vocabularies: one source text per line, as a batch.")
@click.option("--pipeline", type=int, default=0, metavar="N",
              help="For a placed model (a folder with manifest.json): N micro-batches flowing through its segments.")
@device_options
@guarded
def run(model, inputs, out, text_file, pipeline, device, allow_cpu):
    """Run MODEL (a folder or an .onnx file) on inputs given as name=file.npy; for models
    with vocabularies also name="some text" (or --text FILE), and text outputs are printed
    as text. A folder with a manifest.json (a spec that places cells) runs placed: each
    segment on its device, the unplaced work on --device."""
    from .api import write_atomic
    from .runtime import model_file, run_placed, run_session, session
    from .seq2seq.textio import decoded_outputs, feeds as text_feeds

    _select_device(device, allow_cpu)
    sess = session(model_file(model))
    feeds = text_feeds(sess, list(inputs), text_file)
    if Path(model).is_dir() and (Path(model) / "manifest.json").is_file():
        results = run_placed(Path(model), feeds, pipeline, device or "cpu", allow_cpu)
    else:
        results = run_session(sess, feeds)
    if out:
        import io

        buf = io.BytesIO()
        np.savez(buf, **results)
        write_atomic(Path(out), buf.getvalue())
        click.echo(f"wrote {', '.join(results)} to {out}")
        return
    np.set_printoptions(precision=5, suppress=True, threshold=200, edgeitems=3)
    texts = decoded_outputs(sess, results)
    for name, value in results.items():
        if name in texts:
            click.echo(f"{name}: text[{len(texts[name])}]")
            for line in texts[name]:
                click.echo(f"  {line}")
            continue
        click.echo(f"{name}: {value.dtype}{list(value.shape)}\n{value}")


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help="Training data: .npz (arrays named after the spec's inputs) or .csv.")
@click.option("-o", "--out", type=click.Path(file_okay=False), help="Run folder (default: ./runs/<model name>/).")
@click.option("--epochs", type=int, help="Override the train block's epochs.")
@click.option("--steps", type=int, help="Override with a number of steps.")
@click.option("--batch", type=int, help="Override the batch size.")
@click.option("--lr", type=float, help="Override the learning rate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, split and batch order.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any training option.")
@click.option("--resume", is_flag=True, help="Continue the run in the folder from its last checkpoint.")
@click.option("--unroll", type=click.Choice(["static", "loop", "fused", "auto"]), default="auto", show_default=True)
@click.option("--checkpoint-every", type=int, default=0, show_default=True,
              help="Also checkpoint every N steps (always at the end of each epoch).")
@click.option("--memory", default="store", show_default=True, metavar="store|recompute|checkpoint[:K]",
              callback=_check_memory, help=MEMORY_HELP)
@click.option("--init", type=click.Path(),
              help="Start from the weights of a compiled model (folder or .onnx), e.g. from `rnnc weights import`.")
@device_options
@click.option("--threads", type=int, help="onnxruntime intra-op threads (default: all cores).")
@click.option("--quiet", is_flag=True, help="No progress line.")
@guarded
def train(spec, data_path, out, epochs, steps, batch, lr, seed, sets, resume, unroll, checkpoint_every,
          memory, init, device, allow_cpu, threads, quiet):
    """Train SPEC on a data file; write the trained models, checkpoints and metrics to a folder."""
    from . import api
    from .train import Trainer, TrainError

    if out is None:
        out = str(Path("runs") / api.check(spec).name)
    try:
        trainer = Trainer(spec, data_path, out, seed=seed, resume=resume, unroll=unroll,
                          checkpoint_every=checkpoint_every, threads=threads, progress=not quiet, init=init,
                          memory=memory,
                          device=device, allow_cpu=allow_cpu, epochs=epochs, steps=steps, batch=batch, lr=lr, sets=sets)
        summary = trainer.train()
    except TrainError as e:
        raise click.UsageError(str(e)) from None
    shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k in ("loss",) or k.startswith("val_")
                      or k in trainer.tm.metrics)
    click.echo(f"trained {trainer.state.step} steps: {shown}")
    click.echo(f"wrote {out}/model.onnx (and infer.onnx, eval.onnx, train.onnx, checkpoints/, metrics.jsonl)")


@main.command(name="eval")
@click.argument("model", type=click.Path())
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False))
@click.option("--decode", metavar="greedy(...)|beam(...)",
              help="seq2seq: decode this way instead of the spec's decode line, e.g. 'beam(width=4, max_len=12)'.")
@device_options
@guarded
def eval_(model, data_path, decode, device, allow_cpu):
    """Loss and metrics of MODEL (a run folder or an eval.onnx) on a data file; for seq2seq
    models also exact_match and token_accuracy of the decoded outputs."""
    from .train import evaluate

    _select_device(device, allow_cpu)
    for k, v in evaluate(model, data_path, decode=decode).items():
        click.echo(f"{k}: {v:.6f}")


@main.command()
@click.argument("name")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=".", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@guarded
def data(name, out, seed):
    """Write the example data set NAME (NAME_train and NAME_test) to a folder."""
    from . import datasets

    if name not in datasets.REGISTRY:
        raise click.UsageError(f"unknown data set '{name}'; choose from {', '.join(datasets.REGISTRY)}")
    for path in datasets.write(name, out, seed=seed):
        click.echo(f"wrote {path}")


from .cli_weights import weights  # noqa: E402  (the `rnnc weights` group)

main.add_command(weights)

if __name__ == "__main__":
    main()
