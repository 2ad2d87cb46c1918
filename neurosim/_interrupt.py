"""Stopping within a step of SIGINT / SIGTERM, and progress inside long phases.

Python runs a signal handler only in the main thread, between two bytecodes.  A phase
kernel (:func:`neurosim.kernels.engine.run_phase`, :func:`neurosim.kernels.cuba.run_split`)
is one call of compiled code that may run for hours (``T = 10**9``), so a handler would
run only after it.  The kernels therefore read a *stop word*, :data:`STOP` (int64 [1]),
before every time step and return at once when it is nonzero (a signal number); the
engine then discards the phase and raises :class:`Interrupted`.

Who sets the stop word while a kernel runs: CPython's C-level signal handler writes the
signal number to the *wakeup fd* (:func:`signal.set_wakeup_fd`) at once, whatever the
main thread is doing.  Inside :func:`stop_on_signals` that fd is a pipe read by a watcher
thread (:func:`_watch`), which sets :data:`STOP`: it can take the GIL because the kernels
release it (``nogil``).  Between kernels the scope's Python handler sets it as well.  The
wakeup fd that was set before (asyncio's, for example) still receives every byte.

While Numba compiles a kernel (its first call: 30-60 s) no stop word is read and LLVM
holds the thread for seconds at a time.  Where the caller allows it
(:func:`exit_while_compiling`: the command line), a SIGINT / SIGTERM during a compilation
prints one line and ends the process with exit code 128 + signal (:func:`os._exit`):
nothing is written while a kernel compiles, and the output locks this process holds are
removed first (:data:`LOCK_FILES`).

Progress: every phase call counts its finished steps in an array the kernels write
(``done``); with :func:`show_progress` a thread reports a line every few seconds for a
phase that has run longer than about 2 s (:func:`phase`).  It reads the counters only,
so results never change.
"""
import contextlib
import os
import signal
import threading
import time

import numpy as np

#: the stop word the phase kernels read before every step: 0 runs on, a signal number stops.
STOP = np.zeros(1, np.int64)
#: the signals that stop a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: lock files of outputs this process holds (:func:`neurosim.io.atomic.output_lock`),
#: removed before the process ends on a signal during a compilation.
LOCK_FILES = set()


class Interrupted(KeyboardInterrupt):
    """A run was stopped by SIGINT / SIGTERM inside (or before) a phase; the phase's
    results were discarded.  ``signum``; ``exit_code`` is 128 + signum (130 for SIGINT,
    143 for SIGTERM).  A :class:`KeyboardInterrupt`, as Ctrl-C has always been."""

    def __init__(self, signum):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"interrupted by {signal_name(signum)}")

    def __str__(self):
        return self.args[0]


