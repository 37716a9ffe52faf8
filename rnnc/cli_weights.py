"""`rnnc weights import|export`: weights between rnnc models and PyTorch, Keras or TF1 files.

Registered on the main command group in rnnc/cli.py (`main.add_command(weights)`).
"""
from __future__ import annotations

import functools

import click

LAYOUT = click.Choice(["torch", "keras", "tf1"])


def _guarded(fn):
    """rnnc.cli.guarded, looked up when the command runs (rnnc.cli imports this module)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .cli import guarded

        return guarded(fn)(*args, **kwargs)
    return wrapper


@click.group()
def weights():
    """Import a framework's trained weights into an rnnc model, or export an rnnc model's."""


@weights.command(name="import")
@click.argument("spec", type=click.Path(dir_okay=False))
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--layout", required=True, type=LAYOUT, help="Whose names and layouts FILE holds.")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--map", "maps", multiple=True, metavar="RNNC=SOURCE",
              help="Name prefix in FILE of an rnnc path (a cell run, a layer, a dense target); repeatable.")
@click.option("--allow-extra", is_flag=True, help="Ignore tensors of FILE that match no parameter.")
@click.option("--unroll", type=click.Choice(["static", "loop", "fused", "auto"]), default="auto", show_default=True)
@click.option("--stateful", is_flag=True, help="Also write infer_stateful.onnx.")
@_guarded
def import_(spec, file, layout, out, maps, allow_extra, unroll, stateful):
    """Compile SPEC with the weights in FILE (.npz or .safetensors) into a folder."""
    from .weights import import_weights, parse_maps

    result = import_weights(spec, file, layout, out, parse_maps(maps), allow_extra=allow_extra,
                            unroll=unroll, stateful=stateful)
    click.echo(f"imported {len(result.params)} parameters from {file} ({layout}) into "
               + ", ".join(str(p) for p in result.files))


@weights.command(name="export")
@click.argument("model", type=click.Path())
@click.option("--layout", required=True, type=LAYOUT, help="Whose names and layouts to write.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write: .npz, or .safetensors.")
@click.option("--map", "maps", multiple=True, metavar="RNNC=SOURCE",
              help="Name prefix to write for an rnnc path; repeatable.")
@_guarded
def export(model, layout, out, maps):
    """Write the parameters of MODEL (an .onnx file or a model folder) as a LAYOUT weights file."""
    from .weights import export_weights, parse_maps

    tensors = export_weights(model, layout, out, parse_maps(maps))
    click.echo(f"wrote {len(tensors)} tensors ({layout}) to {out}")
