"""Test hook: pause a process at a named point so that a test can kill or signal it there.

**For tests only.**  Crash tests (``tests/test_reliability.py``) need to kill a real
``neurosim train`` process at an exact moment, for example between writing a checkpoint's
temporary file and renaming it.  With the environment variable ::

    NEUROSIM_TEST_PAUSE="<point>:<k>:<marker file>"

the ``k``-th time (1-based) the process reaches ``<point>`` it creates ``<marker file>``
and waits until a file ``<marker file>.go`` appears (or 120 seconds pass), then goes on.
The test waits for the marker, then kills the process (SIGKILL) or signals it (SIGINT)
and creates ``.go``.  Points:

``startup``
    at the start of ``import neurosim`` in a command-line process, after the start-up
    signal handlers are installed (:mod:`neurosim._startup`);
``batch``
    after a training batch's weight update (:func:`neurosim.training.trainer.train`);
``phase``
    before a phase kernel runs (:func:`neurosim.engine._execute`; a signal sent during
    the pause is seen by the kernel's first stop-word check);
``h5-fill``
    inside an atomic HDF5 write, after the file was built in memory and half of it
    written to the temporary file (the temporary file is incomplete on disk);
``h5-rename``
    inside an atomic HDF5 write, after the temporary file is complete and fsync'ed and
    before it is renamed over the destination;
``sweep-point``
    at the start of a sparsity-sweep point (:func:`neurosim.experiments.sparsity.run_point`; on a
    Dask worker: the test kills that worker).

Without the variable :func:`pause` returns at once (one dictionary look-up).
"""
import os
import time

ENV = "NEUROSIM_TEST_PAUSE"
#: longest wait for the ``.go`` file, seconds
TIMEOUT_S = 120.0

_counts = {}


def pause(point):
    """Pause here if ``$NEUROSIM_TEST_PAUSE`` names this point and its count is reached."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, k, marker = spec.split(":", 2)
    if want != point:
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != int(k):
        return
    with open(marker, "w") as fh:
        fh.write(f"{os.getpid()} {point} {k}\n")
    t_end = time.monotonic() + TIMEOUT_S
    while time.monotonic() < t_end and not os.path.exists(marker + ".go"):
        time.sleep(0.02)
