"""SIGINT / SIGTERM stop a run within a step, anywhere (neurosim/_interrupt.py,
docs/reliability.md "Ctrl-C and SIGTERM").

Real processes get real signals: inside a phase of ``T = 10**8`` steps (the kernel reads
a stop word before every step), while the kernels compile, and while neurosim is being
imported.  The waits have generous limits (``HANG_S``) that only guard against a hang;
they are not timing claims.  In-process tests send the signal to this process while a
phase kernel runs in the main thread (1 thread: the watcher thread sets the stop word)
or on pool threads (2 threads: the Python handler does).
"""
import contextlib
import faulthandler
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import neurosim as ns
from neurosim import _interrupt
from neurosim._interrupt import Interrupted

#: seconds after which a process (or this one) is taken to hang: a guard, not a claim
HANG_S = 90
#: longest wait for a process to reach the point a test signals it at (a first run may
#: compile the kernels on a busy machine)
START_S = 600
LONG = 100_000_000
SIM = ["simulate", "--model", "fsnn_mlp", "--input", "digits", "--n-samples", "1",
       "--threads", "1"]


def _env(**extra):
    env = dict(os.environ)
    for k in ("NEUROSIM_TEST_PAUSE", "NEUROSIM_PROGRESS", "NEUROSIM_NO_CACHE"):
        env.pop(k, None)
    env["NEUROSIM_MAX_STEPS"] = str(LONG)      # the long phases are above the default cap
    env.update(extra)
    return env


class _Proc:
    """A ``neurosim`` process whose stderr lines are collected as they come."""

    def __init__(self, args, cwd, env):
        self.p = subprocess.Popen([sys.executable, "-m", "neurosim.cli", *args], cwd=cwd,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern):
        t_end = time.monotonic() + START_S
        while not any(pattern in l for l in self.lines):
            assert self.p.poll() is None, f"ended before {pattern!r}: {self.lines}"
            assert time.monotonic() < t_end, f"no {pattern!r} in {START_S} s: {self.lines}"
            time.sleep(0.05)

    def stop(self, sig):
        """Send ``sig``; the exit code (the process is killed if it hangs)."""
        self.p.send_signal(sig)
        try:
            self.p.wait(timeout=HANG_S)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            pytest.fail(f"still running {HANG_S} s after {signal.Signals(sig).name}: "
                        f"{self.lines}")
        self.t.join(10)
        self.p.stdout.close()
        return self.p.returncode


def _pause_env(tmp_path, point, k=1, **extra):
    marker = tmp_path.parent / f"{tmp_path.name}.{point}.marker"
    for p in (marker, marker.with_name(marker.name + ".go")):
        if p.exists():
            p.unlink()
    return marker, _env(NEUROSIM_TEST_PAUSE=f"{point}:{k}:{marker}", **extra)


