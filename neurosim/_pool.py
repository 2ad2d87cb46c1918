"""Sample-parallel kernel calls on Python threads (docs/decisions.md, 41).

The engine's phase kernel is compiled without ``prange``: a ``prange`` makes Numba compile
(and LLVM optimise) the whole engine once more for its outlined loop body, about a third
of the first-run compile time.  Its kernels release the GIL (``nogil=True``), so threads
started here run disjoint sample ranges truly in parallel.
"""
import threading
from concurrent.futures import ThreadPoolExecutor

_LOCK = threading.Lock()
_POOLS = {}      # thread count -> its pool (kept: a pool in use is never shut down)


def _pool(n):
    with _LOCK:
        if n not in _POOLS:
            _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix=f"neurosim{n}")
        return _POOLS[n]


def chunks(n, k):
    """``k`` contiguous ranges ``(a, b)`` covering ``0 .. n-1`` (sizes differ by at most 1)."""
    k = max(1, min(n, k))
    return [(c * n // k, (c + 1) * n // k) for c in range(k)]


def run_chunks(fn, n, n_threads, n_chunks):
    """Call ``fn(c, a, b)`` for each range ``c`` of :func:`chunks` (``n`` items in
    ``n_chunks`` ranges ``(a, b)``), on ``n_threads`` threads that take the next range
    as they finish (one thread: in order, in the calling thread).  The first exception
    raised by a call is re-raised after every call has ended."""
    parts = chunks(n, n_chunks)
    if n_threads <= 1 or len(parts) == 1:
        for c, (a, b) in enumerate(parts):
            fn(c, a, b)
        return
    futures = [_pool(n_threads).submit(fn, c, a, b) for c, (a, b) in enumerate(parts)]
    err = None
    for f in futures:
        try:
            f.result()
        except BaseException as e:     # wait for every range before raising
            err = err or e
    if err is not None:
        raise err
