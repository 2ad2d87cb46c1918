"""Command line: ``neurosim simulate``, ``info``, ``train`` and ``eval``.

A thin layer: each command parses options, calls one library function
(:func:`neurosim.simulate.simulate`, :func:`neurosim.models.model_info`) and prints.
Progress goes to stderr, results to stdout.

Exit codes: 0 success; 2 bad input (missing or malformed file, unknown model, unknown key,
wrong shape, NaN, existing output without ``--force``), printed as one line
``Error: ...``; 1 runtime failure.  ``--debug`` adds the Python traceback.
``neurosim train`` stopped by SIGINT (Ctrl-C) or SIGTERM writes a checkpoint and exits
130 or 143 (128 + the signal number); ``simulate`` writes nothing and exits the same way;
both stop within a step of the running phase (:mod:`neurosim._interrupt`); see
``docs/reliability.md``.
"""
import contextlib
import json
import shlex
import sys
from pathlib import Path

import click

import neurosim
from . import _interrupt
from ._cli_common import BadInput, _command_line, _debug, _errors, nir_import_options, nir_notes
from ._validate import SEED_MAX
from .cli_ops import bench, ops


def _milestones_text(v):
    return [] if v is None else ["--milestones", ",".join(str(e) for e in v)]


def _stored_command(path):
    """The ``command`` attribute of an existing run file, or None."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            c = f.attrs.get("command")
    except Exception:                      # the trainer reports what is wrong with the file
        return None
    c = c.decode() if isinstance(c, bytes) else c
    return c if isinstance(c, str) and c else None


def _resumed_command(ctx):
    """The command recorded for a resumed training run: the stored run's own command (a
    from-scratch run that gives the same file: resuming is bit-identical) with this
    invocation's ``--epochs``; this invocation's line when the stored one cannot be
    parsed (an API run, or a file of an older neurosim)."""
    own = _command_line(ctx, unparse={"milestones": _milestones_text})
    stored = _stored_command(ctx.params["out"])
    try:
        argv = shlex.split(stored or "")
    except ValueError:
        return own
    if argv[:2] != ["neurosim", "train"]:
        return own
    try:
        with ctx.command.make_context("train", argv[2:], parent=ctx.parent) as c:
            c.params["out"] = ctx.params["out"]          # the file's name now
            if ctx.params["epochs"] is not None:
                c.params["epochs"] = ctx.params["epochs"]
            return _command_line(c, unparse={"milestones": _milestones_text})
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        return own


def _milestones(text):
    """``"6,8"`` -> ``(6, 8)``; None stays None (the model's own milestones)."""
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not all(t.isdigit() and int(t) >= 1 for t in parts):
        raise click.BadParameter(f"expected comma-separated epochs >= 1 such as 6,8, got {text!r}")
    return tuple(int(t) for t in parts)


class _Main(click.Group):
    """The ``neurosim`` group: a malformed environment variable (``NEUROSIM_MAX_MODEL_MB=abc``)
    is one ``Error:`` line (exit 2) before anything else, ``--help`` included."""

    def parse_args(self, ctx, args):
        from . import config
        if config.ENV_ERRORS:
            raise BadInput(next(iter(config.ENV_ERRORS.values())))
        return super().parse_args(ctx, args)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(neurosim.__version__, prog_name="neurosim")
def main():
    """neurosim: event-driven spiking-network simulator with exact operation counts."""
    from . import _startup
    _startup.end()      # a command now runs: train / simulate handle signals themselves


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
@click.option("--seed", type=click.IntRange(min=0, max=SEED_MAX), default=0,
              show_default=True,
              help="Seed of weight initialisation and random gradients.")
@click.option("--threads", type=click.IntRange(min=1), help="Numba threads.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Run file to write (HDF5, written atomically).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@nir_import_options
@_debug
@click.pass_context
def simulate(ctx, model, input_, steps, n_samples, backward_steps, grad, record, seed, threads,
             out, force, dt, nir_options, debug):
    """Simulate a model on an input and write a run file.

    SIGINT (Ctrl-C) or SIGTERM stops within a step of the running phase: nothing is
    written, exit 130 (143)."""
    report = lambda msg: click.echo(f"[neurosim] {msg}", err=True)
    with _stoppable(report) as stop:
        from .simulate import format_summary, simulate as run
        try:
            with _errors(debug):
                sim = run(model, input_, steps, n_samples=n_samples,
                          backward_steps=backward_steps, grad=grad, record=record, seed=seed,
                          n_threads=threads, out=out, force=force,
                          command=_command_line(ctx), report=report, dt=dt,
                          nir_options=nir_options)
        except KeyboardInterrupt as e:
            report(f"{_stopped(e, stop)}: stopped before the run file was written; nothing "
                   "was written")
            ctx.exit(getattr(e, "exit_code", 128 + (stop.signum or 2)))
        if stop():          # the signal came while the file was being written
            report(f"interrupted by {_interrupt.signal_name(stop.signum)} after the run file "
                   f"{str(out)!r} was written (it is complete)")
            ctx.exit(128 + stop.signum)
    click.echo(format_summary(sim))


def _stopped(e, stop):
    """``interrupted by SIGINT`` for an interruption ``e`` under the request ``stop``."""
    s = getattr(e, "signum", None) or stop.signum or 2
    return f"interrupted by {_interrupt.signal_name(s)}"


@contextlib.contextmanager
def _stoppable(report, in_phase=True):
    """The signal handling of ``train`` and ``simulate`` (docs/reliability.md): SIGINT /
    SIGTERM stop within a step of the running phase, end the process with one line during
    a compilation; progress inside long phases on a terminal (``NEUROSIM_PROGRESS``)."""
    _interrupt.exit_while_compiling(in_phase)
    if _interrupt.progress_wanted(sys.stderr):
        _interrupt.show_progress(report)
    try:
        with _interrupt.stop_on_signals(in_phase=in_phase) as stop:
            yield stop
    finally:
        _interrupt.show_progress(None)
        _interrupt.exit_while_compiling(False)


@main.command()
@click.option("--model", required=True, metavar="FILE|NAME",
              help="Model file (.toml), model name, or run file (.h5).")
@click.option("--seed", type=click.IntRange(min=0, max=SEED_MAX), default=0,
              show_default=True,
              help="Seed of the weight initialisation (affects sparse synapse counts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@nir_import_options
@_debug
def info(model, seed, as_json, dt, nir_options, debug):
    """Describe a model: populations, projections, synapses, MACs and parameters."""
    from . import config, memory
    from .io.model_file import list_models
    from .io.sources import open_network
    from .models import format_model_info, model_info
    from .training.trainer import default_memory
    with _errors(debug):
        net = open_network(model, seed=seed, dt=dt, nir_options=nir_options)
        d = model_info(net)
        d["known_models"] = list_models()
        try:        # a malformed [training] table is reported by `train`, not here
            what, parts = default_memory(net)
            d["memory"] = dict(run=what, bytes=parts, limit=config.MAX_RUN_BYTES)
        except (TypeError, ValueError):
            what = None
        nir_meta = (net.metadata or {}).get("nir")
        if nir_meta is not None:
            d["nir"] = {k: nir_meta.get(k) for k in ("dt", "leak_integration", "threshold",
                                                      "input_kind", "if_gain", "lif_gain",
                                                      "conventions", "composed", "notes")}
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(format_model_info(d))
        if what is not None:
            click.echo(f"memory: {what} needs about {memory.describe(parts)} besides the data; "
                       f"a run may use {memory.human(config.MAX_RUN_BYTES)} "
                       "(NEUROSIM_MAX_RUN_MB)")
        nir_notes(net, lambda m: click.echo(m, err=True))


def _progress_printer():
    """A one-line progress bar on stderr: epoch, batch, loss, accuracy, ETA."""
    state = {"last": 0.0}

    def show(d):
        import time as _t
        now = _t.perf_counter()
        done = d["batch"] == d["n_batches"]
        if now - state["last"] < 0.2 and not done:
            return
        state["last"] = now
        width = 24
        fill = int(width * d["batch"] / d["n_batches"])
        eta = "   --" if d["eta_s"] != d["eta_s"] else f"{d['eta_s']:5.1f}s"
        click.echo(f"\repoch {d['epoch']}/{d['epochs']} [{'#' * fill}{'.' * (width - fill)}] "
                   f"batch {d['batch']}/{d['n_batches']}  loss {d['loss']:.4f}  "
                   f"acc {d['accuracy']:.4f}  ETA {eta} ", err=True,
                   nl=done)
    return show


@main.command()
@click.option("--model", default="fsnn_mlp", show_default=True, metavar="FILE|NAME",
              help="Model file (.toml; its [training] table gives the defaults), model name, run file (.h5: its trained network) or NIR file (.nir).")
@click.option("--dataset", metavar="NAME",
              help="digits | mnist | fashion-mnist | cifar10 | cifar100 (default: the model's).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder with the data set's files (fashion-mnist defaults to Debian's).")
@click.option("--epochs", type=click.IntRange(min=0))
@click.option("--batch-size", type=click.IntRange(min=1))
@click.option("--tf", "T", type=click.IntRange(min=1), help="Forward steps T.")
@click.option("--tb", "T_b", type=click.IntRange(min=1), help="Backward steps T_b.")
@click.option("--kappa", type=float, help="Loss scale κ.")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--milestones", metavar="E1,E2,...", callback=lambda c, p, v: _milestones(v),
              help="Epochs after which the learning rate is multiplied by the model's gamma "
                   "(default 0.1), e.g. 6,8; empty string: none.")
@click.option("--loss", type=click.Choice(["ce", "spikemax", "spikemax-sliding", "rate-mse"]))
@click.option("--seed", type=click.IntRange(min=0, max=SEED_MAX), default=0, show_default=True)
@click.option("--spide-quirks", is_flag=True, default=None,
              help="Reproduce the reference code: weight decay on κ-scaled gradients, "
                   "dropout masks left out of the weight gradients (docs/training.md).")
@click.option("--max-train", type=click.IntRange(min=1), help="Use the first N training samples.")
@click.option("--max-test", type=click.IntRange(min=1), help="Use the first N test samples.")
@click.option("--threads", type=click.IntRange(min=1), help="Numba threads.")
@click.option("--out", default="train-run.h5", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Training run file, rewritten atomically after every epoch (checkpoint).")
@click.option("--resume", is_flag=True, help="Continue the run stored in --out.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Also checkpoint within an epoch every SECONDS (long epochs).")
@click.option("--diagnose", type=click.IntRange(min=1), metavar="N",
              help="After every epoch, compare the spiking backward phase with the exact "
                   "linear solve on the first N training samples: per-layer backward firing, "
                   "β relative error, gradient cosine (stderr; last epoch stored in "
                   "/training/diagnostics; small models only).")
@click.option("--json", "as_json", is_flag=True, help="Last stdout line: a JSON summary.")
@click.option("--distributed", type=click.Choice(["mpi"]),
              help="Data-parallel over MPI ranks (mpirun -n P neurosim train --distributed mpi "
                   "...): every batch is sharded; results equal one process (docs/distributed.md). "
                   "Needs neurosim-events[mpi].")
@_debug
@click.pass_context
def train(ctx, model, dataset, data_dir, epochs, batch_size, T, T_b, kappa, lr, milestones, loss,
          seed,
          spide_quirks, max_train, max_test, threads, out, resume, force, checkpoint_every,
          diagnose, as_json, distributed, debug):
    """Train a model with SPIDE (both phases event-driven) and report accuracy and op counts.

    Ctrl-C (or SIGTERM) stops within a step of the running phase (abandoning its batch) or
    between batches, writes a checkpoint of the last completed batch and exits 130 (143);
    continue with --resume."""
    report = lambda msg: click.echo(f"[neurosim] {msg}", err=True)
    with _stoppable(report, in_phase=distributed is None):
        _train(ctx, report, model, dataset, data_dir, epochs, batch_size, T, T_b, kappa, lr,
               milestones, loss, seed, spide_quirks, max_train, max_test, threads, out, resume,
               force, checkpoint_every, diagnose, as_json, distributed, debug)


def _train(ctx, report, model, dataset, data_dir, epochs, batch_size, T, T_b, kappa, lr,
           milestones, loss, seed, spide_quirks, max_train, max_test, threads, out, resume,
           force, checkpoint_every, diagnose, as_json, distributed, debug):
    import warnings
    from click.core import ParameterSource
    from .training.health import NumericalError, RunawayActivityWarning
    from .training.trainer import ResumeError, TrainingInterrupted, train as run
    overrides = dict(epochs=epochs, batch_size=batch_size, T=T, T_b=T_b, kappa=kappa, lr=lr,
                     milestones=milestones, loss=loss, spide_quirks=spide_quirks)
    engine = None
    if distributed == "mpi":
        from .training import distributed as dist
        if not dist.available():
            raise BadInput("--distributed mpi needs mpi4py and an MPI library; install the "
                           f"extra: {dist.EXTRA_HINT}")
        engine = dist.ShardedEngine(dist.mpi_comm())
        if engine.rank != 0:          # the other ranks only simulate shards for rank 0
            with _errors(debug):
                engine.serve()
            return
        report(f"data parallel over {engine.size} MPI ranks")
    command = (_resumed_command(ctx) if resume else
               _command_line(ctx, unparse={"milestones": _milestones_text}))
    if resume:   # defaults must not count as a request to change the stored run
        given = lambda n: ctx.get_parameter_source(n) != ParameterSource.DEFAULT
        model, seed = (model if given("model") else None), (seed if given("seed") else None)
    try:
        with _errors(debug), warnings.catch_warnings():
            warnings.simplefilter("always", RunawayActivityWarning)
            warnings.showwarning = lambda m, *a, **k: report(f"warning: {m}")
            try:
                s = run(model, dataset, data_dir=data_dir, out=out, overrides=overrides,
                        resume=resume, force=force, seed=seed, max_train=max_train,
                        max_test=max_test, report=report, progress=_progress_printer(),
                        n_threads=threads, command=command,
                        checkpoint_every=checkpoint_every, engine=engine, diagnose=diagnose)
            except ResumeError as e:
                raise BadInput(_resume_message(e)) from e
            except NumericalError as e:      # the hint in the command's option names
                raise NumericalError(e.detail, what=e.what, name=e.name,
                                     hint=_DIVERGED_HINT) from e
    except TrainingInterrupted as e:
        more = (f"; continue with: neurosim train --out {e.out} --resume" if e.resumable
                else "")
        click.echo(f"\n[neurosim] {e}{more}", err=True)
        ctx.exit(e.exit_code)
    except KeyboardInterrupt as e:
        click.echo(f"\n[neurosim] interrupted; {str(out)!r} holds the last complete "
                   "checkpoint, if any", err=True)
        ctx.exit(getattr(e, "exit_code", 130))
    finally:
        if engine is not None:
            engine.stop()
    ops = s["ops_per_sample"]
    click.echo(f"model {s['model']} on {s['dataset']} ({s['n_train']} train / {s['n_test']} test "
               f"samples), {s['epochs']} epochs, seed {s['seed']}, {s['train_wall_s']:.1f} s")
    click.echo(f"test accuracy {s['test_accuracy']:.4f}  (train {s['train_accuracy']:.4f})")
    if ops:
        click.echo("ops per training sample, last epoch: forward {:.0f} synaptic events + {:.0f} "
                   "input MACs; backward {:.0f} (+1) / {:.0f} (-1) synaptic events; weight update "
                   "{:.0f} MACs".format(ops["fwd_synops"], ops["encoding_macs"], ops["bwd_synops_pos"],
                                        ops["bwd_synops_neg"], ops["update_macs"]))
    click.echo(f"run file: {s['out']}")
    if as_json:
        keep = {k: s[k] for k in ("test_accuracy", "train_accuracy", "epochs", "model", "dataset",
                                  "seed", "wall_s", "n_train", "n_test", "out")}
        keep["ops_per_sample"] = {"forward": ops.get("fwd_synops"),
                                  "input_encoding": ops.get("encoding_macs"),
                                  "backward_pos": ops.get("bwd_synops_pos"),
                                  "backward_neg": ops.get("bwd_synops_neg"),
                                  "weight_update": ops.get("update_macs")}
        click.echo(json.dumps(keep))


_DIVERGED_HINT = ("lower the learning rate (--lr), the loss scale (--kappa) or the initial "
                  "weights")
#: the train options whose name is not the library's parameter with ``--`` and dashes.
_TRAIN_OPTION = {"T": "--tf", "T_b": "--tb"}


def _resume_message(e):
    """A :class:`~neurosim.training.trainer.ResumeError` in the train command's words."""
    p = str(e.path)
    if e.problem == "missing":
        return f"--resume: {p!r} does not exist; start without --resume"
    if e.problem == "fewer_epochs":
        return (f"--resume: --epochs {e.given} is fewer than the {e.stored} epochs already "
                f"done in {p!r}")
    if e.problem == "differs":
        opt = _TRAIN_OPTION.get(e.option, "--" + e.option.replace("_", "-"))
        return (f"--resume: {opt} {e.given!r} differs from the run's {e.stored!r} stored in "
                f"{p!r}; a resumed run keeps its settings (only --epochs may change); drop "
                f"{opt} or start a new run with another --out")
    return "--" + str(e).replace("data folder", "--data-dir", 1)


@main.command(name="eval")
@click.option("--run", "run_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training run file written by `neurosim train`.")
@click.option("--dataset", metavar="NAME", help="Default: the data set it was trained on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-test", type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
@_debug
def eval_(run_file, dataset, data_dir, max_test, threads, as_json, debug):
    """Evaluate a trained run file on a test set (forward phase only)."""
    from .training.trainer import evaluate_run
    with _errors(debug):
        d = evaluate_run(run_file, dataset, data_dir=data_dir, max_test=max_test, n_threads=threads)
    if as_json:
        click.echo(json.dumps(d))
    else:
        click.echo(f"test accuracy {d['accuracy']:.4f} on {d['n_test']} samples of {d['dataset']}; "
                   f"forward per sample: {d['fwd_synops']:.0f} synaptic events, "
                   f"{d['encoding_macs']:.0f} input MACs, {d['fwd_spikes']:.0f} spikes")


@main.command(name="export-nir")
@click.option("--model", metavar="FILE|NAME", help="Model file (.toml) or model name.")
@click.option("--run", "run_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run file (.h5): its network with the stored (trained) weights.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="NIR file to write (written atomically).")
@click.option("--dt", type=click.FloatRange(min=0, min_open=True), default=1e-3,
              show_default=True, metavar="SECONDS", help="Time step the NIR time constants "
                                                          "are computed for (NIR: seconds).")
@click.option("--seed", type=click.IntRange(min=0, max=SEED_MAX), default=0,
              show_default=True,
              help="Seed of the weight initialisation (--model).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@_debug
def export_nir(model, run_file, out, dt, seed, force, debug):
    """Export a model or a run file's network to NIR (docs/nir.md: what is approximate)."""
    import warnings
    from .io.nir import NIRApproximationWarning
    from .simulate import export_nir as run
    with _errors(debug), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NIRApproximationWarning)
        path = run(model=model, run=run_file, out=out, dt=dt, seed=seed, force=force)
    for w in caught:
        if issubclass(w.category, NIRApproximationWarning):
            click.echo(f"[neurosim] warning: {w.message}", err=True)
    click.echo(f"wrote {path}")


@main.command(name="export-nir-data")
@click.argument("run_file", metavar="RUN.h5", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="NIR data file to write (nir.write_data; written atomically).")
@click.option("--dt", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Time step of the traces (default: the dt of a NIR import, else 1e-3, "
                   "as export-nir).")
@click.option("--events", is_flag=True,
              help="Event lists (EventData / ValuedEventData) instead of time grids.")
@click.option("--samples", type=click.IntRange(min=1), default=64, show_default=True,
              help="Training run files: training samples the spikes are recomputed on.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Training run files on file-based data sets: the data set's folder.")
@click.option("--threads", type=click.IntRange(min=1), help="Numba threads (re-simulation).")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@_debug
def export_nir_data(run_file, out, dt, events, samples, data_dir, threads, force, debug):
    """Write a run's spike trains as NIR data: forward spikes and the backward phase's
    signed ternary events, per population (the node names of `export-nir --run`;
    docs/nir.md, "Recorded activity").  Runs without recorded spikes are re-simulated."""
    from .ops.nir_data import export_nir_data as run
    with _errors(debug):
        path, dt_used, s = run(run_file, out=out, dt=dt, events=events, n_samples=samples,
                               data_dir=data_dir, n_threads=threads, force=force)
    click.echo(f"[neurosim] NIR data: dt = {dt_used:g}", err=True)
    bw = "" if s["backward_steps"] is None else f", backward {s['backward_steps']} steps"
    click.echo(f"wrote {path} ({len(s['nodes'])} nodes, {s['samples']} samples, forward "
               f"{s['steps']} steps{bw}, {'events' if s['events'] else 'time grids'})")


main.add_command(ops)
main.add_command(bench)


if __name__ == "__main__":  # pragma: no cover
    main()