def _wait_marker(proc, marker):
    t_end = time.monotonic() + START_S
    while not marker.exists():
        assert proc.p.poll() is None, f"ended before pausing: {proc.lines}"
        assert time.monotonic() < t_end, "never reached the pause point"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """The simulate kernels in the on-disk cache: the processes below run them at once."""
    d = tmp_path_factory.mktemp("warm")
    r = subprocess.run([sys.executable, "-m", "neurosim.cli", *SIM, "--steps", "3", "--out",
                        "w.h5"], cwd=d, env=_env(), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr


# -- inside a phase ----------------------------------------------------------------------------
def test_simulate_sigint_inside_a_long_phase_with_progress(tmp_path, warm):
    """10^8 steps; once the progress line shows the kernel running, SIGINT: one line,
    exit 130, nothing left in the folder (no output, temporary or lock file)."""
    p = _Proc([*SIM, "--steps", str(LONG), "--out", "s.h5"], tmp_path,
              _env(NEUROSIM_PROGRESS="1"))
    p.wait_for("forward phase: ")
    prog = next(l for l in p.lines if "forward phase: " in l)
    assert re.fullmatch(r"\[neurosim\] forward phase: \d+\.\d % \([\d,]+ of 100,000,000 "
                        r"sample-steps\) after \d+ s(, about .+ left)?", prog), prog
    assert p.stop(signal.SIGINT) == 130
    assert [l for l in p.lines if "interrupted" in l] == [
        "[neurosim] interrupted by SIGINT: stopped before the run file was written; nothing "
        "was written"]
    assert p.lines[-1].startswith("[neurosim] interrupted by SIGINT")
    assert not any("Traceback" in l for l in p.lines)
    assert sorted(os.listdir(tmp_path)) == []


def test_simulate_sigterm_inside_a_long_phase_is_quiet_without_a_terminal(tmp_path, warm):
    """SIGTERM 3 s into the phase: exit 143, one line; stderr is a pipe and progress was
    not asked for, so no progress line."""
    marker, env = _pause_env(tmp_path, "phase")
    p = _Proc([*SIM, "--steps", str(LONG), "--out", "s.h5"], tmp_path, env)
    _wait_marker(p, marker)
    marker.with_name(marker.name + ".go").write_text("")
    time.sleep(3.0)                       # the kernel runs (from the cache: no compile)
    assert p.p.poll() is None
    assert p.stop(signal.SIGTERM) == 143
    assert p.lines[-1] == ("[neurosim] interrupted by SIGTERM: stopped before the run file "
                           "was written; nothing was written")
    assert not any("phase:" in l or "Traceback" in l for l in p.lines), p.lines
    assert sorted(os.listdir(tmp_path)) == []


def test_train_sigterm_inside_a_long_first_phase(tmp_path, warm):
    """Training with T = 10^8: SIGTERM inside the first forward phase, before any batch was
    trained: exit 143, one line, nothing written."""
    p = _Proc(["train", "--model", "fsnn_mlp", "--max-train", "16", "--max-test", "16",
               "--batch-size", "16", "--epochs", "1", "--tf", str(LONG), "--threads", "1",
               "--out", "t.h5"], tmp_path, _env(NEUROSIM_PROGRESS="1"))
    p.wait_for("forward phase: ")
    assert p.stop(signal.SIGTERM) == 143
    assert p.lines[-1] == ("[neurosim] interrupted by SIGTERM: stopped in the first batch, "
                           "nothing was written")
    assert not any("Traceback" in l for l in p.lines)
    assert sorted(os.listdir(tmp_path)) == []


# -- while compiling, while starting -------------------------------------------------------
@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing compiles")
def test_sigint_while_compiling_ends_at_once(tmp_path):
    """NEUROSIM_NO_CACHE=1: the phase kernel compiles (30-60 s); SIGINT one second into
    it ends the process with one line, exit 130, nothing left."""
    marker, env = _pause_env(tmp_path, "phase", NEUROSIM_NO_CACHE="1")
    p = _Proc([*SIM, "--steps", "5", "--out", "s.h5"], tmp_path, env)
    _wait_marker(p, marker)
    marker.with_name(marker.name + ".go").write_text("")
    time.sleep(1.0)
    assert p.p.poll() is None
    assert p.stop(signal.SIGINT) == 130
    assert p.lines[-1] == ("[neurosim] interrupted by SIGINT while compiling the kernels; "
                           "nothing was written")
    assert not any("Traceback" in l for l in p.lines)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_starting_is_one_line(tmp_path, sig, code):
    """A signal while neurosim is being imported (before any command runs)."""
    marker, env = _pause_env(tmp_path, "startup")
    p = _Proc([*SIM, "--steps", "5", "--out", "s.h5"], tmp_path, env)
    _wait_marker(p, marker)
    assert p.stop(sig) == code
    assert p.lines == [f"[neurosim] interrupted by {signal.Signals(sig).name} while starting; "
                       "nothing was written"]


def test_only_the_command_line_installs_the_start_up_handlers():
    from neurosim._startup import is_command_line
    assert is_command_line(["/usr/bin/neurosim"], ["python", "/usr/bin/neurosim", "train"])
    assert is_command_line(["-m"], ["python", "-m", "neurosim.cli", "train"])
    assert not is_command_line(["-m"], ["python", "-m", "pytest"])
    assert not is_command_line(["x.py"], ["python", "x.py"])
    from neurosim import _startup
    assert signal.getsignal(signal.SIGINT) is not _startup._handler     # not under pytest


# -- in this process ---------------------------------------------------------------------------
def _lif_net():
    net = ns.Network()
    net.add_population("p", 40, ns.LIF())
    net.add_population("q", 30, ns.LIF())
    net.add_projection("w", "p", "q", ns.Dense(np.full((40, 30), 0.05)))
    return net


def _cuba_net():
    net = ns.Network(dtype=np.float64)
    net.add_population("P", 64, ns.CubaLIF(v_rest=0.625, v_th=0.5, v_reset=0.0, tau_mem=10.0,
                                          tau_syn=(5.0,), t_ref=2.0, dt=1.0))
    rng = np.random.default_rng(0)
    pre, post = np.nonzero(rng.random((64, 64)) < 0.1)
    net.add_projection("E", "P", "P", ns.Sparse.from_edges(pre, post, np.full(pre.size, 0.01),
                                                           pre_shape=64, post_shape=64,
                                                           delay=1))
    return net


@contextlib.contextmanager
def hang_guard():
    """Ends this process (with the stacks) if the block hangs: a stop that never comes."""
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.parametrize("kind,threads", [("lif", 1), ("lif", 2), ("cuba", 1)])
def test_library_phase_stops_on_a_signal(kind, threads, monkeypatch):
    """A phase of 10^9 steps stops with :class:`Interrupted` half a second after a SIGINT
    to this process, in the sample-parallel kernel (1 thread: the kernel runs in the main
    thread; 2: on pool threads) and in the recurrent CubaLIF runner; the handlers and the
    stop word are restored afterwards, and the next run is complete."""
    net = _lif_net() if kind == "lif" else _cuba_net()
    kw = dict(currents={"p": np.full((4, 40), 0.3)}) if kind == "lif" else {}
    ns.run_forward(net, 3, n_threads=threads, **kw)              # compiled or loaded here
    monkeypatch.setattr("neurosim.config.MAX_STEPS", 10 ** 9)       # above the default cap
    before = signal.getsignal(signal.SIGINT)
    with _interrupt.stop_on_signals() as stop, hang_guard():
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(Interrupted) as ei:
            ns.run_forward(net, 10 ** 9, n_threads=threads, **kw)
    assert ei.value.signum == signal.SIGINT and ei.value.exit_code == 130 and stop()
    assert signal.getsignal(signal.SIGINT) is before and _interrupt.STOP[0] == 0
    a = ns.run_forward(net, 20, n_threads=threads, **kw)
    b = ns.run_forward(net, 20, n_threads=threads, **kw)
    for name in a.counts:
        np.testing.assert_array_equal(a.counts[name], b.counts[name])


def test_stop_before_a_phase_raises_before_running_it():
    """A stop requested between phases (the stop word already set) raises at the next
    phase, before its kernel runs."""
    net = _lif_net()
    with _interrupt.stop_on_signals():
        _interrupt.request_stop(signal.SIGTERM)
        with pytest.raises(Interrupted, match="interrupted by SIGTERM"):
            ns.run_forward(net, 5, currents={"p": np.full((1, 40), 0.3)})
    assert _interrupt.STOP[0] == 0


def test_progress_lines_for_a_long_phase(monkeypatch):
    """``show_progress`` reports a phase that runs longer than ``after`` seconds; a short one
    says nothing.  The counters do not change the results (the fingerprint checks it)."""
    lines = []
    net = _lif_net()
    kw = dict(currents={"p": np.full((2, 40), 0.3)}, n_threads=1)
    ns.run_forward(net, 3, **kw)
    monkeypatch.setattr("neurosim.config.MAX_STEPS", 10 ** 9)   # above the default cap
    _interrupt.show_progress(lines.append, after=0.3, every=0.3)
    try:
        ns.run_forward(net, 5, **kw)
        assert lines == []
        with _interrupt.stop_on_signals(), hang_guard():
            threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            with pytest.raises(Interrupted):
                ns.run_forward(net, 10 ** 9, **kw)
    finally:
        _interrupt.show_progress(None)
    assert lines and all(re.fullmatch(r"forward phase: \d+\.\d % \([\d,]+ of 2,000,000,000 "
                                      r"sample-steps\) after \d+ s(, about .+ left)?", l)
                         for l in lines), lines


def test_progress_is_shown_on_a_terminal_or_when_asked(monkeypatch):
    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty
    monkeypatch.delenv("NEUROSIM_PROGRESS", raising=False)
    assert _interrupt.progress_wanted(Tty(True)) and not _interrupt.progress_wanted(Tty(False))
    monkeypatch.setenv("NEUROSIM_PROGRESS", "1")
    assert _interrupt.progress_wanted(Tty(False))
    monkeypatch.setenv("NEUROSIM_PROGRESS", "0")
    assert not _interrupt.progress_wanted(Tty(True))
