"""Command line: ``neurosim ops`` and ``neurosim bench sparsity``.

Thin commands over :mod:`neurosim.ops` (registered in :mod:`neurosim.cli`); exit codes
and ``--debug`` as in :mod:`neurosim.cli`: 2 for bad input (missing or malformed run
file, unknown energy profile, ...), 1 for runtime failures.
"""
from pathlib import Path

import click

from ._cli_common import (BadInput, _command_line, _debug, _errors, _text, nir_import_options,
                          nir_notes)
from ._validate import SEED_MAX


def _steps_from_input(net, input_):
    """T of a per-step stimulus file for the network's single input/source population."""
    import numpy as np
    stim = [p for p in net.populations.values() if p.kind in ("input", "source")]
    if len(stim) != 1 or not str(input_).endswith(".npy"):
        raise BadInput("give --steps (the steps can be read from a .npy stimulus for a model "
                       "with one input population only)")
    a = np.load(input_, mmap_mode="r", allow_pickle=False)
    per_step = 2 + len(stim[0].shape)
    if a.ndim != per_step and not (len(stim[0].shape) == 3 and a.ndim == 3):
        raise BadInput(f"--input {str(input_)!r} has shape {a.shape}, not (N, T, ...) per step; "
                       "give --steps")
    return int(a.shape[1])


def _nir_run(model, input_, steps, dt, nir_options, record, tmp):
    """Simulate a .nir model on --input into a temporary run file (``ops graph.nir``)."""
    from .io.sources import open_network
    from .simulate import simulate
    net = open_network(model, dt=dt, nir_options=nir_options)
    nir_notes(net, lambda m: click.echo(m, err=True))
    T = steps if steps is not None else _steps_from_input(net, input_)
    click.echo(f"[neurosim] simulated {Path(model).name} for {T} steps", err=True)
    out = Path(tmp) / "run.h5"
    simulate(net, str(input_), T, record=record, out=out)
    return out


@click.command()
@click.argument("run_file", metavar="RUN.h5|GRAPH.nir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the table and the estimate as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--profile", default="cmos45-fp32", show_default=True, metavar="NAME|FILE.toml",
              help="Energy profile: cmos45-fp32, loihi, or a TOML file (docs/ops-energy.md).")
@click.option("--no-energy", is_flag=True, help="Leave out the energy estimate.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Also write PNG figures to this folder (needs matplotlib).")
@click.option("--force", is_flag=True, help="--plot: overwrite existing figures.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Training run files: training samples the table is recomputed on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Training run files on file-based data sets: the data set's folder.")
@click.option("--threads", type=click.IntRange(min=1), help="Numba threads (recomputation).")
@click.option("--neurobench", is_flag=True,
              help="Print NeuroBench 2.x metrics (names, definitions, values from the exact "
                   "counts) instead of the table; with --json as a dict.")
@click.option("--input", "input_", metavar="FILE",
              help="GRAPH.nir: the stimulus (.npy / .npz, as for `neurosim simulate`).")
@click.option("--steps", type=click.IntRange(min=1),
              help="GRAPH.nir: forward steps (default: T of a per-step .npy --input).")
@nir_import_options
@_debug
def ops(run_file, as_json, as_csv, profile, no_energy, plot_dir, force, samples, data_dir,
        threads, neurobench, input_, steps, dt, nir_options, debug):
    """Operation counts per layer and phase of a run file, and an energy estimate.

    RUN.h5 is a `neurosim simulate` run file (stored counts) or a `neurosim train` run
    file (recomputed on --samples training samples; see docs/ops-energy.md).  GRAPH.nir
    is simulated first on --input (the NIR import options as for `neurosim simulate`,
    docs/nir.md): `neurosim ops graph.nir --input x.npy` in one command."""
    import tempfile
    if as_json and as_csv:
        raise click.UsageError("give at most one of --json and --csv")
    if neurobench and (as_csv or plot_dir is not None):
        raise click.UsageError("--neurobench prints the NeuroBench metrics as text or, with "
                               "--json, as JSON; it takes neither --csv nor --plot")
    is_nir = run_file.suffix == ".nir"
    if not is_nir and (input_ is not None or steps is not None or dt is not None
                       or any(v is not None for v in nir_options.values())):
        raise click.UsageError("--input, --steps, --dt and the NIR import options apply to a "
                               "GRAPH.nir argument only")
    if is_nir and input_ is None:
        raise click.UsageError("a GRAPH.nir argument needs --input (the stimulus to simulate)")
    with tempfile.TemporaryDirectory(prefix="neurosim-ops-") as tmp:
        if is_nir:
            with _errors(debug):
                run_file = _nir_run(run_file, input_, steps, dt, nir_options,
                                    plot_dir is not None or neurobench, tmp)
        _ops(run_file, as_json, as_csv, profile, no_energy, plot_dir, samples, data_dir, threads,
             neurobench, debug, force)


def _ops(run_file, as_json, as_csv, profile, no_energy, plot_dir, samples, data_dir, threads,
         neurobench, debug, force=False):
    from . import ops as O
    if neurobench:
        import json
        from .io.runfile import json_default
        with _errors(debug):
            data = O.load_run_data(run_file, n_samples=samples, data_dir=data_dir,
                                   n_threads=threads)
            if O.needs_spike_trains(data):      # composed NIR layers (docs/nir.md)
                data = O.load_run_data(run_file, n_samples=samples, data_dir=data_dir,
                                       n_threads=threads, record=True)
            d = O.neurobench_metrics(data)
        click.echo(json.dumps(d, indent=2, default=json_default) if as_json
                   else O.format_neurobench(d))
        return
    with _errors(debug):
        energy_profile = None if no_energy else O.load_profile(profile)
        data = O.load_run_data(run_file, n_samples=samples, record=plot_dir is not None,
                               data_dir=data_dir, n_threads=threads)
        table = O.table_from_data(data)
        energy = None if energy_profile is None else O.estimate_table(table, energy_profile)
        written, skipped = [], []
        if plot_dir is not None:
            from .ops.plots import plot_run
            written, skipped = plot_run(data, plot_dir, force=force)
    if as_json:
        click.echo(table.to_json(energy))
    elif as_csv:
        click.echo(table.to_csv(energy), nl=False)
    else:
        click.echo(table.format(energy))
    for p in written:
        click.echo(f"[neurosim] wrote {p}", err=True)
    for note in skipped:
        click.echo(f"[neurosim] skipped {note}", err=True)


