"""What the command-line modules share: exit-code mapping, the recorded command line and
the ``--debug`` option (:mod:`neurosim.cli`, :mod:`neurosim.cli_ops`)."""
import contextlib
import shlex
import traceback

import click

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
        raise BadInput(_one_line(getattr(e, "cli_message", e))) from e
    except Exception as e:
        if debug:
            traceback.print_exc()
        raise RuntimeFailure(f"runtime failure: {type(e).__name__}: {_one_line(e)}"
                             + ("" if debug else " (run with --debug for the traceback)")) from e


def _text(v):
    """An option value as the text that parses back to it (floats: shortest round trip)."""
    return repr(v) if isinstance(v, float) else str(v)


def _command_line(ctx, unparse=None, skip=("debug",)):
    """The invocation as a valid command line, rebuilt from the parsed options.

    Stored as the ``command`` attribute of every run file (and with the sparsity
    records).  Every option with a value is written under its own long name, defaults
    included (``--seed 0``; those given come first, as typed), so the line re-runs the same
    computation even if a default changes; ``shlex.join`` quotes it for a POSIX shell.  Flags appear when set; ``--force``
    only when it was given, so that pasting a recorded command never overwrites a file
    unasked.  ``unparse`` maps a parameter name to a function returning its arguments
    (values a callback transformed); parameters in ``skip`` are left out."""
    unparse = unparse or {}
    names, c = [], ctx
    while c.parent is not None:
        names.insert(0, c.info_name)
        c = c.parent
    args = ["neurosim"] + names
    params = {p.name: p for p in ctx.command.params}
    for name, v in ctx.params.items():          # click's order: the options given first
        param = params.get(name)
        if param is None or name in skip:
            continue
        if name in unparse:
            args += unparse[name](v)
            continue
        if isinstance(param, click.Argument):
            args += [_text(x) for x in v] if param.multiple else [_text(v)]
            continue
        opt = next((o for o in param.opts if o.startswith("--")), param.opts[0])
        if getattr(param, "is_flag", False):
            if v is True:
                args.append(opt)
        elif v is None:
            continue
        elif param.multiple:
            for x in v:
                args += [opt, _text(x)]
        else:
            args += [opt, _text(v)]
    return shlex.join(args)


_debug = click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")


def nir_import_options(f):
    """``--dt`` and the NIR import options (``docs/nir.md``) of ``simulate``, ``info`` and
    ``ops``: the command receives ``dt`` and ``nir_options`` (a dict for
    :func:`neurosim.io.sources.open_network`; None values mean from_nir's defaults)."""
    import functools
    opts = [
        click.option("--dt", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
                     help="Time step of a .nir model, in the file's time unit (NIR: seconds).  "
                          "Default: the dt of a neurosim export, else 0.001; a file that "
                          "matches another exporter's convention needs it.  See docs/nir.md."),
        click.option("--leak-integration", type=click.Choice(["exact", "euler"]),
                     help=".nir: leak per step exp(-dt/tau) (default) or 1 - dt/tau (forward "
                          "Euler: snnTorch, Norse, SpikingJelly).  Also CubaLIF."),
        click.option("--threshold", type=click.Choice(["strict", "inclusive"]),
                     help=".nir: fire on v > v_threshold (NIR, default) or v >= v_threshold."),
        click.option("--input-kind", type=click.Choice(["spikes", "analog"]),
                     help=".nir: Input nodes take 0/1 spikes (default) or analog values."),
        click.option("--if-gain", type=click.Choice(["per-step", "continuous"]),
                     help=".nir: IF input gain r (default) or r*dt (SpikingJelly's r = 1/dt)."),
        click.option("--lif-gain", type=click.Choice(["nir", "one-minus-leak"]),
                     help=".nir: LIF input gain r*dt/tau (default) or r*(1 - leak) (sinabs)."),
    ]

    @functools.wraps(f)
    def wrapper(*args, **kw):
        kw["nir_options"] = {k: kw.pop(k) for k in ("leak_integration", "threshold",
                                                      "input_kind", "if_gain", "lif_gain")}
        return f(*args, **kw)
    for o in reversed(opts):
        wrapper = o(wrapper)
    return wrapper


def nir_notes(net, echo):
    """Print the NIR import notes of ``net`` (the dt used and why, exporter conventions)
    as ``[neurosim] NIR: ...`` lines through ``echo``."""
    for line in ((getattr(net, "metadata", None) or {}).get("nir") or {}).get("notes", ()):
        echo(f"[neurosim] NIR: {line}")
