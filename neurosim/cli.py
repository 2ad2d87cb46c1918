"""Command line: ``neurosim simulate`` and ``neurosim info``.

A thin layer: each command parses options, calls one library function
(:func:`neurosim.simulate.simulate`, :func:`neurosim.models.model_info`) and prints.
Progress goes to stderr, results to stdout.

Exit codes: 0 success; 2 bad input (missing or malformed file, unknown model, unknown key,
wrong shape, NaN, existing output without ``--force``), printed as one line
``Error: ...``; 1 runtime failure.  ``--debug`` adds the Python traceback.
"""
import contextlib
import json
import shlex
import traceback
from pathlib import Path

import click

import neurosim
from . import _validate as V


class BadInput(click.ClickException):
    """Bad user input: ``Error: ...`` on one line, exit code 2."""
    exit_code = 2


class RuntimeFailure(click.ClickException):
    """The run itself failed: ``Error: ...``, exit code 1."""
    exit_code = 1


_INPUT_ERRORS = (V.NeurosimError, FileNotFoundError, FileExistsError, IsADirectoryError,
                 NotADirectoryError, PermissionError)


def _one_line(e):
    return " ".join(str(e).split()) or type(e).__name__


@contextlib.contextmanager
def _errors(debug):
    """Map exceptions to exit codes: input errors 2, anything else 1."""
    try:
        yield
    except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
        raise
    except _INPUT_ERRORS as e:
        if debug:
            traceback.print_exc()
        raise BadInput(_one_line(e)) from e
    except Exception as e:
        if debug:
            traceback.print_exc()
        raise RuntimeFailure(f"runtime failure: {type(e).__name__}: {_one_line(e)}"
                             + ("" if debug else " (run with --debug for the traceback)")) from e


def _command_line(ctx):
    """The invocation, rebuilt from the parsed options (stored in the run file)."""
    args = ["neurosim", ctx.info_name]
    for k, v in ctx.params.items():
        if v is None or v is False or k == "debug":
            continue
        opt = "--" + k.rstrip("_").replace("_", "-")
        args += [opt] if v is True else [opt, str(v)]
    return shlex.join(args)


_debug = click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(neurosim.__version__, prog_name="neurosim")
def main():
    """neurosim: event-driven spiking-network simulator with exact operation counts."""


@main.command()
@click.option("--model", required=True, metavar="FILE|NAME",
              help="Model file (.toml), model name (see `neurosim info`), or run file (.h5).")
@click.option("--input", "input_", required=True, metavar="FILE|digits",
              help="Stimulus: .npy (the single input/source population), .npz (keys = "
                   "population names), or 'digits' (sklearn digits test split).")
@click.option("--steps", required=True, type=click.IntRange(min=1), help="Forward steps T.")
@click.option("--n-samples", type=click.IntRange(min=1),
              help="Keep the first N samples (digits: default 10).")
@click.option("--backward-steps", type=click.IntRange(min=1),
              help="Also run the backward phase for TB steps.")
@click.option("--grad", metavar="FILE|random",
              help="Backward current: 'random' (normal(0, 0.5) into the last spiking "
                   "population, seeded) or a .npy/.npz file.")
@click.option("--record", is_flag=True, help="Record and store spike trains.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of weight initialisation and random gradients.")
@click.option("--threads", type=click.IntRange(min=1), help="Numba threads.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Run file to write (HDF5, written atomically).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@_debug
@click.pass_context
def simulate(ctx, model, input_, steps, n_samples, backward_steps, grad, record, seed, threads,
             out, force, debug):
    """Simulate a model on an input and write a run file."""
    from .simulate import format_summary, simulate as run
    report = lambda msg: click.echo(f"[neurosim] {msg}", err=True)
    with _errors(debug):
        sim = run(model, input_, steps, n_samples=n_samples, backward_steps=backward_steps,
                  grad=grad, record=record, seed=seed, n_threads=threads, out=out, force=force,
                  command=_command_line(ctx), report=report)
    click.echo(format_summary(sim))


@main.command()
@click.option("--model", required=True, metavar="FILE|NAME",
              help="Model file (.toml), model name, or run file (.h5).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the weight initialisation (affects sparse synapse counts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@_debug
def info(model, seed, as_json, debug):
    """Describe a model: populations, projections, synapses, MACs and parameters."""
    from .models import format_model_info, list_models, model_info
    from .simulate import open_model
    with _errors(debug):
        d = model_info(open_model(model, seed))
        d["known_models"] = list_models()
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(format_model_info(d))


if __name__ == "__main__":  # pragma: no cover
    main()