@click.group()
def bench():
    """Benchmarks run from the command line (results as JSON lines)."""


def _parse_values(ctx, param, values):
    """``NAME=V1,V2,...`` options -> {name: [values]} (typed by neurosim.experiments.sparsity)."""
    from .experiments.sparsity import SWEEPABLE
    out = {}
    for text in values:
        name, sep, vals = text.partition("=")
        name = name.strip()
        if not sep or not vals.strip():
            raise click.BadParameter(f"expected NAME=V1,V2,... such as T=10,20,30, got {text!r}")
        if name not in SWEEPABLE:
            raise click.BadParameter(f"cannot sweep {name!r}; sweepable: {', '.join(SWEEPABLE)}")
        typ = SWEEPABLE[name]
        try:
            out[name] = [typ(v) for v in vals.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"{name} takes {typ.__name__} values, got {vals!r}") from None
    return out


def _sweep_command(ctx, no_record):
    """The invocation rebuilt from the parsed options (stored with the records)."""
    def values(opt):
        return lambda v: [a for n, xs in v.items()
                          for a in (opt, f"{n}=" + ",".join(_text(x) for x in xs))]
    skip = ("debug", "as_json") + (("out",) if no_record else ())
    return _command_line(ctx, unparse={"params": values("--param"), "base": values("--base")},
                         skip=skip)


@bench.command()
@click.option("--model", default="fsnn_mlp", show_default=True, metavar="FILE|NAME")
@click.option("--dataset", metavar="NAME", help="Default: the model's data set.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--param", "params", multiple=True, callback=_parse_values, metavar="NAME=V1,V2",
              help="Values to sweep (repeatable); NAME in T, T_b, v_th, kappa, dropout.  "
                   "Default: T=10,20,50 T_b=25,50 v_th=0.5,2,4 kappa=10 dropout=0.2.")
@click.option("--base", "base", multiple=True, callback=_parse_values, metavar="NAME=V",
              help="Baseline value (repeatable); default: the model's own.")
@click.option("--grid", is_flag=True, help="Every combination instead of one parameter at a time.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True,
              help="Training epochs per point.")
@click.option("--max-train", type=click.IntRange(min=1), help="Use the first N training samples.")
@click.option("--max-test", type=click.IntRange(min=1), help="Use the first N test samples.")
@click.option("--seed", type=click.IntRange(min=0, max=SEED_MAX), default=0, show_default=True)
@click.option("--reps", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed repetitions of each forward phase.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Numba threads (engine) and BLAS threads (dense baseline).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("sparsity.jsonl"), show_default=True,
              help="JSON-lines file the records are appended to (atomically).")
@click.option("--no-record", is_flag=True, help="Do not write JSON lines.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write sparsity.png (accuracy vs ops, wall time vs activity) to this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the points as JSON.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run one task per point on a Dask cluster (tcp://host:8786); "
                   "needs neurosim-events[dask].  See docs/distributed.md.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Run the points on a local Dask cluster of N single-threaded workers; "
                   "needs neurosim-events[dask].")
@_debug
@click.pass_context
def sparsity(ctx, model, dataset, data_dir, params, base, grid, epochs, max_train, max_test,
             seed, reps, threads, out, no_record, plot_dir, as_json, scheduler, workers, debug):
    """Sweep training parameters: accuracy vs operations, event-driven vs dense time."""
    import json
    from .experiments import sparsity as S
    command = _sweep_command(ctx, no_record)
    report = lambda msg: click.echo(f"[neurosim] {msg}", err=True)
    if scheduler is not None and workers is not None:
        raise click.UsageError("give at most one of --scheduler and --workers")
    if scheduler is not None or workers is not None:
        from .experiments import dask_sweep
        if not dask_sweep.available():
            raise BadInput("--scheduler / --workers need Dask's distributed scheduler; "
                           f"install the extra: {dask_sweep.EXTRA_HINT}")
    with _errors(debug):
        if plot_dir is not None:
            from .ops.plots import _figure
            _figure()                                  # fail before training without matplotlib
        base = {k: v[-1] for k, v in base.items()}
        r = S.sweep(model, dataset, params=params or None, base=base or None, grid=grid,
                    epochs=epochs, max_train=max_train, max_test=max_test, seed=seed, reps=reps,
                    threads=threads, out=None if no_record else out, data_dir=data_dir,
                    report=report, command=command, scheduler=scheduler, workers=workers)
        written = S.plot_sweep(r, plot_dir) if plot_dir is not None else None
    if as_json:
        click.echo(json.dumps(dict(points=r["points"], crossover=r["crossover"],
                                   sweep=r["sweep"], model=r["model"]), indent=2))
    else:
        click.echo(S.format_sweep(r))
    if r["out"] is not None:
        click.echo(f"[neurosim] appended {len(r['records'])} records to {r['out']}", err=True)
    if written is not None:
        click.echo(f"[neurosim] wrote {written}", err=True)