def signal_name(signum):
    """``SIGINT`` for 2, ...; ``signal N`` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def check():
    """Raise :class:`Interrupted` if a stop was requested (the stop word is set)."""
    s = int(STOP[0])
    if s:
        raise Interrupted(s)


class StopRequest:
    """What :func:`stop_on_signals` yields: true (called) once a signal asked to stop;
    ``signum`` is the first such signal."""
    signum = None

    def __call__(self):
        return self.signum is not None


class _State:
    lock = threading.Lock()
    r = w = -1               # the pipe the wakeup fd writes to
    forward = -1             # the wakeup fd replaced by ours (gets every byte too)
    users = 0                # scopes that installed the watcher
    request = None           # the outermost active StopRequest
    exit_compiling = False   # end the process on a signal during a compilation
    note = None              # callable: what the output holds, for that last line


_S = _State()


def _watch(r):
    """The watcher thread: signal numbers from the wakeup pipe set the stop word."""
    while True:
        try:
            data = os.read(r, 256)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        fwd = _S.forward
        if fwd >= 0:
            with contextlib.suppress(OSError):
                os.write(fwd, data)
        if _S.users:
            for s in data:
                if s in SIGNALS:
                    request_stop(s)


def request_stop(signum):
    """Set the stop word (the first signal wins); during a compilation, where allowed,
    end the process (module docstring)."""
    if STOP[0] == 0:
        STOP[0] = int(signum)
    if _S.exit_compiling:
        from . import kernels
        if kernels.compiling():
            _exit_now(int(signum))


def _exit_now(signum):
    note = "nothing was written"
    with contextlib.suppress(Exception):
        if _S.note is not None:
            note = _S.note()
    for p in list(LOCK_FILES):
        with contextlib.suppress(OSError):
            os.unlink(p)
    line = f"\n[neurosim] interrupted by {signal_name(signum)} while compiling the kernels; {note}\n"
    with contextlib.suppress(OSError):
        os.write(2, line.encode())
    os._exit(128 + signum)


def exit_while_compiling(enabled=True):
    """Let a SIGINT / SIGTERM during a Numba compilation end the process at once with one
    line (the command line; module docstring); so does a compilation that starts after
    a stop was requested."""
    from . import kernels
    _S.exit_compiling = bool(enabled)
    kernels._COMPILES.on_compile = _compile_started if enabled else None


def _compile_started():
    s = int(STOP[0])
    if s and _S.exit_compiling:
        _exit_now(s)


@contextlib.contextmanager
def compile_note(note):
    """Within the block, the last line of an exit during a compilation says ``note()``
    (what the output holds) instead of "nothing was written"."""
    prev, _S.note = _S.note, note
    try:
        yield
    finally:
        _S.note = prev


def _install():
    with _S.lock:
        if _S.users == 0:
            if _S.r < 0:
                r, w = os.pipe()
                os.set_blocking(w, False)
                _S.r, _S.w = r, w
                threading.Thread(target=_watch, args=(r,), name="neurosim-signals",
                                 daemon=True).start()
            _S.forward = signal.set_wakeup_fd(_S.w, warn_on_full_buffer=False)
        _S.users += 1


def _uninstall():
    with _S.lock:
        _S.users -= 1
        if _S.users == 0:
            signal.set_wakeup_fd(_S.forward, warn_on_full_buffer=False)
            _S.forward = -1


@contextlib.contextmanager
def stop_on_signals(enabled=True, in_phase=True):
    """Within the block SIGINT / SIGTERM only request a stop: the yielded
    :class:`StopRequest` becomes true, and (``in_phase``) the stop word is set, so that a
    running phase ends within one step and raises :class:`Interrupted`.  A second
    signal acts as it did before the block (the previous handler is put back on the
    first).  Only in the main thread (elsewhere, and with ``enabled=False``, signals are
    left alone); a nested block shares the outer one's request.  The stop word is
    cleared on entry and exit."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield StopRequest()
        return
    if _S.request is not None:
        yield _S.request
        return
    req = StopRequest()
    old = {}

    def handler(signum, frame):
        if req.signum is None:
            req.signum = signum
        prev = old.get(signum)
        signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
        if in_phase:
            request_stop(signum)

    STOP[0] = 0
    for s in SIGNALS:
        old[s] = signal.signal(s, handler)
    _S.request = req
    if in_phase:
        _install()
    try:
        yield req
    finally:
        if in_phase:
            _uninstall()
        _S.request = None
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        STOP[0] = 0


# -- progress inside long phases --------------------------------------------------------------
class _Progress:
    report = None            # callable(str), or None: no progress
    after = 2.0              # s a phase runs before its first line
    every = 5.0              # s between lines
    current = None           # (label, done array, total, start) of the running phase
    thread = None


_P = _Progress()


def show_progress(report, after=2.0, every=5.0):
    """Report the progress of phases that run longer than ``after`` seconds through
    ``report(line)``, every ``every`` seconds (None turns it off).  The command line turns
    it on when stderr is a terminal or ``NEUROSIM_PROGRESS=1``."""
    _P.report, _P.after, _P.every = report, float(after), float(every)
    if report is not None and _P.thread is None:
        _P.thread = threading.Thread(target=_progress_loop, name="neurosim-progress",
                                     daemon=True)
        _P.thread.start()


def progress_wanted(stream):
    """Whether the command line shows in-phase progress: ``NEUROSIM_PROGRESS=1`` (yes) or
    ``0`` (no), else when ``stream`` is a terminal."""
    v = os.environ.get("NEUROSIM_PROGRESS", "")
    if v in ("0", "1"):
        return v == "1"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def phase(done, total, label):
    """A phase of ``total`` steps runs in the block; ``done`` (int64) holds the finished
    steps in its elements (summed), written by the kernels."""
    if _P.report is None:
        yield
        return
    _P.current = (label, done, int(total), time.monotonic())
    try:
        yield
    finally:
        _P.current = None


def _progress_loop():
    last = None            # (phase, time of its last line)
    while True:
        time.sleep(0.25)
        cur, report = _P.current, _P.report
        if cur is None or report is None:
            continue
        label, done, total, t0 = cur
        now = time.monotonic()
        if now - t0 < _P.after or (last is not None and last[0] is cur
                                   and now - last[1] < _P.every):
            continue
        last = (cur, now)
        n = int(done.sum())
        el = now - t0
        left = f", about {_duration(el * (total - n) / n)} left" if n else ""
        with contextlib.suppress(Exception):
            report(f"{label}: {100.0 * n / max(total, 1):.1f} % ({n:,} of {total:,} "
                   f"sample-steps) after {_duration(el)}{left}")


def _duration(s):
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
