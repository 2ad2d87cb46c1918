"""Sparsity-sweep points on Dask workers (``neurosim bench sparsity --workers N`` /
``--scheduler ADDRESS``; optional extra ``neurosim-events[dask]``).

One task per point (:func:`neurosim.experiments.sparsity.run_point`, which trains in its own
temporary folder and returns the point's records); the client appends each point's
records to the JSON-lines file as it finishes, so an interrupted sweep keeps what is done.

* **Worker death.**  A task whose worker dies (killed, out of memory) is re-run on another
  worker by the scheduler (up to ``distributed.scheduler.allowed-failures`` times, 3 by
  default; then :class:`SweepError`).  Records are written by the client from the one
  result each task delivers, so a re-run point appears exactly once.  Exceptions raised
  by a point itself (bad input) are not retried: they stop the sweep.
* **Same records as a serial sweep** except the timing fields
  (:data:`neurosim.experiments.sparsity.TIMING_FIELDS`, :func:`~neurosim.experiments.sparsity.comparable`):
  each point is seeded by the sweep's seed only, never by where or when it runs.  The
  file's line order is the order in which points finish.
* **Numba's cache: compile once, then fan out.**  Before the points are submitted, one
  warm-up task (the first point on 8 training / 8 test samples, one epoch, one timing
  rep) runs alone and fills the on-disk cache (:data:`neurosim.kernels.CACHE_DIR`); the
  workers of a local cluster share that folder and then only read it.  Per-worker cache
  folders would be safe too, but every worker would compile every kernel again (tens of
  seconds each on a small machine).  On a multi-machine cluster without a shared cache
  folder each machine compiles on its first point; Numba writes every cache file under a
  temporary name and renames it, so concurrent writers cannot corrupt it (at worst an
  index entry is lost and compiled again).
* **Threads.**  Local workers run one task at a time, with ``NUMBA_NUM_THREADS`` (and the
  BLAS thread variables) set to the sweep's ``threads`` (default 1).  Workers of an
  external scheduler must be started the same way (``docs/distributed.md``).
"""
import logging
import os
import time

from .. import _testhooks
from .. import _validate as V

EXTRA_HINT = "pip install 'neurosim-events[dask]'  (or: pip install 'dask[distributed]')"


class SweepError(V.NeurosimError):
    """A sweep cannot run with these arguments (or its points were lost).  Defined here,
    below :mod:`neurosim.experiments.sparsity`, which raises it too, so that the sweep imports
    this module and not the other way round."""


def _dask():
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise SweepError(f"--workers / --scheduler need Dask's distributed scheduler, which is "
                         f"not installed ({e}); install the extra: {EXTRA_HINT}") from None
    return Client, LocalCluster, as_completed


def available():
    """Whether Dask's distributed scheduler can be imported."""
    try:
        _dask()
    except SweepError:
        return False
    return True


def _thread_env(threads):
    n = str(int(threads))
    return {"NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "MKL_NUM_THREADS": n}


def _pin_thread_env():
    """Numba re-reads ``NUMBA_NUM_THREADS`` from the environment whenever it compiles and
    refuses a value other than the one its threads started with.  A worker process can
    lose the variable its nanny set at start-up; Numba's default (the core count) then
    differs and the first compilation in the worker fails ("Cannot set
    NUMBA_NUM_THREADS to a different value once the threads have been launched").  Pin it
    to the count the worker's Numba started with."""
    from ..kernels import threads
    os.environ["NUMBA_NUM_THREADS"] = str(threads.max_threads())


def _warm_up(run_point, spec):
    """Compile every kernel a point uses (into the shared on-disk cache)."""
    _pin_thread_env()
    small = dict(spec, max_train=8, max_test=8, epochs=1, reps=1, command=None)
    run_point(small)
    return True


def _task(run_point, spec):
    _pin_thread_env()
    _testhooks.pause("sweep-point")
    return run_point(spec)


def _eta(done, total, elapsed):
    return elapsed / done * (total - done) if done else float("nan")


def map_points(specs, run_point, *, scheduler=None, workers=None, threads=1, report=None):
    """Run ``run_point`` (:func:`~neurosim.experiments.sparsity.run_point`, a module-level
    function the workers import) on every spec on Dask; yields
    ``(index, point, records)`` as points finish.  ``scheduler``: address of a running
    scheduler; ``workers``: start a :class:`distributed.LocalCluster` of that many
    single-threaded worker processes (closed at the end)."""
    say = report or (lambda msg: None)
    Client, LocalCluster, as_completed = _dask()
    from distributed.client import FutureCancelledError
    from distributed.scheduler import KilledWorker
    specs = list(specs)
    cluster = None
    if workers is not None:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, env=_thread_env(threads),
                               silence_logs=logging.ERROR)
        say(f"local Dask cluster: {workers} workers x 1 thread (NUMBA_NUM_THREADS={threads})")
    try:
        client = Client(cluster if cluster is not None else scheduler, timeout="60s")
    except OSError as e:
        if cluster is not None:
            cluster.close()
        raise SweepError(f"cannot reach the Dask scheduler at {scheduler!r}: {e}") from None
    t0 = time.perf_counter()
    try:
        if specs:
            say("warm-up: compiling the kernels once (Numba cache) before the points")
            client.submit(_warm_up, run_point, specs[0], pure=False).result()
        futures = {client.submit(_task, run_point, sp, pure=False,
                                 key=f"neurosim-point-{sp['sweep']}-{sp['index']}"): sp
                   for sp in specs}
        t1 = time.perf_counter()
        say(f"submitted {len(specs)} points (warm-up {t1 - t0:.1f} s)")
        for done, fut in enumerate(as_completed(futures), 1):
            sp = futures[fut]
            try:
                i, pt, recs = fut.result()
            except (KilledWorker, FutureCancelledError) as e:
                raise SweepError(f"point {sp['index'] + 1} ({sp['point']}) was lost: its "
                                 f"workers died repeatedly ({type(e).__name__}: {e}); the "
                                 f"records of the {done - 1} finished points are written") from None
            el = time.perf_counter() - t1
            say(f"[{done}/{len(specs)}] point {i + 1} done; {el:.1f} s elapsed, "
                f"ETA {_eta(done, len(specs), el):.1f} s")
            yield i, pt, recs
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
