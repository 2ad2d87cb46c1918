"""Ctrl-C while the command line starts: one line, no traceback.

Importing neurosim (numpy, numba, h5py, the kernels) takes about a second; a SIGINT or
SIGTERM in that window used to print a 26-48-line traceback from somewhere inside an
import.  When neurosim runs as the command line (``neurosim ...`` or ``python -m
neurosim...``), :func:`install` (called first thing by ``neurosim/__init__.py``) makes
both signals print one line and end the process with 128 + the signal number; nothing has
been written yet.  The command group calls :func:`end` before a command runs, and
``train`` / ``simulate`` then install their own handling (:mod:`neurosim._interrupt`).

Only ``os``, ``signal`` and ``sys`` are imported here, so the window this leaves open is
the interpreter's own start-up.
"""
import os
import signal
import sys

_saved = {}


def is_command_line(argv=None, orig_argv=None):
    """Whether this process is the neurosim command line: the console script ``neurosim``
    or ``python -m neurosim.cli`` / ``python -m neurosim``."""
    argv = sys.argv if argv is None else argv
    orig = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(argv[0]) == "neurosim":
        return True
    if "-m" in orig[:-1]:
        return orig[orig.index("-m") + 1] in ("neurosim", "neurosim.cli")
    return False


def _handler(signum, frame):
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    try:
        os.write(2, f"[neurosim] interrupted by {name} while starting; nothing was "
                    "written\n".encode())
    finally:
        os._exit(128 + signum)


def install():
    """One line and exit 128 + signal on SIGINT / SIGTERM until :func:`end`."""
    if _saved:
        return
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            _saved[s] = signal.signal(s, _handler)
        except (ValueError, OSError):      # not the main thread, or not allowed
            pass


def end():
    """Put back the handlers :func:`install` replaced."""
    while _saved:
        s, h = _saved.popitem()
        if signal.getsignal(s) is _handler:
            signal.signal(s, h if h is not None else signal.SIG_DFL)
